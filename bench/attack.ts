/**
 * Attack run (issue 10): replays every hostile input of the issue against the server, prints what
 * each got (status, error code, time), then measures what 10 legitimate clients get for a fixed
 * time, once alone and once while the attack runs (deflate bombs, 7000x7000 16-bit PNGs, 50 stalled
 * uploads, URLs to a host that never answers): p50/p99 and errors of the legitimate requests, the
 * server's peak RSS, /api/health latency and the longest event-loop block. Not a test.
 *
 *   npm run attack -- [--duration 20] [--clients 10] [--attackers 4] [--stalled 50] [--engine worker|main] [--json]
 *                     [--skip-done-when] [--max-p99-ratio 1.5] [--max-rss-mb 1024]   (exit 1 when a bound fails: issue 18)
 *                     [--url http://127.0.0.1:8080 [--pid PID]]
 *
 * Without --url the server runs in this process, listening on 127.0.0.1 with the settings of
 * `npm start` (environment included), except that the URL allow-list also admits this script's own
 * never-answering listener (127.0.0.1:PORT), so the URL fetch is attempted, not refused by the SSRF
 * guard. RSS and event-loop figures are then those of this process (server + the small clients).
 * --engine main runs the analyses on the event loop instead of in worker threads (the server before
 * src/server/engine-worker.ts), to compare.
 * --url attacks a running server on loopback only (any other host is refused); its RSS is read from
 * /proc/PID/status when --pid is given. Everything is bounded in count and time and stops by itself.
 */
import http from 'node:http';
import net from 'node:net';
import { readFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { crc32, deflateSync } from 'node:zlib';
import { REPO_ROOT } from '../src/model/card.ts';
import { deflateBombDicom, grayDicom } from '../test/fixtures/make-dicom.ts';
import { zeroPng } from '../test/fixtures/zero-png.ts';
import { deflatedZeroDicom, jpegDicomOf, manyPageTiff } from '../test/fixtures/hostile.ts';
import { doneWhen, type Row } from './done-when.ts';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    pid: { type: 'string' },
    duration: { type: 'string', default: '20' },
    clients: { type: 'string', default: '10' },
    attackers: { type: 'string', default: '4' },
    stalled: { type: 'string', default: '50' },
    engine: { type: 'string', default: 'worker' },
    'skip-done-when': { type: 'boolean', default: false },
    /** Fail (exit 1) when legit p99 under attack > this x the p99 without, or the peak RSS > --max-rss-mb. */
    'max-p99-ratio': { type: 'string', default: '1.5' },
    'max-rss-mb': { type: 'string', default: '1024' },
    json: { type: 'boolean', default: false },
  },
});
const posInt = (v: string, name: string, max: number): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new Error(`--${name} must be an integer from 1 to ${max}`);
  return n;
};
const DURATION_MS = posInt(values.duration, 'duration', 600) * 1000;
const CLIENTS = posInt(values.clients, 'clients', 64);
const ATTACKERS = posInt(values.attackers, 'attackers', 32);
const STALLED = posInt(values.stalled, 'stalled', 200);
if (values.engine !== 'worker' && values.engine !== 'main') throw new Error('--engine must be worker or main');
const PID = values.pid === undefined ? undefined : posInt(values.pid, 'pid', 2 ** 22);

const log = (s: string): void => void process.stderr.write(s + '\n');
const ms = (t0: number) => Math.round(performance.now() - t0);
const sleep = (t: number) => new Promise((r) => setTimeout(r, t));
const MB = 1024 * 1024;

/** Loopback only: 127.0.0.0/8, ::1 or localhost. */
function loopbackUrl(raw: string): URL {
  const u = new URL(raw);
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const loopback = host === 'localhost' || host === '::1' || (net.isIPv4(host) && host.startsWith('127.'));
  if (u.protocol !== 'http:' || !loopback) throw new Error(`refusing to attack ${raw}: only http:// on loopback (127.0.0.1, ::1)`);
  return u;
}

