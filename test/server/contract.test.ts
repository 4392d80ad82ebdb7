/**
 * The HTTP contract has one owner (issue 12 item 2): the error table of src/errors.ts (code ->
 * status, message) and the OpenAPI document, whose schemas the server serialises its answers with.
 * Every answer here is validated against the document the server serves, and every answer's
 * status against the table: a second copy of a code, a status or a result field would fail here.
 */
import { Ajv } from 'ajv';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codesWithStatus, ERROR_CODES, ERRORS, PneumoError, statusesOf, type ErrorCode } from '../../src/errors.ts';
import { CHECK_NAMES } from '../../src/gate/image-checks.ts';
import { Engine } from '../../src/pipeline.ts';
import { buildApp, toPredictResponse } from '../../src/server/app.ts';
import { clientErrorHandler, FASTIFY_MESSAGES, mapError } from '../../src/server/errors.ts';
import { PREDICT_ERROR_STATUSES } from '../../src/server/openapi.ts';
import { writeTinyModel } from '../fixtures/make-onnx.ts';
import { colourPhotoPng, texturedGrayPng } from '../fixtures/non-cxr.ts';
import { fileUpload, noisePng } from '../fixtures/server-helpers.ts';

let engine: Engine;
let app: FastifyInstance;
let doc: any;
let ajv: Ajv;

beforeAll(async () => {
  const { cardPath } = writeTinyModel({ size: 32, channels: 4, stride: 4, ood: true, scope: true, members: 3 }, (c) => {
    c.gate = { output: 'ood', threshold: 100, intended_use: { output: 'scope', threshold: 0.5 } };
    c.uncertainty = { output: 'members', cutoff: 0.05 };
  });
  engine = await Engine.load({ card: cardPath, threads: 1 });
  app = buildApp({ engine, maxConcurrent: 1 });
  doc = (await app.inject('/api/openapi.json')).json();
  ajv = new Ajv({ strict: false, validateFormats: false, allErrors: true });
  for (const [name, schema] of Object.entries(doc.components.schemas)) ajv.addSchema(schema as object, `#/components/schemas/${name}`);
});

afterAll(async () => {
  await app?.close();
  await engine?.dispose();
});

/** The schema errors of `body` against the document's component `name` (empty: valid). */
function invalid(name: string, body: unknown): unknown[] {
  const validate = ajv.getSchema(`#/components/schemas/${name}`)!;
  return validate(body) ? [] : (validate.errors ?? []);
}

const predict = (bytes: Buffer, query = '') => {
  const { payload, headers } = fileUpload(bytes, 'x.png');
  return app.inject({ method: 'POST', url: `/api/predict${query}`, payload, headers });
};

describe('the error table', () => {
  it('every code has one status (plus listed alternatives), and PneumoError takes it from the table', () => {
    for (const code of ERROR_CODES) {
      const e = new PneumoError(code);
      expect(e.status).toBe(ERRORS[code].status);
      expect(e.message).toBe(ERRORS[code].message);
    }
    expect(new PneumoError('url_fetch_failed', 'x', undefined, 504).status).toBe(504);
    expect(() => new PneumoError('bad_request', 'x', undefined, 500)).toThrow(/never answered with 500/);
  });

  it('Fastify and parser errors map to codes of the table with their statuses', () => {
    for (const [fst, { code }] of Object.entries(FASTIFY_MESSAGES)) {
      const m = mapError(Object.assign(new Error('x'), { code: fst }));
      expect(m.body.error.code).toBe(code);
      expect(statusesOf(code)).toContain(m.status);
    }
    for (const status of [400, 404, 405, 408, 413, 415, 431, 500]) {
      const m = mapError(Object.assign(new Error('x'), { statusCode: status }));
      expect(statusesOf(m.body.error.code as ErrorCode)).toContain(m.status);
    }
    for (const code of ['ERR_HTTP_REQUEST_TIMEOUT', 'HPE_HEADER_OVERFLOW', 'HPE_INVALID_METHOD']) {
      let sent = '';
      clientErrorHandler(Object.assign(new Error('x'), { code }), { writable: true, end: (s: string) => (sent = s) } as never);
      const status = Number(/^HTTP\/1\.1 (\d+)/.exec(sent)![1]);
      const body = JSON.parse(sent.slice(sent.indexOf('\r\n\r\n') + 4));
      expect(statusesOf(body.error.code)).toContain(status);
    }
  });
});

