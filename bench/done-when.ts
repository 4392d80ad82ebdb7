/**
 * The "Done when" table of issue 18, measured against a running server on loopback (start it with
 * `npm start`, defaults), its RSS sampled from /proc every 20 ms when --pid is given:
 *
 *   npx tsx bench/done-when.ts --url http://127.0.0.1:8080 --pid $(pgrep -f 'src/cli/main.ts serve' | head -1) [--json]
 *
 * Each row sends one hostile input (made in memory by test/fixtures/hostile.ts; nothing is written)
 * and reports the status, error code and time; then a legitimate request while two 1 KB JPEG 2000
 * files are analysed at once, the endless chunked upload, and the DNS-rebinding request. Bounded:
 * every request has a client timeout (60 s), the endless upload stops after 20 s or its answer.
 * Also importable: bench/attack.ts runs the same rows (doneWhen()).
 */
import http from 'node:http';
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { REPO_ROOT } from '../src/model/card.ts';
import {
  deflatedZeroDicom,
  endlessChunked,
  j2kZeroDicom,
  jpegDicomOf,
  jpegLsCutDicom,
  manyPageTiff,
  uncompressedTiff,
  zeroJpeg,
} from '../test/fixtures/hostile.ts';
const BOUNDARY = 'pneumolens-done-when';
const MULTIPART = `multipart/form-data; boundary=${BOUNDARY}`;
const GOLDEN = join(REPO_ROOT, 'test', 'fixtures', 'golden', 'normal_gray_200x240.png');

export interface Row {
  input: string;
  size: string;
  status: number;
  code: string;
  ms: number;
  want: string;
  ok: boolean;
}

export interface Answer {
  status: number;
  code: string;
  ms: number;
}

function body(data: Buffer, filename = 'image'): Buffer {
  return Buffer.concat([
    Buffer.from(
      `--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="${filename}"\r\nContent-Type: application/octet-stream\r\n\r\n`,
    ),
    data,
    Buffer.from(`\r\n--${BOUNDARY}--\r\n`),
  ]);
}

function post(base: URL, data: Buffer, headers: Record<string, string> = {}, timeoutMs = 60_000): Promise<Answer> {
  const t0 = performance.now();
  const payload = body(data);
  return new Promise((resolve) => {
    const req = http.request(
      new URL('/api/predict?cam=true', base),
      {
        method: 'POST',
        agent: false,
        timeout: timeoutMs,
        headers: { 'content-type': MULTIPART, 'content-length': String(payload.length), ...headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          let code: string;
          try {
            code = (JSON.parse(Buffer.concat(chunks).toString()) as { error?: { code?: string }; label?: string }).error?.code ?? '';
          } catch {
            code = '(not JSON)';
          }
          resolve({ status: res.statusCode ?? 0, code, ms: Math.round(performance.now() - t0) });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('client timeout')));
    req.on('error', (e: NodeJS.ErrnoException) =>
      resolve({ status: 0, code: e.code ?? e.message, ms: Math.round(performance.now() - t0) }),
    );
    req.end(payload);
  });
}

/** A chunked multipart upload whose file part never ends: 256 KB chunks as fast as the socket takes them, until an answer or `limitMs`. */
async function endlessUpload(base: URL, limitMs: number): Promise<Answer & { sentMb: number }> {
  // The request head, then the start of the file part as the first chunk, then chunks of 'A' forever.
  const part = Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x.dcm"\r\n\r\n`);
  const head = Buffer.concat([
    Buffer.from(
      `POST /api/predict?cam=false HTTP/1.1\r\nHost: ${base.host}\r\nContent-Type: ${MULTIPART}\r\nTransfer-Encoding: chunked\r\n\r\n`,
    ),
    Buffer.from(`${part.length.toString(16)}\r\n`),
    part,
    Buffer.from('\r\n'),
  ]);
  const r = await endlessChunked(Number(base.port), base.hostname, head, Buffer.alloc(256 * 1024, 0x41), limitMs);
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(r.text)?.[1] ?? 0);
  const code = /"code":"([a-z_]+)"/.exec(r.text)?.[1] ?? (status ? '' : 'no answer');
  return { status, code, ms: Math.round(r.ms), sentMb: Math.round(r.sent / 1024 / 1024) };
}

function rssSampler(pid: number | undefined): { stop(): number | null } {
  if (pid === undefined) return { stop: () => null };
  const read = () => {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
      return m ? Number(m[1]) / 1024 : 0;
    } catch {
      return 0;
    }
  };
  let peak = read();
  const timer = setInterval(() => (peak = Math.max(peak, read())), 20);
  return {
    stop: () => {
      clearInterval(timer);
      return Math.round(peak);
    },
  };
}

/** Inputs that take long to encode are kept in $TMPDIR/pneumolens-hostile between runs (never in the repository). */
async function cached(name: string, make: () => Promise<Buffer>): Promise<Buffer> {
  const dir = `${tmpdir()}/pneumolens-hostile`;
  const path = `${dir}/${name}`;
  if (existsSync(path)) return readFileSync(path);
  const b = await make();
  mkdirSync(dir, { recursive: true });
  writeFileSync(path, b);
  return b;
}