// ---------------------------------------------------------------- the hostile inputs (in memory)

interface Part {
  name: string;
  filename?: string;
  type?: string;
  data: Buffer | string;
}
const BOUNDARY = 'pneumolens-attack-boundary';
function multipart(parts: Part[]): Buffer {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    const disp = `form-data; name="${p.name}"${p.filename ? `; filename="${p.filename}"` : ''}`;
    chunks.push(
      Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: ${disp}\r\nContent-Type: ${p.type ?? 'application/octet-stream'}\r\n\r\n`),
    );
    chunks.push(Buffer.isBuffer(p.data) ? p.data : Buffer.from(p.data), Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${BOUNDARY}--\r\n`));
  return Buffer.concat(chunks);
}
const file = (data: Buffer, filename = 'image', type?: string) => multipart([{ name: 'file', filename, type, data }]);
const MULTIPART = `multipart/form-data; boundary=${BOUNDARY}`;

/** A multi-page TIFF of zeros (8-bit gray, Adobe deflate, one strip per page): `pages` x width x height in a few KB a page. */
function multiPageTiff(pages: number, width: number, height: number): Buffer {
  const strip = deflateSync(Buffer.alloc(width * height), { level: 9 });
  const entries = 10;
  const ifdSize = 2 + entries * 12 + 4;
  const out: Buffer[] = [];
  const head = Buffer.alloc(8);
  head.write('II', 0, 'latin1');
  head.writeUInt16LE(42, 2);
  head.writeUInt32LE(8, 4);
  out.push(head);
  let offset = 8;
  for (let p = 0; p < pages; p++) {
    const ifd = Buffer.alloc(ifdSize);
    const stripAt = offset + ifdSize;
    const next = p === pages - 1 ? 0 : stripAt + strip.length;
    const fields: Array<[number, number, number]> = [
      [256, 4, width], // ImageWidth, LONG
      [257, 4, height], // ImageLength
      [258, 3, 8], // BitsPerSample, SHORT
      [259, 3, 8], // Compression: Adobe deflate
      [262, 3, 1], // Photometric: BlackIsZero
      [273, 4, stripAt], // StripOffsets
      [277, 3, 1], // SamplesPerPixel
      [278, 4, height], // RowsPerStrip
      [279, 4, strip.length], // StripByteCounts
      [297, 3, p], // PageNumber (page, 0)
    ];
    ifd.writeUInt16LE(entries, 0);
    fields.forEach(([tag, type, value], i) => {
      const at = 2 + i * 12;
      ifd.writeUInt16LE(tag, at);
      ifd.writeUInt16LE(type, at + 2);
      ifd.writeUInt32LE(1, at + 4);
      if (type === 3) ifd.writeUInt16LE(value, at + 8);
      else ifd.writeUInt32LE(value, at + 8);
    });
    ifd.writeUInt32LE(next, 2 + entries * 12);
    out.push(ifd, strip);
    offset = stripAt + strip.length;
  }
  return Buffer.concat(out);
}

/** The same PNG with the CRC of its last chunk (IEND) damaged. */
function badCrcPng(png: Buffer): Buffer {
  const out = Buffer.from(png);
  out[out.length - 1] ^= 0xff;
  if (crc32(out.subarray(out.length - 8, out.length - 4)) === out.readUInt32BE(out.length - 4)) throw new Error('CRC not damaged');
  return out;
}

// ---------------------------------------------------------------- HTTP helpers

interface Answer {
  status: number; // 0: no answer (connection error / closed)
  code: string;
  ms: number;
}

const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 64 });

