/**
 * The engine over N training films in one call, for `node --cpu-prof` and for process CPU ms per
 * image (all threads), in one of three modes: `raw` (the ONNX session alone on ready tensors),
 * `nocam` (bytes -> probability) or `cam` (with the Grad-CAM overlay and heatmap PNGs). Each mode
 * runs twice, the second is reported. Like bench/profile-stages.ts it also runs in an older checkout.
 *
 *   node --import tsx [--cpu-prof --cpu-prof-dir DIR] bench/profile-run.ts [N=200] [raw|nocam|cam]
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { listImages } from '../src/cli/files.ts';
import { decodeImage } from '../src/image/decode.ts';
import { REPO_ROOT } from '../src/model/card.ts';
import { preprocess } from '../src/model/preprocess.ts';
import { ModelSession } from '../src/model/session.ts';
import { collect, Engine } from '../src/pipeline.ts';

const N = Number(process.argv[2] ?? 200);
const mode = process.argv[3] ?? 'cam';
const dir = process.env.BENCH_DIR ?? resolve(REPO_ROOT, '..', 'shared', 'data', 'chest_xray_train');
const files = [...(await listImages(join(dir, 'NORMAL'))).slice(0, N / 2), ...(await listImages(join(dir, 'PNEUMONIA'))).slice(0, N / 2)];
const bytes = await Promise.all(files.map((f) => readFile(f)));
const engine = await Engine.load({ maxBatch: 8 });
const measure = async (fn: () => Promise<void>) => {
  await fn();
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  await fn();
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return {
    wall_ms_per_img: +(wall / bytes.length).toFixed(2),
    cpu_ms_per_img: +((cpu.user + cpu.system) / 1000 / bytes.length).toFixed(2),
  };
};
if (mode === 'raw') {
  const session = await ModelSession.create(engine.card.modelPath, engine.card, { threads: engine.threads });
  const hw = engine.card.input.height * engine.card.input.width;
  const tensors: Float32Array[] = [];
  for (const b of bytes) tensors.push(preprocess((await decodeImage(b)).image, engine.card));
  const batches: Array<{ data: Float32Array; n: number }> = [];
  for (let i = 0; i < tensors.length; i += 8) {
    const part = tensors.slice(i, i + 8);
    const data = new Float32Array(part.length * hw);
    part.forEach((t, j) => data.set(t, j * hw));
    batches.push({ data, n: part.length });
  }
  console.log(
    mode,
    JSON.stringify(
      await measure(async () => {
        for (const b of batches) await session.run(b.data, b.n);
      }),
    ),
  );
  await session.dispose();
} else {
  const cam = mode === 'cam';
  console.log(
    mode,
    JSON.stringify(
      await measure(async () => {
        await collect(engine.analyseStream(bytes, { cam }));
      }),
    ),
  );
}
await engine.dispose();
