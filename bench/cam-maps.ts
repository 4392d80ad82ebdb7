/**
 * Dumps, for every film of a list, the model's raw Grad-CAM accumulation acc(i,j) = sum_k alpha_k A_k(i,j)
 * (before any scale or clamp) with its logit, for the Grad-CAM spread study of issue 17.
 *
 *   npx tsx bench/cam-maps.ts --list files.json --out maps.json
 * files.json: [{ "path": ..., "source": ..., "label": 0|1 }, ...]
 */
import { readFile, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { camAccumulation, gradCamAlphas } from '../src/explain/gradcam.ts';
import { decodeImage } from '../src/image/decode.ts';
import { loadCard } from '../src/model/card.ts';
import { preprocess } from '../src/model/preprocess.ts';
import { ModelSession } from '../src/model/session.ts';

const { values } = parseArgs({ options: { list: { type: 'string' }, out: { type: 'string' } } });
const items: { path: string; source: string; label: number }[] = JSON.parse(await readFile(values.list!, 'utf8'));
const card = loadCard();
const session = await ModelSession.create(card.modelPath, card, {});
const { height: H, width: W } = card.input;
const out: unknown[] = [];
const B = 8;
for (let i = 0; i < items.length; i += B) {
  const chunk = items.slice(i, i + B);
  const inputs = await Promise.all(chunk.map(async (it) => preprocess((await decodeImage(await readFile(it.path))).image, card)));
  const batch = new Float32Array(chunk.length * H * W * card.input.channels);
  inputs.forEach((x, k) => batch.set(x, k * x.length));
  const o = await session.run(batch, chunk.length);
  const [C, h, w] = o.featureShape;
  const alphas = gradCamAlphas(card.gradcam.weights, o.featureShape);
  chunk.forEach((it, k) => {
    const acc = camAccumulation(o.features.subarray(k * C * h * w, (k + 1) * C * h * w), o.featureShape, alphas);
    out.push({ ...it, logit: o.logit[k], acc: Array.from(acc), grid: [h, w] });
  });
  if ((i / B) % 20 === 0) process.stderr.write(`cam-maps: ${Math.min(i + B, items.length)}/${items.length}\n`);
}
await writeFile(values.out!, JSON.stringify(out));
await session.dispose();
