/**
 * Throughput benchmark, all in one run on the same images:
 *   (a) raw ONNX Runtime session on ready (preprocessed) tensors,
 *   (b) the full pipeline, file bytes -> probability, Grad-CAM off,
 *   (c) the same with Grad-CAM and the overlay PNG,
 * plus single-image latency p50/p95 of (c), and for each path the process CPU time per image (all
 * threads: ONNX Runtime's, libuv's) with the load average while it ran, so that runs on a shared
 * machine can be compared by cost. Files are read into memory first, so disk I/O is not timed.
 * Prints numbers; not a test.
 *
 * The three are measured in interleaved rounds (a b c a b c ...), and the ratios b/a and c/a are
 * the median of the per-round ratios, with their range: on a shared machine a burst of load
 * during one measurement then moves one round's ratio, not the result (measured once each in
 * sequence, b/a read 1.88 in one run and 0.78 in the next).
 *
 *   npm run bench -- [--dir DIR | --synthetic] [--n 300] [--rounds 5] [--batch 8] [--threads T] [--latency 60] [--inline] [--json]
 *
 * (a) is always onnxruntime-node on this thread; the engine's session runs in a thread of its own
 * (the default, src/model/runtime.ts) or, with --inline, on this thread as well.
 *
 * Images: --dir DIR, else ../shared/data/chest_xray_train when it exists, else synthetic JPEGs.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { listImages } from '../src/cli/files.ts';
import { decodeImage } from '../src/image/decode.ts';
import { REPO_ROOT } from '../src/model/card.ts';
import { preprocess } from '../src/model/preprocess.ts';
import { inlineRuntime } from '../src/model/runtime.ts';
import { ModelSession } from '../src/model/session.ts';
import { collect, Engine, resultOrError } from '../src/pipeline.ts';
import { quantile } from '../src/eval/metrics.ts';
import { crand } from '../test/fixtures/synthetic.ts';

const { values } = parseArgs({
  options: {
    dir: { type: 'string' },
    n: { type: 'string', default: '300' },
    rounds: { type: 'string', default: '5' },
    batch: { type: 'string', default: '8' },
    threads: { type: 'string' },
    latency: { type: 'string', default: '60' },
    json: { type: 'boolean', default: false },
    synthetic: { type: 'boolean', default: false },
    inline: { type: 'boolean', default: false },
  },
});
const N = Number(values.n);
const ROUNDS = Number(values.rounds);
const BATCH = Number(values.batch);
const LATENCY_N = Number(values.latency);
const threads = values.threads === undefined ? undefined : Number(values.threads);
for (const [k, v] of Object.entries({ n: N, rounds: ROUNDS, batch: BATCH, latency: LATENCY_N })) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${k} must be a positive integer`);
}

const log = (s: string): void => void process.stderr.write(s + '\n');

/** Up to n files, alternating the classes of a DIR/{NORMAL,PNEUMONIA} layout when there is one. */
async function pickFiles(dir: string, n: number): Promise<string[]> {
  const classes = ['NORMAL', 'PNEUMONIA'].map((c) => join(dir, c)).filter((d) => existsSync(d));
  const lists = classes.length > 0 ? await Promise.all(classes.map(listImages)) : [await listImages(dir)];
  const out: string[] = [];
  for (let i = 0; out.length < n && lists.some((l) => i < l.length); i++) {
    for (const l of lists) if (i < l.length && out.length < n) out.push(l[i]);
  }
  return out;
}

/** Chest-like synthetic images: a dark background, two bright lung fields, ribs and noise. */
async function synthesize(n: number): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  const W = 512;
  const H = 512;
  const rnd = crand(1);
  for (let k = 0; k < n; k++) {
    const px = Buffer.alloc(W * H);
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const lung = Math.exp(-(((Math.abs(x - W / 2) - W / 5) / (W / 8)) ** 2) - ((y - H / 2) / (H / 3)) ** 2);
        const rib = 0.15 * Math.max(0, Math.sin(y / 9 + k));
        px[y * W + x] = Math.max(0, Math.min(255, 40 + 150 * (1 - lung) * 0.6 + 120 * lung * rib + 25 * rnd()));
      }
    }
    out.push(
      await sharp(px, { raw: { width: W, height: H, channels: 1 } })
        .jpeg({ quality: 90 })
        .toBuffer(),
    );
  }
  return out;
}

