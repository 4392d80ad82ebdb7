/**
 * Load test of the HTTP API: the real server and the shipped model in this process, listening on
 * 127.0.0.1 only, autocannon with 20 concurrent clients posting images (multipart). Prints
 * requests/s, p50/p99 latency, errors, non-2xx answers (by status), and RSS after the first 200 and
 * after all requests; checks the bar (0 errors, 0 non-2xx, p99 < 2 s, RSS growth < 15 %). Not a test.
 *
 *   npm run loadtest -- [--requests 2000] [--warmup 200] [--connections 20] [--dir DIR | --synthetic]
 *                       [--cam true|false] [--concurrency N] [--threads T] [--queue Q] [--json]
 *
 * Server settings: those of `npm start` (PNEUMOLENS_* environment included; without it: maxConcurrent
 * = cores, queue 16, request timeout 30 s), so the result is what a user of the defaults gets. With
 * more clients than maxConcurrent + queue, the excess get 503 at once (and autocannon re-sends at
 * once, so non-2xx counts grow fast): --queue Q (e.g. connections + 4) gives every client a slot.
 *
 * Images: --dir DIR (DIR/{NORMAL,PNEUMONIA} or a flat folder), else ../shared/data/chest_xray_train
 * when it exists, else synthetic chest-like JPEGs. Exit code 1 when the bar is missed.
 */
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import sharp from 'sharp';
import { REPO_ROOT } from '../src/model/card.ts';
import { WorkerEngine } from '../src/server/engine-worker.ts';
import { DEFAULT_MAX_QUEUE } from '../src/server/app.ts';
import { defaultMaxConcurrent, serve, serverOptionsFromEnv, threadsPerAnalysis } from '../src/server/start.ts';
import { chestSamples } from '../test/fixtures/synthetic.ts';

// autocannon ships no types: the small part used here.
interface CannonResult {
  requests: { average: number; total: number };
  latency: { p50: number; p90: number; p99: number; max: number; average: number };
  throughput: { average: number };
  errors: number;
  timeouts: number;
  non2xx: number;
  '2xx': number;
  duration: number;
  statusCodeStats?: Record<string, { count: number }>;
}
type Cannon = (opts: Record<string, unknown>) => Promise<CannonResult>;
const autocannon = createRequire(import.meta.url)('autocannon') as Cannon;

const { values } = parseArgs({
  options: {
    requests: { type: 'string', default: '2000' },
    warmup: { type: 'string', default: '200' },
    connections: { type: 'string', default: '20' },
    dir: { type: 'string' },
    synthetic: { type: 'boolean', default: false },
    cam: { type: 'string', default: 'true' },
    concurrency: { type: 'string' },
    threads: { type: 'string' },
    queue: { type: 'string' },
    json: { type: 'boolean', default: false },
  },
});
const REQUESTS = Number(values.requests);
const WARMUP = Number(values.warmup);
const CONNECTIONS = Number(values.connections);
for (const [k, v] of Object.entries({ requests: REQUESTS, warmup: WARMUP, connections: CONNECTIONS })) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${k} must be a positive integer`);
}
if (WARMUP >= REQUESTS) throw new Error('--warmup must be smaller than --requests');
if (values.cam !== 'true' && values.cam !== 'false') throw new Error('--cam must be true or false');
const optInt = (v: string | undefined, name: string) => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer`);
  return n;
};
const CONCURRENCY = optInt(values.concurrency, 'concurrency');
const THREADS = optInt(values.threads, 'threads');
const QUEUE = values.queue === undefined ? undefined : values.queue === '0' ? 0 : optInt(values.queue, 'queue');

const log = (s: string): void => void process.stderr.write(s + '\n');

/** A synthetic chest-like gray JPEG (test/fixtures/synthetic.ts; odd seeds with an opacity). */
async function syntheticChest(seed: number, size = 1024): Promise<Buffer> {
  const px = chestSamples(size, size, { seed, opacity: seed % 2 === 1 });
  return sharp(px, { raw: { width: size, height: size, channels: 1 } })
    .jpeg({ quality: 90 })
    .toBuffer();
}

async function loadImages(): Promise<{ images: Buffer[]; source: string }> {
  const dir = values.dir ? resolve(values.dir) : resolve(REPO_ROOT, '..', 'shared', 'data', 'chest_xray_train');
  if (!values.synthetic && existsSync(dir)) {
    const files: string[] = [];
    const subdirs = ['NORMAL', 'PNEUMONIA'].map((c) => join(dir, c)).filter((d) => existsSync(d));
    for (const d of subdirs.length ? subdirs : [dir]) {
      const names = (await readdir(d))
        .filter((n) => /\.(jpe?g|png)$/i.test(n))
        .sort()
        .slice(0, 4);
      files.push(...names.map((n) => join(d, n)));
    }
    if (files.length) return { images: await Promise.all(files.map((f) => readFile(f))), source: `${files.length} files from ${dir}` };
    if (values.dir) throw new Error(`no JPEG/PNG images in ${dir}`);
  }
  const images = await Promise.all([1, 2, 3, 4].map((seed) => syntheticChest(seed)));
  return { images, source: '4 synthetic 1024x1024 JPEGs' };
}

