/**
 * CPU ms per image of each stage of the engine's path, one stage at a time over N training films
 * (process CPU time, thread pool included), for the "where the time goes" table of README Benchmarks.
 * Runs on the tree it is in, against the public functions: gray_bt601 is computed once and shared by
 * the checks, preprocessing and overlay, as the engine does.
 *
 *   npx tsx bench/profile-stages.ts [N=100] [--dir DIR]
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { listImages } from '../src/cli/files.ts';
import { gradCam } from '../src/explain/gradcam.ts';
import * as overlay from '../src/explain/overlay.ts';
import * as checks from '../src/gate/image-checks.ts';
import { decodeImage } from '../src/image/decode.ts';
import { loadCard, REPO_ROOT } from '../src/model/card.ts';
import * as pre from '../src/model/preprocess.ts';
import { grayOf } from '../src/image/raw.ts';

const N = Number(process.argv[2] ?? 100);
const dirArg = process.argv.indexOf('--dir');
const dir = dirArg > 0 ? process.argv[dirArg + 1] : resolve(REPO_ROOT, '..', 'shared', 'data', 'chest_xray_train');
const files = [...(await listImages(join(dir, 'NORMAL'))).slice(0, N / 2), ...(await listImages(join(dir, 'PNEUMONIA'))).slice(0, N / 2)];
const bytes = await Promise.all(files.map((f) => readFile(f)));
const card = loadCard();
const out: Record<string, number> = {};
async function stage<T>(name: string, fn: (i: number) => T | Promise<T>): Promise<T[]> {
  for (let i = 0; i < Math.min(10, bytes.length); i++) await fn(i); // warm-up
  const c0 = process.cpuUsage();
  const r: T[] = [];
  for (let i = 0; i < bytes.length; i++) r.push(await fn(i));
  const c = process.cpuUsage(c0);
  out[name] = +((c.user + c.system) / 1000 / bytes.length).toFixed(3);
  return r;
}
const dec = await stage('decode (sharp, to RawImage)', (i) => decodeImage(bytes[i]));
const grays = await stage('gray_bt601 (once, shared)', (i) => grayOf(dec[i].image));
await stage('gate image checks', (i) => checks.checkImage(dec[i].image, grays[i]));
await stage('preprocess (resize + normalise)', (i) => pre.preprocess(dec[i].image, card, grays[i]));
const C = card.gradcam.weights.length;
const feats = Float32Array.from({ length: C * 49 }, (_, k) => Math.max(0, Math.sin(k / 7)));
const cams = await stage('Grad-CAM map (7x7)', () => gradCam(feats, [C, 7, 7], card.gradcam.weights));
await stage('overlay + heatmap PNGs', (i) =>
  overlay.renderCam(dec[i].image, cams[i], { ...overlay.resolveOverlayOptions({}), heatmap: true, rgb: false }, grays[i]),
);
await stage('overlay PNG only', (i) =>
  overlay.renderCam(dec[i].image, cams[i], { ...overlay.resolveOverlayOptions({}), heatmap: false, rgb: false }, grays[i]),
);
const first = dec[0].image;
console.log(
  JSON.stringify({
    images: bytes.length,
    size: `${first.width}x${first.height}x${first.channels}`,
    cpu_ms_per_img: out,
  }),
);