describe('the OpenAPI document', () => {
  it('lists every code of the table, and each error status of predict with its codes', () => {
    expect(doc.components.schemas.Error.properties.error.properties.code.enum).toEqual(ERROR_CODES);
    const responses = doc.paths['/api/predict'].post.responses;
    for (const status of PREDICT_ERROR_STATUSES) {
      const text = responses[String(status)]?.description as string;
      for (const code of codesWithStatus(status)) expect(text, `${status} ${code}`).toContain(`\`${code}\``);
    }
    expect(doc.components.schemas.Gate.properties.checks.properties.failures.items.properties.check.enum).toEqual([...CHECK_NAMES]);
  });

  it('states the upload limit as a number (the page reads it, it never parses the prose)', async () => {
    const small = buildApp({ engine, maxUploadBytes: 3 * 1024 * 1024 });
    const d = (await small.inject('/api/openapi.json')).json();
    expect(d.paths['/api/predict'].post.requestBody.content['multipart/form-data'].schema.properties.file.maxLength).toBe(3 * 1024 * 1024);
    await small.close();
  });
});

describe('answers match the document the server serves', () => {
  it('200 answers (accepted, forced rejections of both reasons, pixel noise) validate and lose no field', async () => {
    const inputs = [
      [texturedGrayPng(40, 48, 3, 0, 120), ''],
      [await colourPhotoPng(64, 48, 4), '?force=true'],
      [texturedGrayPng(40, 48, 6, 140, 250), '?force=true'],
      [noisePng(64, 64), '?force=true'],
    ] as const;
    const seen = new Set<string>();
    for (const [bytes, query] of inputs) {
      const res = await predict(bytes, query);
      expect(res.statusCode).toBe(200);
      const body = res.json();
      expect(invalid('Prediction', body)).toEqual([]);
      for (const f of body.gate.checks.failures) seen.add(f.check);
      if (body.reason) seen.add(body.reason);
      // what the server sends is what it meant to send: the document drops nothing
      const direct = JSON.parse(JSON.stringify(toPredictResponse(await engine.analyse(bytes, { force: !!query }), {})));
      const { timings_ms: _a, ...sent } = body;
      const { timings_ms: _b, ...meant } = direct;
      expect(sent).toEqual(meant);
    }
    expect([...seen].sort()).toEqual(['colour', 'noise', 'not_a_chest_xray', 'outside_intended_use']);
  });

  it('error answers (both rejections, 415, 400, 404) validate and carry the status of their code', async () => {
    const answers = [
      await predict(await colourPhotoPng(64, 48, 4)),
      await predict(texturedGrayPng(40, 48, 6, 140, 250)),
      await predict(Buffer.from('not an image')),
      await predict(await colourPhotoPng(64, 48, 4), '?alpha=7'),
      await app.inject('/api/nothing-here'),
    ];
    expect(answers.map((r) => r.json().error.code)).toEqual([
      'not_a_chest_xray',
      'outside_intended_use',
      'unsupported_media_type',
      'bad_request',
      'not_found',
    ]);
    for (const res of answers) {
      expect(invalid('Error', res.json())).toEqual([]);
      expect(statusesOf(res.json().error.code)).toContain(res.statusCode);
    }
    expect(answers[1].json().error).toMatchObject({ scope: expect.any(Number), scope_threshold: 0.5 });
  });

  it('health validates', async () => {
    expect(invalid('Health', (await app.inject('/api/health')).json())).toEqual([]);
  });
});

describe('the page', () => {
  it('reads the upload limit from the schema, not from the prose', async () => {
    const { readFileSync } = await import('node:fs');
    const page = readFileSync(new URL('../../web/app.js', import.meta.url), 'utf8');
    expect(page).toContain('schema.properties.file');
    expect(page).not.toMatch(/post\.description/);
  });
});
