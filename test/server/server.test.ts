/**
 * HTTP API, in-process with app.inject. The TestEngine decodes with the real decoder (so 415/422
 * come from the engine's own sniffing and limits) and replaces only the model.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import type { FastifyInstance } from 'fastify';
import { PneumoError } from '../../src/errors.ts';
import { buildApp, type AppOptions } from '../../src/server/app.ts';
import type { AnalysisResult } from '../../src/types.ts';
import { serve } from '../../src/server/start.ts';
import { grayDicom } from '../fixtures/make-dicom.ts';
import {
  fileUpload,
  fixtureServer,
  grayPng,
  LogCapture,
  multipart,
  noisePng,
  pixelBombPng,
  TestEngine,
} from '../fixtures/server-helpers.ts';

const png = grayPng(32, 32, 200);

function app(over: Partial<AppOptions> = {}, engine = new TestEngine()): { app: FastifyInstance; engine: TestEngine } {
  return { app: buildApp({ engine, urlAllowList: [], ...over }), engine };
}

async function post(a: FastifyInstance, body: { payload: Buffer | string; headers: Record<string, string> }, query = '') {
  return a.inject({ method: 'POST', url: `/api/predict${query}`, payload: body.payload, headers: body.headers });
}

const errorOf = (res: { json(): unknown }) => (res.json() as { error: { code: string; message: string } }).error;

describe('GET routes', () => {
  const { app: a } = app();
  afterAll(() => a.close());

  it('health is 200 and ready with the model named', async () => {
    const res = await a.inject('/api/health');
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ status: 'ok', ready: true, model: { name: 'test-engine', version: '9.9.9' } });
  });

  it('model card: no local paths, long arrays summarised, the rest intact', async () => {
    const res = await a.inject('/api/model');
    expect(res.statusCode).toBe(200);
    const card = res.json();
    expect(card.name).toBe('test-engine');
    expect(card.metrics.validation.auc).toBe(0.9);
    expect(card.limitations).toEqual(['Not a model.']);
    expect(card.gradcam.weights).toEqual({ omitted: true, length: 256 });
    expect(res.body).not.toContain('/secret/home');
    expect(card.cardPath).toBeUndefined();
  });

  it('OpenAPI document lists every route, with the query parameters the server validates', async () => {
    const res = await a.inject('/api/openapi.json');
    expect(res.statusCode).toBe(200);
    const doc = res.json();
    expect(doc.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.paths).sort()).toEqual(['/api/health', '/api/model', '/api/openapi.json', '/api/predict']);
    const params = doc.paths['/api/predict'].post.parameters.map((p: { name: string }) => p.name);
    expect(params).toEqual(['cam', 'colormap', 'alpha', 'threshold', 'force']);
    expect(Object.keys(doc.paths['/api/predict'].post.responses)).toEqual(
      expect.arrayContaining(['200', '400', '413', '415', '422', '503', '504']),
    );
  });

  it('/docs is an HTML page generated from the document', async () => {
    const res = await a.inject('/docs');
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/text\/html/);
    for (const s of ['/api/predict', '/api/health', '/api/model', 'colormap', 'Research and education tool, not a medical device.']) {
      expect(res.body).toContain(s);
    }
    expect(res.body).not.toMatch(/<script/);
  });

  it('serves the web page with the disclaimer and security headers', async () => {
    const res = await a.inject('/');
    expect(res.statusCode).toBe(200);
    expect(res.body).toContain('Research and education tool, not a medical device.');
    expect(res.headers['content-security-policy']).toMatch(/default-src 'none'/);
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    for (const asset of ['/app.js', '/style.css']) expect((await a.inject(asset)).statusCode).toBe(200);
  });

  it('404 for unknown routes, as JSON', async () => {
    for (const url of ['/api/nope', '/nope.html']) {
      const res = await a.inject(url);
      expect(res.statusCode, url).toBe(404);
      expect(errorOf(res).code).toBe('not_found');
    }
  });

  it('405 with Allow for a wrong method on an API address (GET /api/predict, PUT, OPTIONS, DELETE)', async () => {
    const cases: Array<[string, string, string]> = [
      ['GET', '/api/predict', 'POST'],
      ['PUT', '/api/predict?cam=false', 'POST'],
      ['OPTIONS', '/api/predict', 'POST'],
      ['DELETE', '/api/health', 'GET, HEAD'],
      ['POST', '/api/model', 'GET, HEAD'],
      ['PATCH', '/api/openapi.json', 'GET, HEAD'],
    ];
    for (const [method, url, allow] of cases) {
      const res = await a.inject({ method: method as 'GET', url });
      expect(res.statusCode, `${method} ${url}`).toBe(405);
      expect(res.headers.allow).toBe(allow);
      expect(errorOf(res).code).toBe('method_not_allowed');
    }
  });
});

describe('health and readiness', () => {
  it('503 while the model loads, 200 once loaded', async () => {
    let resolve!: (e: TestEngine) => void;
    const a = buildApp({ engine: new Promise<TestEngine>((r) => (resolve = r)) });
    const loading = await a.inject('/api/health');
    expect(loading.statusCode).toBe(503);
    expect(loading.json()).toMatchObject({ status: 'loading', ready: false });
    const predict = await post(a, fileUpload(png));
    expect(predict.statusCode).toBe(503);
    expect(predict.headers['retry-after']).toBeDefined();
    resolve(new TestEngine());
    await new Promise((r) => setTimeout(r, 0));
    expect((await a.inject('/api/health')).statusCode).toBe(200);
    await a.close();
  });

  it('503 failed when the model failed to load', async () => {
    const a = buildApp({ engine: Promise.reject(new Error('no model file')) });
    await new Promise((r) => setTimeout(r, 0));
    const res = await a.inject('/api/health');
    expect(res.statusCode).toBe(503);
    expect(res.json().status).toBe('failed');
    expect(res.body).not.toContain('no model file');
    expect((await a.inject('/api/model')).statusCode).toBe(503);
    await a.close();
  });
});

describe('POST /api/predict', () => {
  let a: FastifyInstance;
  let engine: TestEngine;
  beforeAll(() => {
    ({ app: a, engine } = app());
  });
  afterAll(() => a.close());

  it('200 with label, probability, threshold, model, image, timings, Grad-CAM and warnings', async () => {
    const res = await post(a, fileUpload(png));
    expect(res.statusCode).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    const body = res.json();
    expect(body).toMatchObject({
      label: 'PNEUMONIA',
      threshold: 0.5,
      model: { name: 'test-engine', version: '9.9.9' },
      image: { width: 32, height: 32, format: 'png' },
      warnings: [],
    });
    expect(body.probability).toBeGreaterThan(0.5);
    expect(body.gradcam).toMatch(/^data:image\/png;base64,iVBORw0KGgo/);
    expect(body.gradcam_map).toEqual({ width: 2, height: 2, data: [0, 0.25, 0.5, 1] });
    expect(body.timings_ms).toMatchObject({ decode: 1, total: 1 });
    expect(body.timings_ms.upload).toBeGreaterThanOrEqual(0);
    expect(body.timings_ms.server_total).toBeGreaterThanOrEqual(0);
    expect(engine.calls.at(-1)).toEqual({ bytes: png.length, opts: { cam: true } });
  });

  it('passes cam, colormap, alpha and threshold through; cam=false gives gradcam null', async () => {
    const res = await post(a, fileUpload(png), '?cam=false&colormap=viridis&alpha=0.3&threshold=0.95');
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ label: 'NORMAL', threshold: 0.95, gradcam: null, gradcam_map: null });
    expect(engine.calls.at(-1)?.opts).toEqual({ cam: false, colormap: 'viridis', alpha: 0.3, threshold: 0.95 });
  });

  it('reads DICOM (format from the bytes, whatever the name and type say)', async () => {
    const dcm = grayDicom(32, 32, [10, 200, 90, 30]);
    const res = await post(a, fileUpload(dcm, 'image.png', 'image/png'));
    expect(res.statusCode).toBe(200);
    expect(res.json().image.format).toBe('dicom');
  });

  it('passes through optional result fields (uncertainty, rejected, gate) when present', async () => {
    const { app: b, engine: e } = app();
    // shapes the types allow (this test once passed an uncertainty object, which AnalysisResult forbids)
    const gate = { ...(await e.analyse(png)).gate, score: 0.2, threshold: 0.5 };
    e.extra = { uncertainty: 0.3, uncertain: true, rejected: false, gate } satisfies Partial<AnalysisResult>;
    const res = await post(b, fileUpload(png));
    expect(res.json()).toMatchObject({ uncertainty: 0.3, uncertain: true, rejected: false, gate: { score: 0.2 } });
    await b.close();
  });

  it.each([
    ['?alpha=2', /alpha/],
    ['?alpha=abc', /alpha/],
    ['?threshold=-0.1', /threshold/],
    ['?colormap=rainbow', /colormap/],
    ['?cam=maybe', /cam/],
    ['?treshold=0.3', /additional|treshold/],
  ])('400 for a bad query %s', async (q, re) => {
    const res = await post(a, fileUpload(png), q);
    expect(res.statusCode).toBe(400);
    expect(errorOf(res).code).toBe('bad_request');
    expect(errorOf(res).message).toMatch(re);
  });

  it('400 for malformed bodies', async () => {
    const cases: Array<[string, { payload: string | Buffer; headers: Record<string, string> }]> = [
      ['bad JSON', { payload: '{"url": ', headers: { 'content-type': 'application/json' } }],
      ['JSON without url', { payload: '{"link":"https://example.org/x.png"}', headers: { 'content-type': 'application/json' } }],
      ['JSON url not a string', { payload: '{"url": 5}', headers: { 'content-type': 'application/json' } }],
      ['JSON array', { payload: '[]', headers: { 'content-type': 'application/json' } }],
      ['JSON url not a URL', { payload: '{"url":"not a url"}', headers: { 'content-type': 'application/json' } }],
      ['form without a file', multipart([{ name: 'note', data: 'hello' }])],
      ['file in another field', multipart([{ name: 'image', filename: 'a.png', contentType: 'image/png', data: png }])],
      ['empty file', fileUpload(Buffer.alloc(0))],
      ['no body at all', { payload: '', headers: {} }],
    ];
    for (const [what, body] of cases) {
      const res = await post(a, body);
      expect(res.statusCode, what).toBe(400);
      expect(errorOf(res).code, what).toBe('bad_request');
      expect(res.body, what).not.toMatch(/at .*\.ts:\d+/); // no stack trace
    }
  });

  it('415 for a body type that is neither multipart nor JSON', async () => {
    for (const type of ['text/plain', 'application/octet-stream', 'image/png']) {
      const res = await post(a, { payload: png, headers: { 'content-type': type } });
      expect(res.statusCode, type).toBe(415);
      expect(errorOf(res).code).toBe('unsupported_media_type');
    }
  });

  it('415 for bytes that are not an image, whatever the file name and Content-Type claim', async () => {
    const res = await post(a, fileUpload(Buffer.from('%PDF-1.4 this is not an x-ray at all'), 'chest.png', 'image/png'));
    expect(res.statusCode).toBe(415);
    expect(errorOf(res).code).toBe('unsupported_media_type');
  });

  it('422 for a truncated image and for a pixel bomb', async () => {
    const truncated = await post(a, fileUpload(png.subarray(0, Math.floor(png.length / 2))));
    expect(truncated.statusCode).toBe(422);
    expect(errorOf(truncated).code).toBe('damaged_image');
    const bomb = await post(a, fileUpload(pixelBombPng()));
    expect(bomb.statusCode).toBe(422);
    expect(errorOf(bomb).code).toBe('unusable_image');
  });

  it('413 above the upload limit, from Content-Length and while streaming', async () => {
    const { app: small } = app({ maxUploadBytes: 1000 });
    const big = noisePng(64, 64); // about 4 KB
    expect(big.length).toBeGreaterThan(1000);
    const streamed = await post(small, fileUpload(big));
    expect(streamed.statusCode).toBe(413);
    expect(errorOf(streamed)).toMatchObject({ code: 'payload_too_large', message: expect.stringMatching(/1000 bytes/) });
    const declared = await small.inject({
      method: 'POST',
      url: '/api/predict',
      headers: { ...fileUpload(png).headers, 'content-length': String(50 * 1024 * 1024) },
      payload: fileUpload(png).payload,
    });
    expect(declared.statusCode).toBe(413);
    expect(
      (
        await post(small, {
          payload: JSON.stringify({ url: 'https://example.org/' + 'a'.repeat(20_000) }),
          headers: { 'content-type': 'application/json' },
        })
      ).statusCode,
    ).toBe(413);
    await small.close();
  });

  it('500 with a generic message for unexpected engine errors; PneumoErrors keep their status', async () => {
    const logs = new LogCapture();
    const { app: b, engine: e } = app({ logger: { stream: logs } });
    e.failWith = new TypeError('secret internal detail xyz');
    const res = await post(b, fileUpload(png));
    expect(res.statusCode).toBe(500);
    expect(errorOf(res)).toEqual({ code: 'internal_error', message: expect.any(String) });
    expect(res.body).not.toContain('secret internal detail');
    expect(res.body).not.toContain('TypeError');
    expect(logs.text).toContain('secret internal detail xyz'); // logged server-side
    e.failWith = new PneumoError('not_a_chest_xray', 'This does not look like a chest X-ray.', { gate_score: 0.93 });
    const gated = await post(b, fileUpload(png));
    expect(gated.statusCode).toBe(422);
    expect(gated.json()).toEqual({
      error: { code: 'not_a_chest_xray', message: 'This does not look like a chest X-ray.', gate_score: 0.93 },
    });
    await b.close();
  });
});

describe('URL input', () => {
  it('refuses a URL to 127.0.0.1 (400 url_forbidden) without an allow-list', async () => {
    const srv = await fixtureServer(png);
    const { app: a, engine } = app();
    const res = await post(a, {
      payload: JSON.stringify({ url: `${srv.url}/image.png` }),
      headers: { 'content-type': 'application/json' },
    });
    expect(res.statusCode).toBe(400);
    expect(errorOf(res).code).toBe('url_forbidden');
    expect(srv.hits).toEqual([]);
    expect(engine.calls).toEqual([]);
    await a.close();
    await srv.close();
  });

  it('fetches from an allow-listed local server, following at most 3 redirects', async () => {
    const srv = await fixtureServer(png);
    const { app: a } = app({ urlAllowList: ['127.0.0.1/32'] });
    const send = (path: string) =>
      post(a, { payload: JSON.stringify({ url: `${srv.url}${path}` }), headers: { 'content-type': 'application/json' } });
    const ok = await send('/redirect/3');
    expect(ok.statusCode).toBe(200);
    expect(ok.json()).toMatchObject({ image: { width: 32, height: 32, format: 'png' } });
    expect(ok.json().timings_ms.fetch).toBeGreaterThanOrEqual(0);
    const tooMany = await send('/redirect/4');
    expect(tooMany.statusCode).toBe(502);
    expect(errorOf(tooMany).code).toBe('url_fetch_failed');
    const missing = await send('/missing');
    expect(missing.statusCode).toBe(502);
    await a.close();
    await srv.close();
  });
});

/** Waits (polling every 5 ms, at most 10 s) until cond() holds. */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 2000 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
}