const kb = (b: Buffer) => (b.length >= 1024 * 1024 ? `${(b.length / 1024 / 1024).toFixed(1)} MB` : `${(b.length / 1024).toFixed(1)} KB`);

/** The rows of the table, in order; each with the bound (`want`) and whether it holds. */
export async function doneWhen(
  base: URL,
  pid?: number,
  log: (s: string) => void = () => undefined,
): Promise<{ rows: Row[]; peakRssMb: number | null }> {
  log('building the hostile inputs (the 6688x6688 JPEG 2000 encode takes ~15 s)...');
  const j2k = await cached('j2k-6688-rgb.dcm', () => j2kZeroDicom({ width: 6688, height: 6688, samples: 3, bits: 8 }));
  const deflated = deflatedZeroDicom({ width: 6688, height: 6688, samples: 3, bits: 8 });
  const deflated16 = deflatedZeroDicom({ width: 7000, height: 7000, samples: 1, bits: 16 });
  const jpeg = await zeroJpeg(6688);
  const jls = await cached('jls-6688-16-cut10.dcm', () => jpegLsCutDicom({ width: 6688, height: 6688, samples: 1, bits: 16 }, 0.1));
  const half = (await jpegDicomOf(GOLDEN, 0.5)).file;
  const tiff = manyPageTiff(150_000);
  const tiffFull = await uncompressedTiff(GOLDEN);
  const tiffShort = tiffFull.subarray(0, Math.floor(tiffFull.length * 0.95));
  const legit = readFileSync(GOLDEN);
  const rows: Row[] = [];
  const rss = rssSampler(pid);
  const add = (input: string, data: Buffer | string, a: Answer, want: string, ok: boolean) => {
    const r = { input, size: typeof data === 'string' ? data : kb(data), ...a, want, ok };
    rows.push(r);
    log(
      `  ${input.padEnd(58)} ${r.size.padStart(8)}  ${String(a.status).padStart(3)} ${a.code.padEnd(20)} ${String(a.ms).padStart(6)} ms  want ${want}: ${ok ? 'yes' : 'NO'}`,
    );
  };
  const is4xx = (a: Answer) => a.status >= 400 && a.status < 500;
  const within = (a: Answer, s: number) => is4xx(a) && a.ms <= s * 1000;
  const send = async (input: string, data: Buffer, want: string, okf: (a: Answer) => boolean) => {
    const a = await post(base, data);
    add(input, data, a, want, okf(a));
  };
  await send('legitimate X-ray (golden PNG), for reference', legit, '200', (a) => a.status === 200);
  await send('JPEG 2000 DICOM of zeros declaring 6688x6688 RGB', j2k, '4xx within 3 s', (a) => within(a, 3));
  await send('deflated DICOM of zeros, 6688x6688 RGB', deflated, '4xx within 3 s', (a) => within(a, 3));
  await send('deflated DICOM of zeros, 7000x7000 16-bit', deflated16, '4xx within 3 s', (a) => within(a, 3));
  await send('JPEG of zeros, 6688x6688', jpeg, '4xx within 3 s', (a) => within(a, 3));
  await send('JPEG-LS DICOM 6688x6688 16-bit, codestream cut at 10%', jls, '4xx within 3 s', (a) => within(a, 3));
  await send('JPEG-baseline DICOM holding half its codestream', half, '4xx', is4xx);
  await send('uncompressed TIFF missing its last 5%', tiffShort, '4xx', is4xx);
  await send('TIFF with 150,000 page headers', tiff, '4xx within 3 s', (a) => within(a, 3));
  {
    const bombs = [post(base, j2k), post(base, j2k)];
    await new Promise((r) => setTimeout(r, 300));
    const a = await post(base, legit);
    add('legitimate X-ray while two 1 KB JPEG 2000 files are analysed', legit, a, '200 within 3 s', a.status === 200 && a.ms <= 3000);
    const b = await Promise.all(bombs);
    add(
      '  (the two JPEG 2000 files)',
      j2k,
      { status: b[0].status, code: `${b[0].code}, ${b[1].status} ${b[1].code}`, ms: Math.max(b[0].ms, b[1].ms) },
      '4xx',
      b.every(is4xx),
    );
  }
  {
    const a = await endlessUpload(base, 20_000);
    add(`endless chunked upload (${a.sentMb} MB sent)`, 'endless', a, '413 within 5 s', a.status === 413 && a.ms <= 5000);
  }
  {
    const host = `a.evil:${base.port}`;
    const a = await post(base, legit, { host, origin: `http://${host}` });
    add('DNS rebinding: Host and Origin a.evil:PORT', legit, a, '4xx', is4xx(a));
  }
  const peakRssMb = rss.stop();
  log(`peak RSS of the server: ${peakRssMb ?? 'n/a (no --pid)'} MB (want < 1024)`);
  return { rows, peakRssMb };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      url: { type: 'string', default: 'http://127.0.0.1:8080' },
      pid: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  const base = new URL(values.url!);
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(base.hostname)) throw new Error('loopback only');
  const log = (s: string) => void process.stderr.write(s + '\n');
  log(
    `load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  const out = await doneWhen(base, values.pid ? Number(values.pid) : undefined, log);
  log(
    `load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  if (values.json) process.stdout.write(JSON.stringify(out, null, 2) + '\n');
  setTimeout(() => process.exit(0), 500).unref();
}
