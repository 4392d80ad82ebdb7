/**
 * `npm run bench:web`: images per second of the full analysis (bytes -> probability, gate,
 * uncertainty, Grad-CAM and its PNGs), one image at a time, in Chromium on the device (the static
 * build, onnxruntime-web WASM SIMD, single- and multi-threaded), beside the Node engine's (one
 * thread and all cores) in the same run, on the same images. Also prints the largest difference of
 * the probabilities between the page and the Node engine. Prints numbers; not a test.
 *
 *   npm run bench:web -- [--dir DIR] [--n 24] [--rounds 2] [--threads 2]
 *
 * Images: --dir DIR, else ../shared/data/chest_xray_train when it exists, else the golden fixtures.
 * The page is served by a loopback static server with COOP/COEP, so it may run threads.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { buildWeb } from '../scripts/build-web.ts';
import { listImages } from '../src/cli/files.ts';
import { REPO_ROOT } from '../src/model/card.ts';
import { collect, Engine } from '../src/pipeline.ts';
import { launchChromium } from '../test/fixtures/browser.ts';
import { serveStatic } from '../test/fixtures/static-server.ts';

const { values } = parseArgs({
  options: {
    dir: { type: 'string' },
    n: { type: 'string', default: '24' },
    rounds: { type: 'string', default: '2' },
    threads: { type: 'string', default: String(Math.min(8, availableParallelism())) },
  },
});
const N = Number(values.n);
const ROUNDS = Number(values.rounds);
const MULTI = Number(values.threads);
for (const [k, v] of Object.entries({ n: N, rounds: ROUNDS, threads: MULTI })) {
  if (!Number.isInteger(v) || v < 1 || v > 1000) throw new Error(`--${k} must be a positive integer (at most 1000)`);
}
const log = (s: string): void => void process.stderr.write(`${s}\n`);
const LOAD_BEFORE = loadavg()
  .map((l) => l.toFixed(2))
  .join(' ');

async function images(): Promise<{ from: string; bytes: Buffer[] }> {
  const shared = resolve(REPO_ROOT, '..', 'shared', 'data', 'chest_xray_train');
  const dir = values.dir ?? (existsSync(shared) ? shared : undefined);
  if (!dir) {
    const golden = join(REPO_ROOT, 'test', 'fixtures', 'golden');
    const files = (await listImages(golden)).slice(0, N);
    return { from: golden, bytes: files.map((f) => readFileSync(f)) };
  }
  const classes = ['NORMAL', 'PNEUMONIA'].map((c) => join(dir, c)).filter((d) => existsSync(d));
  const lists = classes.length > 0 ? await Promise.all(classes.map(listImages)) : [await listImages(dir)];
  const picked: string[] = [];
  for (let i = 0; picked.length < N && lists.some((l) => i < l.length); i++)
    for (const l of lists) if (i < l.length && picked.length < N) picked.push(l[i]);
  return { from: dir, bytes: picked.map((f) => readFileSync(f)) };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

type Stages = Record<string, number>;

/** The median of each stage of the engine's timings_ms over the last round. */
function medianStages(all: Stages[]): Stages {
  const keys = [...new Set(all.flatMap((t) => Object.keys(t)))];
  return Object.fromEntries(keys.map((k) => [k, median(all.map((t) => t[k] ?? 0))]));
}

const stagesText = (s: Stages): string =>
  ['decode', 'preprocess', 'infer', 'explain'].map((k) => `${k} ${(s[k] ?? 0).toFixed(1)}`).join(', ') + ' ms';