describe('load, timeouts and shutdown', () => {
  it('503 busy with Retry-After when the slots and the queue are full', async () => {
    const { app: a, engine } = app({ maxConcurrent: 1, maxQueue: 1 });
    const release = engine.hold(); // the first analysis runs until all four requests have arrived
    let answered = 0;
    const pending = [0, 1, 2, 3].map(() => post(a, fileUpload(png)).finally(() => answered++));
    await until(() => answered === 2); // the two beyond the slot and the queue are refused at once
    release();
    const results = await Promise.all(pending);
    const codes = results.map((r) => r.statusCode).sort();
    expect(codes).toEqual([200, 200, 503, 503]);
    const busy = results.find((r) => r.statusCode === 503)!;
    expect(errorOf(busy).code).toBe('busy');
    expect(Number(busy.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(engine.maxActive).toBe(1);
    await a.close();
  });

  it('504 when the analysis takes longer than the request timeout; close() waits for it', async () => {
    const { app: a, engine } = app({ requestTimeoutMs: 100 });
    const release = engine.hold(); // the analysis does not finish before the test says so
    const t0 = Date.now();
    const res = await post(a, fileUpload(png));
    expect(res.statusCode).toBe(504);
    expect(errorOf(res).code).toBe('timeout');
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(engine.active).toBe(1); // still running: inference cannot be cancelled
    const closing = a.close(); // waits until the engine is idle, so it can be disposed safely
    release();
    await closing;
    expect(engine.active).toBe(0);
  });

  it('graceful shutdown: in-flight requests finish, new ones are refused', async () => {
    const engine = new TestEngine();
    const release = engine.hold();
    const running = await serve({ engine, port: 0, host: '127.0.0.1' });
    const { payload, headers } = fileUpload(png);
    const request = (agent?: http.Agent) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = http.request(`${running.url}/api/predict`, { method: 'POST', headers, agent }, (res) => {
          let body = '';
          res.on('data', (c) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('error', reject);
        req.end(payload);
      });
    const inFlight = request();
    // wait until the request is being analysed (polling: a loaded machine may take a while)
    for (let i = 0; i < 100 && engine.active === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(engine.active).toBe(1);
    const closing = running.close();
    await new Promise((r) => setTimeout(r, 20));
    const late = await request().then(
      (r) => r.status,
      (e: NodeJS.ErrnoException) => e.code,
    );
    expect(['ECONNREFUSED', 'ECONNRESET', 503]).toContain(late);
    release();
    const done = await inFlight;
    expect(done.status).toBe(200);
    expect(JSON.parse(done.body).label).toBeDefined();
    await closing;
    await running.closed;
    expect(engine.active).toBe(0);
  });

  it('serve() installs and removes signal handlers', async () => {
    const before = process.listenerCount('SIGTERM');
    const running = await serve({ engine: new TestEngine(), port: 0, host: '127.0.0.1', handleSignals: true });
    expect(process.listenerCount('SIGTERM')).toBe(before + 1);
    expect(process.listenerCount('SIGINT')).toBeGreaterThan(0);
    await running.close();
    expect(process.listenerCount('SIGTERM')).toBe(before);
  });
});

describe('logging', () => {
  it('never logs file names, image bytes, fetched URLs or DICOM tags', async () => {
    const logs = new LogCapture();
    const { app: a } = app({ logger: { stream: logs, level: 'trace' } });
    const name = 'DOE_JANE_MRN-987654_chest.png';
    const dcm = grayDicom(32, 32, [10, 200, 90, 30]); // carries DOE^JANE / PATIENT-ID-12345
    const results = [
      await post(a, fileUpload(png, name)),
      await post(a, fileUpload(dcm, name, 'application/dicom')),
      await post(a, fileUpload(Buffer.from('NOT-AN-IMAGE-PAYLOAD-4711'), name)),
      await post(a, fileUpload(png.subarray(0, 40), name)),
      await post(a, {
        payload: JSON.stringify({ url: 'http://10.0.0.1/PATIENT_SMITH_JOHN.dcm' }),
        headers: { 'content-type': 'application/json' },
      }),
    ];
    expect(results.map((r) => r.statusCode)).toEqual([200, 200, 415, 422, 400]);
    const text = logs.text;
    expect(logs.lines.length).toBeGreaterThan(5); // the logger is on
    for (const secret of [
      name,
      'DOE_JANE',
      'MRN-987654',
      'DOE^JANE',
      'PATIENT-ID-12345',
      'NOT-AN-IMAGE',
      'PATIENT_SMITH',
      '10.0.0.1',
      png.toString('base64').slice(0, 24),
    ]) {
      expect(text, secret).not.toContain(secret);
    }
    await a.close();
  });
});