async function timeit(fn: () => Promise<void>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/** One measurement: wall seconds, process CPU seconds (every thread: ORT's, libuv's, workers') and the 1-min load average around it. */
interface Measured {
  wall: number;
  cpu: number;
  load: number;
}

async function measure(fn: () => Promise<void>): Promise<Measured> {
  const load0 = loadavg()[0];
  const c0 = process.cpuUsage();
  const wall = await timeit(fn);
  const c = process.cpuUsage(c0);
  return { wall, cpu: (c.user + c.system) / 1e6, load: (load0 + loadavg()[0]) / 2 };
}

async function main(): Promise<void> {
  const defaultDir = resolve(REPO_ROOT, '..', 'shared', 'data', 'chest_xray_train');
  const dir = values.synthetic ? undefined : (values.dir ?? (existsSync(defaultDir) ? defaultDir : undefined));
  let bytes: Uint8Array[];
  let source: string;
  if (dir !== undefined) {
    const files = await pickFiles(dir, N);
    if (files.length === 0) throw new Error(`no images under ${dir}`);
    bytes = await Promise.all(files.map((f) => readFile(f)));
    source = `${files.length} files from ${dir}`;
  } else {
    bytes = await synthesize(N);
    source = `${N} synthetic 512x512 JPEGs`;
  }
  log(`bench: ${source}, batch ${BATCH}`);

  const engine = await Engine.load({
    maxBatch: BATCH,
    ...(threads !== undefined ? { threads } : {}),
    ...(values.inline ? { runtime: inlineRuntime } : {}),
  });
  const card = engine.card;
  // Engine keeps its session private: (a) uses a second session on the same model file, card and
  // thread count, run one at a time with the engine's, on this thread (onnxruntime-node as it
  // comes, no message passing): the fastest the model runs here. The engine's own session runs in
  // a thread of its own (src/model/runtime.ts), or on this thread too with --inline.
  const session = await ModelSession.create(card.modelPath, card, { threads: engine.threads, runtime: inlineRuntime });
  const hw = card.input.height * card.input.width;

  // (a) preprocess everything once (untimed), then time only the session on batches
  const tensors: Float32Array[] = [];
  for (const b of bytes) tensors.push(preprocess((await decodeImage(b)).image, card));
  const batches: Array<{ data: Float32Array; n: number }> = [];
  for (let i = 0; i < tensors.length; i += BATCH) {
    const part = tensors.slice(i, i + BATCH);
    const data = new Float32Array(part.length * hw);
    part.forEach((t, j) => data.set(t, j * hw));
    batches.push({ data, n: part.length });
  }
  // The whole set in one call: the engine runs it in batches of BATCH (maxBatch) and decodes the
  // next batch while the current one is in ONNX Runtime, as the CLI does for a folder.
  const chunks = (cam: boolean) => async (): Promise<void> => {
    const res = (await collect(engine.analyseStream(bytes, { cam }))).map(resultOrError);
    const bad = res.find((r) => r instanceof Error);
    if (bad) throw bad;
  };

  // warm-up of each path on one batch
  await session.run(batches[0].data, batches[0].n);
  await collect(engine.analyseStream(bytes.slice(0, BATCH), { cam: true }));

  const load0 = loadavg()[0];
  const raw = async (): Promise<void> => {
    for (const b of batches) await session.run(b.data, b.n);
  };
  const rounds: Array<{ a: number; b: number; c: number }> = [];
  const detail: Array<Record<'a' | 'b' | 'c', Measured>> = [];
  for (let k = 1; k <= ROUNDS; k++) {
    log(`bench: round ${k}/${ROUNDS}: (a) raw session, (b) pipeline, (c) pipeline + Grad-CAM ...`);
    const m = { a: await measure(raw), b: await measure(chunks(false)), c: await measure(chunks(true)) };
    detail.push(m);
    rounds.push({ a: m.a.wall, b: m.b.wall, c: m.c.wall });
  }
  const median = (xs: number[]): number =>
    quantile(
      [...xs].sort((x, y) => x - y),
      0.5,
    );
  const spread = (xs: number[]) => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs), rounds: xs });
  const ba = spread(rounds.map((r) => r.a / r.b));
  const ca = spread(rounds.map((r) => r.a / r.c));
  const [ta, tb, tc] = (['a', 'b', 'c'] as const).map((key) => median(rounds.map((r) => r[key])));
  log(`bench: latency of (c), ${Math.min(LATENCY_N, bytes.length)} single images ...`);
  const lat: number[] = [];
  for (const b of bytes.slice(0, LATENCY_N)) lat.push((await timeit(async () => void (await engine.analyse(b, { cam: true })))) * 1000);
  lat.sort((x, y) => x - y);
  // (a) at batch 1, the same images: the model's own latency, which (c)'s single-image p50 is compared with
  const latA: number[] = [];
  for (const t of tensors.slice(0, LATENCY_N)) latA.push((await timeit(async () => void (await session.run(t, 1)))) * 1000);
  latA.sort((x, y) => x - y);
  const load1 = loadavg()[0];
  await engine.dispose();
  await session.dispose();

  const n = bytes.length;
  // CPU ms per image of each path (median over the rounds) and the load average while it ran: on a
  // shared machine the CPU cost is what compares across runs, the ratios of wall times less so.
  const perPath = (key: 'a' | 'b' | 'c') => ({
    cpu_ms_per_image: median(detail.map((d) => (d[key].cpu / n) * 1000)),
    wall_ms_per_image: median(detail.map((d) => (d[key].wall / n) * 1000)),
    loadavg_1m: median(detail.map((d) => d[key].load)),
  });
  const cpu = { a: perPath('a'), b: perPath('b'), c: perPath('c') };
  const r = {
    images: n,
    source,
    batch: BATCH,
    threads: session.threads,
    engine_runtime: engine.runtimeName,
    model: `${card.name} ${card.version}`,
    gflops_per_image: card.gflops_per_image ?? null,
    a_raw_session_img_s: n / ta,
    b_pipeline_img_s: n / tb,
    c_pipeline_cam_img_s: n / tc,
    rounds: ROUNDS,
    /** Median over the rounds of each round's ratio, with the range and every round's value. */
    ratio_b_over_a: ba,
    ratio_c_over_a: ca,
    latency_c_ms: { p50: quantile(lat, 0.5), p95: quantile(lat, 0.95), n: lat.length },
    latency_a_batch1_ms: { p50: quantile(latA, 0.5), p95: quantile(latA, 0.95), n: latA.length },
    /** The goal of issue 22: at most 1.3. */
    latency_p50_c_over_a_batch1: quantile(lat, 0.5) / quantile(latA, 0.5),
    /** Per path: process CPU ms per image (all threads), wall ms per image, 1-min load average during it; medians over the rounds. */
    cpu,
    /** Pipeline CPU beyond the model's, per image: (b) - (a) and (c) - (a). */
    overhead_cpu_ms_per_image: { b: cpu.b.cpu_ms_per_image - cpu.a.cpu_ms_per_image, c: cpu.c.cpu_ms_per_image - cpu.a.cpu_ms_per_image },
    machine: {
      cpu: cpus()[0]?.model ?? 'unknown',
      cores: availableParallelism(),
      memory_gib: Math.round(totalmem() / 2 ** 30),
      node: process.version,
      loadavg_1m_before: load0,
      loadavg_1m_after: load1,
    },
  };
  if (values.json) {
    process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    return;
  }
  const f = (x: number): string => x.toFixed(1);
  const ratio = (x: { median: number; min: number; max: number }): string =>
    `${x.median.toFixed(3)} (range ${x.min.toFixed(3)}-${x.max.toFixed(3)}, ${ROUNDS} rounds)`;
  process.stdout.write(
    [
      `pneumolens bench: ${r.model}, ${source}`,
      `machine: ${r.machine.cpu}, ${r.machine.cores} cores, ${r.machine.memory_gib} GiB, node ${r.machine.node}, ORT threads ${r.threads}, load avg ${f(load0)} -> ${f(load1)}`,
      `engine's session: ${r.engine_runtime}; (a): ${session.runtimeName}`,
      `batch ${BATCH}${r.gflops_per_image !== null ? `, ${r.gflops_per_image} GFLOPs/image` : ''}; ${ROUNDS} interleaved rounds (a b c a b c ...), img/s of the median round, ratios = median of per-round ratios`,
      `(a) raw ONNX session on tensors   ${f(r.a_raw_session_img_s).padStart(8)} img/s${r.gflops_per_image !== null ? `  (${f(r.a_raw_session_img_s * r.gflops_per_image)} GFLOP/s)` : ''}`,
      `(b) pipeline bytes -> prob        ${f(r.b_pipeline_img_s).padStart(8)} img/s   b/a = ${ratio(r.ratio_b_over_a)}`,
      `(c) pipeline + Grad-CAM overlay   ${f(r.c_pipeline_cam_img_s).padStart(8)} img/s   c/a = ${ratio(r.ratio_c_over_a)}`,
      `(c) single-image latency          p50 ${f(r.latency_c_ms.p50)} ms, p95 ${f(r.latency_c_ms.p95)} ms (n=${r.latency_c_ms.n})`,
      `(a) at batch 1, latency           p50 ${f(r.latency_a_batch1_ms.p50)} ms, p95 ${f(r.latency_a_batch1_ms.p95)} ms; (c) p50 / (a) p50 = ${r.latency_p50_c_over_a_batch1.toFixed(2)}`,
      `CPU per image (process, all threads; median round) and 1-min load average during each:`,
      ...(['a', 'b', 'c'] as const).map(
        (k) =>
          `  (${k}) ${cpu[k].cpu_ms_per_image.toFixed(2).padStart(6)} CPU ms  ${cpu[k].wall_ms_per_image.toFixed(2).padStart(6)} wall ms  load ${cpu[k].loadavg_1m.toFixed(2)}`,
      ),
      `  pipeline beyond the model: (b)-(a) ${r.overhead_cpu_ms_per_image.b.toFixed(2)} CPU ms, (c)-(a) ${r.overhead_cpu_ms_per_image.c.toFixed(2)} CPU ms per image`,
    ].join('\n') + '\n',
  );
}

await main();