async function nodeRate(bytes: Buffer[], threads: number): Promise<{ rate: number; probabilities: number[]; stages: Stages }> {
  const engine = await Engine.load({ threads });
  try {
    for (const b of bytes.slice(0, 2)) await collect(engine.analyseStream([b]));
    const rates: number[] = [];
    let probabilities: number[] = [];
    let stages: Stages[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const t0 = performance.now();
      const out: number[] = [];
      stages = [];
      for (const b of bytes) {
        const [o] = await collect(engine.analyseStream([b]));
        out.push(o.status === 'failed' ? NaN : o.result.probability);
        if (o.status !== 'failed') stages.push(o.result.timings_ms);
      }
      rates.push(bytes.length / ((performance.now() - t0) / 1000));
      probabilities = out;
    }
    return { rate: median(rates), probabilities, stages: medianStages(stages) };
  } finally {
    await engine.dispose();
  }
}

const { from, bytes } = await images();
log(`${bytes.length} images from ${from}; ${ROUNDS} rounds each; ${cpus().length} cores (${cpus()[0]?.model ?? '?'})`);
const out = mkdtempSync(join(tmpdir(), 'pneumolens-bench-web-'));
await buildWeb({ out });
// A page of its own, without the app (whose engine would fix the WASM threads first).
writeFileSync(join(out, 'bench.html'), '<!doctype html><title>bench</title>');
const site = await serveStatic(out, { isolated: true });
const browser = await launchChromium();
const rows: Array<{ what: string; rate: number; stages: Stages; dp?: number }> = [];
try {
  const node1 = await nodeRate(bytes, 1);
  rows.push({ what: 'Node engine (onnxruntime-node), 1 thread', rate: node1.rate, stages: node1.stages });
  const nodeN = await nodeRate(bytes, MULTI);
  rows.push({ what: `Node engine (onnxruntime-node), ${MULTI} threads`, rate: nodeN.rate, stages: nodeN.stages });
  for (const threads of [...new Set([1, MULTI])]) {
    const page = await (await browser.newContext()).newPage();
    await page.goto(`${site.url}/bench.html`);
    await page.addScriptTag({ type: 'module', content: "import * as m from '/device/device.js'; window.deviceModule = m;" });
    await page.waitForFunction(() => 'deviceModule' in window);
    const res = await page.evaluate(
      async ({ files, threads, rounds }) => {
        const { DeviceEngine } = (window as unknown as { deviceModule: { DeviceEngine: any } }).deviceModule;
        const eng = await DeviceEngine.load({ threads });
        const data = files.map((f: number[]) => new Uint8Array(f));
        for (const d of data.slice(0, 2)) await eng.analyse(d);
        const rates: number[] = [];
        let probabilities: number[] = [];
        let stages: Array<Record<string, number>> = [];
        for (let r = 0; r < rounds; r++) {
          const t0 = performance.now();
          const ps: number[] = [];
          stages = [];
          for (const d of data) {
            const o = await eng.analyse(d);
            ps.push(o.status === 'failed' ? NaN : o.result.probability);
            if (o.status !== 'failed') stages.push(o.result.timings_ms);
          }
          rates.push(data.length / ((performance.now() - t0) / 1000));
          probabilities = ps;
        }
        return { rates, probabilities, stages, runtime: eng.runtime as string };
      },
      { files: bytes.map((b) => Array.from(b)), threads, rounds: ROUNDS },
    );
    const dp = Math.max(...res.probabilities.map((p, i) => Math.abs(p - node1.probabilities[i])));
    rows.push({ what: `Chromium on the device (${res.runtime})`, rate: median(res.rates), stages: medianStages(res.stages), dp });
    await page.context().close();
  }
} finally {
  await browser.close();
  await site.close();
  rmSync(out, { recursive: true, force: true });
}
console.log(`\nload average before: ${LOAD_BEFORE}`);
console.log(`img/s, full analysis with Grad-CAM, one image at a time (median of ${ROUNDS} rounds of ${bytes.length} images)`);
for (const r of rows) {
  console.log(
    `  ${r.what.padEnd(70)} ${r.rate.toFixed(1).padStart(6)} img/s${r.dp === undefined ? '' : `   max |p - Node| ${r.dp.toExponential(1)}`}`,
  );
  console.log(`      median per image: ${stagesText(r.stages)}`);
}
console.log(
  `load average after: ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')} (1, 5, 15 min)`,
);
