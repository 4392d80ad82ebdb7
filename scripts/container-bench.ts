/**
 * Requests/s and latency of one running pneumolens server (a container or `npm start`), for the
 * README "Deploy" numbers: autocannon (a dev dependency) posts one committed X-ray with Grad-CAM on,
 * 100 requests of warm-up, then the measured run. Prints one line of JSON. Not a test.
 *
 *   npx tsx scripts/container-bench.ts URL [REQUESTS=1000] [CONNECTIONS=16]
 *
 * 16 connections fit the defaults of a 2-core server (2 analyses at once + a queue of 16), so no
 * request is refused; with more cores or a larger PNEUMOLENS_MAX_QUEUE, raise it.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { loadavg } from 'node:os';
import { join } from 'node:path';

interface CannonResult {
  requests: { total: number };
  latency: { p50: number; p99: number; max: number };
  errors: number;
  timeouts: number;
  non2xx: number;
  duration: number;
}
type Cannon = (opts: Record<string, unknown>) => Promise<CannonResult>;
const autocannon = createRequire(import.meta.url)('autocannon') as Cannon;

const [url, requestsArg = '1000', connectionsArg = '16'] = process.argv.slice(2);
if (!url) throw new Error('usage: npx tsx scripts/container-bench.ts URL [REQUESTS] [CONNECTIONS]');
const boundary = 'pneumolensbench';
const body = Buffer.concat([
  Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n`),
  readFileSync(join(import.meta.dirname, '../test/fixtures/golden/pneumonia_gray_224.png')),
  Buffer.from(`\r\n--${boundary}--\r\n`),
]);
const load = (amount: number) =>
  autocannon({
    url: `${url}/api/predict?cam=true`,
    method: 'POST',
    headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
    body,
    connections: Number(connectionsArg),
    amount,
    timeout: 60,
  });

await load(100);
const before = loadavg();
const r = await load(Number(requestsArg));
const fmt = (l: number[]) => l.map((x) => x.toFixed(2)).join(' ');
console.log(
  JSON.stringify({
    url,
    requests: r.requests.total,
    connections: Number(connectionsArg),
    requests_per_s: +(r.requests.total / r.duration).toFixed(1),
    p50_ms: r.latency.p50,
    p99_ms: r.latency.p99,
    max_ms: r.latency.max,
    errors: r.errors,
    timeouts: r.timeouts,
    non2xx: r.non2xx,
    loadavg_before: fmt(before),
    loadavg_after: fmt(loadavg()),
  }),
);