function request(
  base: URL,
  path: string,
  o: { method?: string; headers?: Record<string, string>; body?: Buffer | string; agent?: http.Agent | false; timeoutMs?: number } = {},
): Promise<Answer> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const req = http.request(
      new URL(path, base),
      {
        method: o.method ?? 'GET',
        headers: { ...o.headers, ...(o.body !== undefined ? { 'content-length': String(Buffer.byteLength(o.body)) } : {}) },
        agent: o.agent ?? keepAlive,
        timeout: o.timeoutMs ?? 60_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          let code = '';
          if ((res.statusCode ?? 0) >= 400) {
            try {
              code = (JSON.parse(Buffer.concat(chunks).toString()) as { error?: { code?: string } }).error?.code ?? '?';
            } catch {
              code = '(not JSON)';
            }
          }
          resolve({ status: res.statusCode ?? 0, code, ms: ms(t0) });
        });
        res.on('error', () => resolve({ status: res.statusCode ?? 0, code: 'response error', ms: ms(t0) }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('client timeout')));
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ status: 0, code: e.code ?? e.message, ms: ms(t0) }));
    req.end(o.body);
  });
}

/** Raw bytes on a new socket; the status and error code of whatever came back before the socket closed (or `waitMs`). */
function rawRequest(base: URL, data: Buffer | string, waitMs: number, onSocket?: (s: net.Socket) => void): Promise<Answer> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const socket = net.connect(Number(base.port || 80), base.hostname.replace(/^\[|\]$/g, ''));
    onSocket?.(socket);
    let text = '';
    const done = (closed: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
      const code = /"code":"([a-z_]+)"/.exec(text)?.[1] ?? (status ? '' : closed ? 'closed, no answer' : 'no answer yet');
      resolve({ status, code, ms: ms(t0) });
    };
    const timer = setTimeout(() => done(false), waitMs);
    socket.on('data', (c) => (text += c.toString('latin1')));
    socket.on('close', () => done(true));
    socket.on('error', () => undefined);
    socket.write(data);
  });
}

/** Headers of a multipart upload declaring 100 KB more than it sends, and its first 300 bytes: then nothing. */
function stalledUploadBytes(base: URL, body: Buffer): string {
  return (
    `POST /api/predict?cam=false HTTP/1.1\r\nHost: ${base.host}\r\nContent-Type: ${MULTIPART}\r\n` +
    `Content-Length: ${body.length + 100_000}\r\n\r\n` +
    body.subarray(0, 300).toString('latin1')
  );
}

/** A loopback listener that accepts connections and never replies (the "host that never answers"). */
async function blackHole(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
    s.resume();
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    port: (srv.address() as net.AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => srv.close(() => r()));
    },
  };
}

// ---------------------------------------------------------------- measurement helpers