function multipartBody(image: Buffer, boundary: string): Buffer {
  return Buffer.concat([
    Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="image"\r\nContent-Type: application/octet-stream\r\n\r\n`,
    ),
    image,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
}

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
async function settledRss(): Promise<number> {
  await new Promise((r) => setTimeout(r, 300));
  gc();
  await new Promise((r) => setTimeout(r, 200));
  return process.memoryUsage().rss;
}
const mb = (b: number) => +(b / (1024 * 1024)).toFixed(1);

async function main(): Promise<void> {
  const { images, source } = await loadImages();
  log(`images: ${source}; ${images.map((b) => `${Math.round(b.length / 1024)} KB`).join(', ')}`);
  // The settings of `pneumolens serve` / `npm start` (environment included) unless told otherwise.
  const env = serverOptionsFromEnv();
  const maxConcurrent = CONCURRENCY ?? env.maxConcurrent ?? defaultMaxConcurrent();
  const maxQueue = QUEUE ?? env.maxQueue ?? DEFAULT_MAX_QUEUE;
  // The engine of `npm start`: analyses in worker threads, one per concurrent analysis.
  const engine = await WorkerEngine.load({ threads: THREADS ?? threadsPerAnalysis(maxConcurrent), workers: maxConcurrent });
  const server = await serve({ ...env, engine, port: 0, host: '127.0.0.1', maxConcurrent, maxQueue });
  if (!server.url.startsWith('http://127.0.0.1:')) throw new Error(`refusing to load-test ${server.url}`);
  const boundary = 'pneumolens-loadtest-boundary';
  const requests = images.map((img) => ({
    method: 'POST',
    path: `/api/predict?cam=${values.cam}`,
    headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
    body: multipartBody(img, boundary),
  }));
  const run = (amount: number) => autocannon({ url: server.url, connections: CONNECTIONS, amount, requests, timeout: 30, pipelining: 1 });

  log(
    `server ${server.url}: ${engine.card.name} ${engine.card.version}, ${engine.threads} ORT threads, maxConcurrent ${maxConcurrent}, queue ${maxQueue}${QUEUE === undefined ? ' (default)' : ''}; ${CONNECTIONS} clients, cam=${values.cam}; load avg ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  const rss0 = await settledRss();
  log(`warm-up: ${WARMUP} requests...`);
  const first = await run(WARMUP);
  const rss1 = await settledRss();
  log(`main: ${REQUESTS - WARMUP} more requests...`);
  const second = await run(REQUESTS - WARMUP);
  const rss2 = await settledRss();
  await server.close();
  await engine.dispose();

  const growth = (rss2 - rss1) / rss1;
  const errors = first.errors + second.errors + first.timeouts + second.timeouts;
  const non2xx = first.non2xx + second.non2xx;
  const byStatus: Record<string, number> = {};
  for (const r of [first, second]) {
    for (const [code, { count }] of Object.entries(r.statusCodeStats ?? {})) byStatus[code] = (byStatus[code] ?? 0) + count;
  }
  const report = {
    model: `${engine.card.name} ${engine.card.version}`,
    images: source,
    connections: CONNECTIONS,
    cam: values.cam === 'true',
    max_concurrent: maxConcurrent,
    max_queue: maxQueue,
    queue_is_default: QUEUE === undefined && env.maxQueue === undefined,
    ort_threads: engine.threads,
    requests: first.requests.total + second.requests.total,
    // steady state = the run after the warm-up
    requests_per_s: +second.requests.average.toFixed(1),
    latency_ms: { p50: second.latency.p50, p90: second.latency.p90, p99: second.latency.p99, max: second.latency.max },
    warmup_latency_ms: { p50: first.latency.p50, p99: first.latency.p99 },
    errors,
    non2xx,
    by_status: byStatus,
    rss_mb: { start: mb(rss0), after_warmup: mb(rss1), after_all: mb(rss2), growth_pct: +(growth * 100).toFixed(1) },
  };
  const bar = { errors: errors === 0 && non2xx === 0, p99: second.latency.p99 < 2000, rss: growth < 0.15 };
  if (values.json) process.stdout.write(JSON.stringify({ ...report, bar }, null, 2) + '\n');
  else {
    process.stdout.write(
      [
        `model            ${report.model}`,
        `images           ${report.images}`,
        `clients          ${CONNECTIONS} (cam=${values.cam}), server maxConcurrent ${maxConcurrent}, queue ${maxQueue}, ${engine.threads} ORT threads`,
        `requests         ${report.requests} (${WARMUP} warm-up + ${REQUESTS - WARMUP})`,
        `throughput       ${report.requests_per_s} requests/s`,
        `latency          p50 ${report.latency_ms.p50} ms, p90 ${report.latency_ms.p90} ms, p99 ${report.latency_ms.p99} ms, max ${report.latency_ms.max} ms`,
        `errors           ${errors} (connection errors + timeouts), non-2xx ${non2xx} of ${report.requests} (${((100 * non2xx) / Math.max(1, report.requests)).toFixed(0)} %); by status ${JSON.stringify(byStatus)}`,
        `RSS              ${report.rss_mb.start} MB at start, ${report.rss_mb.after_warmup} MB after ${WARMUP}, ${report.rss_mb.after_all} MB after ${REQUESTS} (${report.rss_mb.growth_pct >= 0 ? '+' : ''}${report.rss_mb.growth_pct} %)`,
        `bar              errors ${bar.errors ? 'ok' : 'FAIL'}, p99 < 2 s ${bar.p99 ? 'ok' : 'FAIL'}, RSS growth < 15 % ${bar.rss ? 'ok' : 'FAIL'}`,
      ].join('\n') + '\n',
    );
  }
  if (!bar.errors || !bar.p99 || !bar.rss) process.exitCode = 1;
}

await main();
