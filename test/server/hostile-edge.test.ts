/**
 * The HTTP edge of issue 18 on a real loopback server (bounded in count and time): a chunked upload
 * whose file part never ends is 413 at the limit, not read until the deadline; DNS rebinding (Host
 * and Origin both a foreign name) is refused; a connection beyond the cap gets a 503; an oversized
 * multipart part header is refused; an analysis past its deadline stops its worker (recycled, the
 * slot freed, /api/health degraded until the replacement runs).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildApp } from '../../src/server/app.ts';
import { HostPolicy } from '../../src/server/host.ts';
import { PartHeaderScanner } from '../../src/server/uploads.ts';
import { serve, type RunningServer } from '../../src/server/start.ts';
import { REPO_ROOT } from '../../src/model/card.ts';
import { fileUpload, grayPng, multipart, TestEngine } from '../fixtures/server-helpers.ts';
import { endlessChunked } from '../fixtures/hostile.ts';

const png = grayPng(32, 32, 200);
const errorOf = (res: { json(): unknown }) => (res.json() as { error: { code: string; message: string } }).error;

describe('the HTTP edge on a loopback server', () => {
  let server: RunningServer;
  const maxUploadBytes = 2 * 1024 * 1024;
  beforeAll(async () => {
    server = await serve({ engine: new TestEngine(), port: 0, host: '127.0.0.1', maxUploadBytes, maxConnections: 8 });
  });
  afterAll(() => server?.close());

  it('a chunked upload whose file part never ends is 413 once the limit has arrived, not 408 at the deadline', async () => {
    const boundary = 'b0undary';
    const part = `--${boundary}\r\nContent-Disposition: form-data; name="file"\r\n\r\n`;
    const head =
      `POST /api/predict?cam=false HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\n` +
      `Content-Type: multipart/form-data; boundary=${boundary}\r\nTransfer-Encoding: chunked\r\n\r\n` +
      `${Buffer.byteLength(part).toString(16)}\r\n${part}\r\n`;
    const r = await endlessChunked(server.port, '127.0.0.1', head, Buffer.alloc(64 * 1024, 0x41), 10_000);
    expect(r.text).toMatch(/^HTTP\/1\.1 413/);
    expect(r.text).toContain('"payload_too_large"');
    expect(r.ms).toBeLessThan(5000);
    // It stopped reading near the limit (what the socket buffers held besides): far from the 10 s of data.
    expect(r.sent).toBeLessThan(maxUploadBytes * 64);
  });

  it('DNS rebinding: Host and Origin both a foreign name get 403; the server own names and IP literals are served', async () => {
    const ask = (host: string, origin?: string) =>
      new Promise<number>((resolve) => {
        const socket = net.connect(server.port, '127.0.0.1');
        let text = '';
        socket.on('data', (c) => (text += c.toString('latin1')));
        socket.on('close', () => resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0)));
        socket.write(`GET /api/health HTTP/1.1\r\nHost: ${host}\r\n${origin ? `Origin: ${origin}\r\n` : ''}Connection: close\r\n\r\n`);
      });
    expect(await ask(`a.evil:${server.port}`, `http://a.evil:${server.port}`)).toBe(403);
    expect(await ask(`rebind.attacker.example:${server.port}`)).toBe(403);
    for (const host of [`127.0.0.1:${server.port}`, `localhost:${server.port}`, `[::1]:${server.port}`, 'pneumolens:8080', 'x.localhost']) {
      expect(await ask(host), host).toBe(200);
    }
  });

  it('PNEUMOLENS_ALLOWED_HOSTS (and the allowed origins) add names; "*" allows any', async () => {
    const a = buildApp({
      engine: new TestEngine(),
      allowedHosts: ['pneumolens.example.org', '.lab.example'],
      allowedOrigins: ['https://viewer.example.net'],
    });
    const status = async (host: string) => (await a.inject({ url: '/api/health', headers: { host } })).statusCode;
    expect(await status('pneumolens.example.org:8443')).toBe(200);
    expect(await status('ws1.lab.example')).toBe(200);
    expect(await status('viewer.example.net')).toBe(200);
    expect(await status('a.evil')).toBe(403);
    const res = await a.inject({ url: '/api/health', headers: { host: 'a.evil' } });
    expect(errorOf(res).message).toMatch(/PNEUMOLENS_ALLOWED_HOSTS/);
    expect(HostPolicy.from(['*']).allows('a.evil')).toBe(true);
    await a.close();
  });

  it('a connection beyond the cap gets 503 busy and is closed; the others are still served', async () => {
    const idle = await Promise.all(
      Array.from(
        { length: 8 },
        () =>
          new Promise<net.Socket>((resolve) => {
            const s = net.connect(server.port, '127.0.0.1', () => resolve(s));
            s.on('error', () => undefined);
          }),
      ),
    );
    await new Promise((r) => setTimeout(r, 100));
    const text = await new Promise<string>((resolve) => {
      const s = net.connect(server.port, '127.0.0.1');
      let t = '';
      s.on('data', (c) => (t += c.toString('latin1')));
      s.on('close', () => resolve(t));
      s.on('error', () => resolve(t));
    });
    expect(text).toMatch(/^HTTP\/1\.1 503/);
    expect(text).toContain('"busy"');
    for (const s of idle) s.destroy();
    await new Promise((r) => setTimeout(r, 100));
    const res = await fetch(`${server.url}/api/health`);
    expect(res.status).toBe(200);
    expect(((await res.json()) as { load: { connections: number } }).load.connections).toBeLessThanOrEqual(2);
  });
});

describe('multipart part headers', () => {
  it('a 100 KB part header is 400; an ordinary one passes', async () => {
    const a = buildApp({ engine: new TestEngine() });
    const boundary = 'xyz';
    const long = `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\nX-Pad: ${'p'.repeat(100 * 1024)}\r\n\r\n`;
    const payload = Buffer.concat([Buffer.from(long), png, Buffer.from(`\r\n--${boundary}--\r\n`)]);
    const res = await a.inject({
      method: 'POST',
      url: '/api/predict?cam=false',
      payload,
      headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
    });
    expect(res.statusCode).toBe(400);
    expect(errorOf(res).message).toMatch(/part header/);
    const ok = await a.inject({ method: 'POST', url: '/api/predict?cam=false', ...fileUpload(png) });
    expect(ok.statusCode).toBe(200);
    await a.close();
  });

  it('the scanner finds a header split across chunks at any point', () => {
    const { payload, headers } = multipart([{ name: 'file', filename: 'x.png', data: png }]);
    for (let cut = 1; cut < 120; cut++) {
      const s = new PartHeaderScanner(headers['content-type'], 16);
      // A 16-byte limit: the real header (~60 bytes) is too long, wherever the chunks split it.
      expect(s.push(payload.subarray(0, cut)) && s.push(payload.subarray(cut)), `cut ${cut}`).toBe(false);
      const roomy = new PartHeaderScanner(headers['content-type'], 1024);
      expect(roomy.push(payload.subarray(0, cut)) && roomy.push(payload.subarray(cut)), `cut ${cut}`).toBe(true);
    }
  });
});

describe('deadlines stop the work', () => {
  it('an analysis past its deadline ends its worker: 504, slot freed, health degraded until the replacement runs, then 200 again', async () => {
    const { WorkerEngine } = await import('../../src/server/engine-worker.ts');
    const engine = await WorkerEngine.load({ threads: 1, workers: 1 });
    // 5 ms is less than any analysis takes; the queue wait counts too.
    const a = buildApp({ engine, requestTimeoutMs: 5, maxConcurrent: 1 });
    try {
      const xray = readFileSync(join(REPO_ROOT, 'test', 'fixtures', 'golden', 'normal_gray_200x240.png'));
      const res = await a.inject({ method: 'POST', url: '/api/predict?cam=true', ...fileUpload(xray) });
      expect(res.statusCode).toBe(504);
      const health = (await a.inject('/api/health')).json() as { status: string; load: Record<string, number> };
      expect(health.status).toBe('degraded');
      expect(health.load.active).toBe(0); // the slot is free at once
      expect(health.load.recycled_after_deadline).toBe(1);
      // The replacement loads the model (a few seconds on a loaded machine), then health is ok again.
      let status = 'degraded';
      for (let i = 0; i < 150 && status !== 'ok'; i++) {
        await new Promise((r) => setTimeout(r, 100));
        status = ((await a.inject('/api/health')).json() as { status: string }).status;
      }
      expect(status).toBe('ok');
      const ok = await engine.analyse(xray, { cam: false });
      expect(ok.label).toMatch(/NORMAL|PNEUMONIA/);
    } finally {
      await a.close();
      await engine.dispose();
    }
  }, 60_000);
});