function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function procRssMb(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** RSS of the server, sampled every 25 ms: this process, or --pid. */
function rssSampler(): { stop(): { peakMb: number | null; startMb: number | null } } {
  const read = (): number | undefined => (PID !== undefined ? procRssMb(PID) : values.url ? undefined : process.memoryUsage.rss() / MB);
  const start = read();
  let peak = start ?? 0;
  const timer = setInterval(() => (peak = Math.max(peak, read() ?? 0)), 25);
  return {
    stop() {
      clearInterval(timer);
      return { peakMb: start === undefined ? null : +peak.toFixed(0), startMb: start === undefined ? null : +start.toFixed(0) };
    },
  };
}

// ---------------------------------------------------------------- main

interface Server {
  url: URL;
  close(): Promise<void>;
}

async function startInProcess(allowPort: number, logLines: { errors: number; lastError: string }): Promise<Server> {
  const { WorkerEngine } = await import('../src/server/engine-worker.ts');
  const { defaultMaxConcurrent, serve, serverOptionsFromEnv, threadsPerAnalysis } = await import('../src/server/start.ts');
  const env = serverOptionsFromEnv();
  const maxConcurrent = env.maxConcurrent ?? defaultMaxConcurrent();
  const card = process.env.PNEUMOLENS_MODEL ? { card: process.env.PNEUMOLENS_MODEL } : {};
  const threads = Number(process.env.PNEUMOLENS_THREADS) || threadsPerAnalysis(maxConcurrent);
  // worker: the engine of `npm start` (analyses in worker threads, src/server/engine-worker.ts);
  // main: the engine on the event loop, as `npm start` ran it before (for comparison).
  const engine =
    values.engine === 'worker'
      ? await WorkerEngine.load({ ...card, threads, workers: maxConcurrent })
      : Object.assign(await (await import('../src/pipeline.ts')).Engine.load({ ...card, threads }), { workers: 0 });
  const running = await serve({
    ...env,
    maxConcurrent,
    engine,
    port: 0,
    host: '127.0.0.1',
    urlAllowList: [...(env.urlAllowList ?? []), `127.0.0.1:${allowPort}`],
    // The server's log, counted: a stack trace (level 50, 'unexpected error') is a defect.
    logger: {
      level: 'warn',
      stream: {
        write(line: string) {
          if (/"level":(50|60)/.test(line)) {
            logLines.errors++;
            logLines.lastError = line.slice(0, 300);
          }
        },
      },
    },
  });
  log(
    `server ${running.url} in this process: ${engine.card.name} ${engine.card.version}, maxConcurrent ${maxConcurrent}, ` +
      `maxQueue ${env.maxQueue ?? 16}, ${engine.workers ? `${engine.workers} engine worker thread(s)` : 'engine on the event loop (--engine main)'} x ${engine.threads} ORT thread(s)`,
  );
  return {
    url: new URL(running.url),
    close: async () => {
      await running.close();
      await engine.dispose();
    },
  };
}

async function main(): Promise<void> {
  const hole = await blackHole();
  const serverLog = { errors: 0, lastError: '' };
  const server: Server = values.url
    ? { url: loopbackUrl(values.url), close: async () => undefined }
    : await startInProcess(hole.port, serverLog);
  const base = server.url;
  const load0 = loadavg();
  log(`load average ${load0.map((l) => l.toFixed(2)).join(' ')} (${values.url ? `server ${base.origin}` : 'in-process server'})`);

  // Inputs, all built before anything is timed.
  const goldenDir = join(REPO_ROOT, 'test', 'fixtures', 'golden');
  const golden = await Promise.all(
    ['normal_gray_200x240.png', 'normal_rgb_300x256.png', 'pneumonia_gray_224.png', 'pneumonia_rgba_180.png'].map((f) =>
      readFile(join(goldenDir, f)),
    ),
  );
  const legitBodies = golden.map((g) => file(g, 'xray.png', 'image/png'));
  log('building the hostile inputs...');
  const bombPixel = deflateBombDicom({ rows: 32768, cols: 32768, zerosMb: 2048, where: 'pixel' });
  const bombPrivate = deflateBombDicom({ rows: 512, cols: 512, zerosMb: 2048, where: 'private' });
  const pngBomb = zeroPng(7000, 7000, 6, 16);
  const tiff = multiPageTiff(200, 2000, 2000);
  const slope = grayDicom(64, 64, [0, 100, 200, 300], { bits: 16, slope: 1e308 });
  const pngBody = file(golden[0], 'xray.png', 'image/png');
  // Issue 18: small files declaring huge images, damaged codestreams, a TIFF of page headers.
  const defl6688 = deflatedZeroDicom({ width: 6688, height: 6688, samples: 3, bits: 8 });
  const halfJpeg = (await jpegDicomOf(join(goldenDir, 'normal_gray_200x240.png'), 0.5)).file;
  const pagesTiff = manyPageTiff(150_000);
  const bodies = {
    defl6688: file(defl6688, 'big.dcm', 'application/dicom'),
    halfJpeg: file(halfJpeg, 'half.dcm', 'application/dicom'),
    pagesTiff: file(pagesTiff, 'pages.tif', 'image/tiff'),
    bombPixel: file(bombPixel, 'bomb.dcm', 'application/dicom'),
    bombPrivate: file(bombPrivate, 'bomb.dcm', 'application/dicom'),
    pngBomb: file(pngBomb, 'big.png', 'image/png'),
  };
  const kb = (b: Buffer) => `${Math.round(b.length / 1024)} KB`;
  const post = (body: Buffer | string, headers: Record<string, string> = { 'content-type': MULTIPART }, query = 'cam=false') =>
    request(base, `/api/predict?${query}`, { method: 'POST', headers, body, agent: false });
  const blackHoleUrl = JSON.stringify({ url: `http://127.0.0.1:${hole.port}/xray.png` });
  const json = { 'content-type': 'application/json' };

  // ------------------------------------------------------------ 1. replay, one input at a time
  const replay: Array<{
    input: string;
    size: string;
    status: number;
    code: string;
    ms: number;
    health_max_ms: number;
    loop_block_max_ms: number | null;
    note?: string;
  }> = [];
  const loopDelay = monitorEventLoopDelay({ resolution: 5 });
  /** Runs `start()` while /api/health is probed every 25 ms; the answer, the slowest health answer and the longest event-loop block meanwhile. */
  async function probed<T>(start: () => Promise<T>): Promise<{ value: T; healthMax: number; loopMax: number | null }> {
    loopDelay.reset();
    loopDelay.enable();
    let done = false;
    let healthMax = 0;
    const probe = (async () => {
      while (!done) {
        healthMax = Math.max(healthMax, (await request(base, '/api/health', { agent: false, timeoutMs: 10_000 })).ms);
        await sleep(25);
      }
    })();
    const value = await start();
    done = true;
    await probe;
    loopDelay.disable();
    return { value, healthMax, loopMax: values.url ? null : Math.round(loopDelay.max / 1e6) };
  }
  const distinct = (all: Answer[]) =>
    Object.entries(
      all.reduce<Record<string, number>>(
        (acc, a) => ((acc[`${a.status} ${a.code}`.trim()] = (acc[`${a.status} ${a.code}`.trim()] ?? 0) + 1), acc),
        {},
      ),
    )
      .map(([k, n]) => `${n} x ${k}`)
      .join(', ');
  const show = (r: (typeof replay)[number]) =>
    `  ${r.input.padEnd(64)} ${r.size.padStart(8)}  ${String(r.status).padStart(3)} ${r.code.padEnd(22)} ${String(r.ms).padStart(6)} ms` +
    `  health max ${String(r.health_max_ms).padStart(4)} ms, loop block max ${r.loop_block_max_ms ?? 'n/a'} ms${r.note ? `  (${r.note})` : ''}`;
  const one = async (input: string, size: string, send: () => Promise<Answer>, note?: string) => {
    const { value: a, healthMax, loopMax } = await probed(send);
    replay.push({ input, size, ...a, health_max_ms: healthMax, loop_block_max_ms: loopMax, ...(note ? { note } : {}) });
    log(show(replay[replay.length - 1]));
  };
  const many = async (input: string, size: string, send: () => Promise<Answer[]>, note?: string) => {
    const t0 = performance.now();
    const { value: all, healthMax, loopMax } = await probed(send);
    const r = {
      input,
      size,
      status: all[0].status,
      code: distinct(all),
      ms: ms(t0),
      health_max_ms: healthMax,
      loop_block_max_ms: loopMax,
      ...(note ? { note } : {}),
    };
    replay.push(r);
    log(show(r));
  };
  log('replay (each input alone, /api/health probed every 25 ms meanwhile):');
  const png0 = kb(golden[0]);
  await one('legitimate X-ray (golden PNG), for reference', png0, () => post(pngBody));
  await one('deflated DICOM bomb: 2 GiB of zeros as pixel data (32768^2 16 bit)', kb(bombPixel), () => post(bodies.bombPixel));
  await one('deflated DICOM bomb: 2 GiB of zeros in a private element', kb(bombPrivate), () => post(bodies.bombPrivate));
  await one('7000x7000 16-bit RGBA PNG of zeros', kb(pngBomb), () => post(bodies.pngBomb));
  await many('14 of those PNGs at once', kb(pngBomb), () => Promise.all(Array.from({ length: 14 }, () => post(bodies.pngBomb))));
  await one('multi-page TIFF (200 pages of 2000x2000 zeros)', kb(tiff), () => post(file(tiff, 'pages.tif', 'image/tiff')));
  await one('multipart Content-Type without boundary', '5 B', () => post('hello', { 'content-type': 'multipart/form-data' }));
  const shortHead =
    `POST /api/predict?cam=false HTTP/1.1\r\nHost: ${base.host}\r\nContent-Type: ${MULTIPART}\r\n` +
    `Content-Length: ${pngBody.length - 200}\r\nConnection: close\r\n\r\n`;
  await one('Content-Length 200 bytes shorter than the body', png0, () =>
    rawRequest(base, Buffer.concat([Buffer.from(shortHead), pngBody]), 10_000),
  );
  await one('DICOM with RescaleSlope 1e308', kb(slope), () => post(file(slope, 'slope.dcm', 'application/dicom')));
  await one('PNG with a bad CRC (IEND)', png0, () => post(file(badCrcPng(golden[0]), 'crc.png', 'image/png')));
  await one('cross-origin browser POST (Origin: https://evil.example)', png0, () =>
    post(pngBody, { 'content-type': MULTIPART, origin: 'https://evil.example' }),
  );
  const twoFiles = multipart([
    { name: 'file', filename: 'a.png', type: 'image/png', data: golden[0] },
    { name: 'file', filename: 'b.png', type: 'image/png', data: golden[0] },
  ]);
  await one('second uploaded file', png0, () => post(twoFiles));
  await one(
    'URL to a loopback host that never answers',
    `${blackHoleUrl.length} B`,
    () => post(blackHoleUrl, json),
    values.url ? 'the server allow-list decides' : `allow-list has 127.0.0.1:${hole.port} for this run`,
  );
  {
    // STALLED stalled uploads: each sends 300 bytes and stops; meanwhile a legitimate upload must succeed.
    const stalled = Array.from({ length: STALLED }, () => rawRequest(base, stalledUploadBytes(base, pngBody), 60_000));
    await sleep(300);
    await one(`legitimate X-ray while ${STALLED} uploads are stalled`, png0, () => post(pngBody));
    const health = await new Promise<string>((resolve) => {
      http.get(new URL('/api/health', base), { agent: false }, (res) => {
        let s = '';
        res.on('data', (c) => (s += c));
        res.on('end', () => resolve(s));
      });
    });
    const load = (JSON.parse(health) as { load?: Record<string, number> }).load ?? {};
    await many(
      `${STALLED} stalled uploads (300 B each, then nothing)`,
      '300 B',
      () => Promise.all(stalled),
      `health meanwhile: ${JSON.stringify(load)}`,
    );
  }

  // ------------------------------------------------------------ 1b. issue 18's "Done when" rows (bench/done-when.ts)
  let doneRows: Row[] = [];
  if (!values['skip-done-when']) {
    log('\nissue 18 "Done when" rows:');
    const rssBefore = rssSampler();
    doneRows = (await doneWhen(base, PID, log)).rows;
    const m = rssBefore.stop();
    log(`peak RSS during those rows: ${m.peakMb ?? 'n/a'} MB`);
  }

  // ------------------------------------------------------------ 2. legitimate load, without and with the attack
  const delay = monitorEventLoopDelay({ resolution: 10 });
  async function phase(name: string, attack: boolean) {
    const stop = performance.now() + DURATION_MS;
    const running = () => performance.now() < stop;
    const rss = rssSampler();
    if (!values.url) {
      delay.reset();
      delay.enable();
    }
    const latencies: number[] = [];
    const errors: Record<string, number> = {};
    const attackCounts: Record<string, number> = {};
    const health: number[] = [];
    const count = (into: Record<string, number>, k: string) => (into[k] = (into[k] ?? 0) + 1);

    const legit = Array.from({ length: CLIENTS }, async (_, c) => {
      for (let i = c; running(); i++) {
        const a = await request(base, '/api/predict?cam=true', {
          method: 'POST',
          headers: { 'content-type': MULTIPART },
          body: legitBodies[i % legitBodies.length],
        });
        if (a.status === 200) latencies.push(a.ms);
        else count(errors, `${a.status} ${a.code}`);
      }
    });
    const probe = (async () => {
      while (running()) {
        health.push((await request(base, '/api/health', { agent: false, timeoutMs: 10_000 })).ms);
        await sleep(100);
      }
    })();
    const attackers: Promise<void>[] = [];
    const stalledSockets = new Set<net.Socket>();
    if (attack) {
      const kinds: Array<[string, () => Promise<Answer>]> = [
        ['DICOM bomb (pixel)', () => post(bodies.bombPixel)],
        ['DICOM bomb (private)', () => post(bodies.bombPrivate)],
        ['7000x7000 PNG', () => post(bodies.pngBomb)],
        ['7000x7000 PNG', () => post(bodies.pngBomb)],
        ['deflated 6688x6688 RGB DICOM (130 KB)', () => post(bodies.defl6688)],
        ['half-codestream JPEG DICOM', () => post(bodies.halfJpeg)],
        ['TIFF of 150,000 page headers', () => post(bodies.pagesTiff)],
      ];
      // Each sender goes through every kind in turn, starting at its own.
      for (let k = 0; k < ATTACKERS; k++) {
        attackers.push(
          (async () => {
            for (let i = k; running(); i++) {
              const [label, send] = kinds[i % kinds.length];
              count(attackCounts, `${label}: ${(await send()).status}`);
            }
          })(),
        );
      }
      // Never-answering URLs: a new one as soon as the last is answered.
      attackers.push(
        (async () => {
          while (running()) count(attackCounts, `URL that never answers: ${(await post(blackHoleUrl, json)).status}`);
        })(),
      );
      // STALLED stalled uploads at all times: each one closed by the server is replaced at once.
      for (let k = 0; k < STALLED; k++) {
        attackers.push(
          (async () => {
            while (running()) {
              const a = await rawRequest(base, stalledUploadBytes(base, pngBody), Math.max(1, stop - performance.now()), (s) =>
                stalledSockets.add(s),
              );
              if (a.status) count(attackCounts, `stalled upload: ${a.status}`);
            }
          })(),
        );
      }
    }
    await Promise.all(legit);
    await probe;
    for (const s of stalledSockets) s.destroy();
    await Promise.all(attackers);
    const mem = rss.stop();
    delay.disable();
    latencies.sort((a, b) => a - b);
    health.sort((a, b) => a - b);
    const result = {
      phase: name,
      seconds: DURATION_MS / 1000,
      clients: CLIENTS,
      legit_ok: latencies.length,
      legit_errors: Object.values(errors).reduce((a, b) => a + b, 0),
      legit_error_kinds: errors,
      p50_ms: percentile(latencies, 50),
      p99_ms: percentile(latencies, 99),
      max_ms: latencies.at(-1) ?? NaN,
      health_ms: { n: health.length, p50: percentile(health, 50), p99: percentile(health, 99), max: health.at(-1) ?? NaN },
      event_loop_block_max_ms: values.url ? null : +(delay.max / 1e6).toFixed(0),
      rss_mb: mem,
      max_rss_process_mb: values.url ? null : +(process.resourceUsage().maxRSS / 1024).toFixed(0),
      attack: attackCounts,
      load_avg: loadavg().map((l) => +l.toFixed(2)),
    };
    log(
      `${name}: ${result.legit_ok} ok, ${result.legit_errors} errors ${JSON.stringify(errors)}; p50 ${result.p50_ms} ms, p99 ${result.p99_ms} ms, ` +
        `max ${result.max_ms} ms; health max ${result.health_ms.max} ms (p99 ${result.health_ms.p99}); loop block max ${result.event_loop_block_max_ms} ms; ` +
        `RSS ${mem.startMb} -> peak ${mem.peakMb} MB${attack ? `; attack ${JSON.stringify(attackCounts)}` : ''}`,
    );
    return result;
  }

  log(`\nlegitimate load: ${CLIENTS} clients posting golden X-rays (cam=true) for ${DURATION_MS / 1000} s, without then with the attack`);
  const calm = await phase('without attack', false);
  await sleep(1000);
  const underAttack = await phase(`with attack (${ATTACKERS} bomb senders, ${STALLED} stalled uploads, unanswered URLs)`, true);

  await server.close();
  await hole.close();
  keepAlive.destroy();
  const report = {
    server: values.url ? base.origin : `in-process, npm start defaults, engine: ${values.engine}`,
    load_avg_at_start: load0.map((l) => +l.toFixed(2)),
    replay,
    phases: [calm, underAttack],
    server_log_errors: values.url ? null : serverLog.errors,
  };
  if (!values.url) log(`server log: ${serverLog.errors} error line(s)${serverLog.errors ? `; last: ${serverLog.lastError}` : ''}`);
  if (values.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  else {
    const row = (p: typeof calm) =>
      `${p.phase}\n    legit ${p.legit_ok} ok / ${p.legit_errors} errors, p50 ${p.p50_ms} ms, p99 ${p.p99_ms} ms, max ${p.max_ms} ms; ` +
      `health max ${p.health_ms.max} ms (p50 ${p.health_ms.p50}, n ${p.health_ms.n}); event loop block max ${p.event_loop_block_max_ms ?? 'n/a'} ms; ` +
      `RSS peak ${p.rss_mb.peakMb ?? 'n/a'} MB (from ${p.rss_mb.startMb ?? 'n/a'})`;
    process.stdout.write(
      [
        `server: ${report.server}; load average at start ${report.load_avg_at_start.join(' ')}`,
        ...replay.map(show),
        row(calm),
        row(underAttack),
        ...(values.url ? [] : [`server log error lines: ${serverLog.errors}`]),
      ].join('\n') + '\n',
    );
  }
  // The verdict (issue 18 item 5): legit p99 under attack within the ratio of without, peak RSS under the bound, every "Done when" row held.
  const ratio = underAttack.p99_ms / calm.p99_ms;
  const peak = Math.max(calm.rss_mb.peakMb ?? 0, underAttack.rss_mb.peakMb ?? 0);
  const failed = [
    ...(ratio > Number(values['max-p99-ratio'])
      ? [`p99 under attack ${ratio.toFixed(2)}x the p99 without (bound ${values['max-p99-ratio']}x)`]
      : []),
    ...(peak > Number(values['max-rss-mb']) ? [`peak RSS ${peak} MB (bound ${values['max-rss-mb']} MB)`] : []),
    ...(underAttack.legit_errors > 0 ? [`${underAttack.legit_errors} legitimate requests failed under attack`] : []),
    ...doneRows.filter((r) => !r.ok).map((r) => `"Done when" row not held: ${r.input} (${r.status} ${r.code}, ${r.ms} ms; want ${r.want})`),
  ];
  log(
    `\nverdict: p99 ratio ${ratio.toFixed(2)} (bound ${values['max-p99-ratio']}), peak RSS ${peak || 'n/a'} MB (bound ${values['max-rss-mb']}); ${failed.length ? `FAILED:\n  ${failed.join('\n  ')}` : 'all bounds held'}`,
  );
  if (failed.length) process.exitCode = 1;
  // Bounded: nothing may keep the process alive.
  setTimeout(() => process.exit(process.exitCode ?? 0), 2000).unref();
}

await main();
