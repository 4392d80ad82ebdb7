/**
 * The engine's PNG encoding of a Grad-CAM overlay + heatmap against sharp's (compressionLevel 4,
 * the setting before issue 22), interleaved in rounds: process CPU ms per pair (encoding runs in
 * the thread pool; process CPU counts it) and the sizes. Real training films, a synthetic CAM.
 *
 *   npx tsx bench/png-ab.ts [--dir DIR] [--rounds 6] [--reps 40]
 */
import { readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { colormapLut } from '../src/explain/colormaps.ts';
import { gradCam } from '../src/explain/gradcam.ts';
import { blendOverlay, heatmapIndex, heatmapRgba, overlayBase } from '../src/explain/overlay.ts';
import { decodeImage } from '../src/image/decode.ts';
import { encodePngFast, encodePngIndexed } from '../src/image/png-encode.ts';
import { REPO_ROOT } from '../src/model/card.ts';

const { values } = parseArgs({
  options: { dir: { type: 'string' }, rounds: { type: 'string', default: '6' }, reps: { type: 'string', default: '40' } },
});
const dir = values.dir ?? resolve(REPO_ROOT, '..', 'shared', 'data', 'chest_xray_train', 'NORMAL');
const file = join(dir, readdirSync(dir).filter((f) => /\.(jpe?g|png)$/i.test(f))[0]);
const image = (await decodeImage(await readFile(file))).image;
const base = await overlayBase(image);
const { width: W, height: H } = base;
const C = 8;
const cam = gradCam(
  Float32Array.from({ length: C * 49 }, (_, k) => Math.max(0, Math.sin(k / 3))),
  [C, 7, 7],
  Array.from({ length: C }, (_, k) => (k % 3) - 0.8),
);
const heat = heatmapRgba(cam, W, H);
const overlay = new Uint8Array(blendOverlay(base, cam, {}, heat).rgb.buffer);
const index = heatmapIndex(cam, W, H);
const lut = colormapLut('jet');

const candidates: Record<string, () => Promise<[Buffer, Buffer]>> = {
  'sharp compressionLevel 4 (before)': () =>
    Promise.all([
      sharp(overlay, { raw: { width: W, height: H, channels: 3 } })
        .png({ compressionLevel: 4 })
        .toBuffer(),
      sharp(new Uint8Array(heat.buffer), { raw: { width: W, height: H, channels: 4 } })
        .png({ compressionLevel: 4 })
        .toBuffer(),
    ]),
  'png-encode (Up + Huffman; indexed heatmap)': () => Promise.all([encodePngFast(overlay, W, H, 3), encodePngIndexed(index, W, H, lut)]),
};
const ROUNDS = Number(values.rounds);
const REPS = Number(values.reps);
const cpu: Record<string, number[]> = {};
const size: Record<string, [number, number]> = {};
const load0 = loadavg()[0];
for (let round = 0; round <= ROUNDS; round++) {
  for (const [name, run] of Object.entries(candidates)) {
    const c0 = process.cpuUsage();
    let last: [Buffer, Buffer] = await run();
    for (let i = 1; i < REPS; i++) last = await run();
    const c = process.cpuUsage(c0);
    if (round > 0) (cpu[name] ??= []).push((c.user + c.system) / 1000 / REPS); // round 0 warms up
    size[name] = [last[0].length, last[1].length];
  }
}
console.log(
  `${file} -> ${W}x${H} overlay + heatmap, ${ROUNDS} rounds x ${REPS}, load avg ${load0.toFixed(2)} -> ${loadavg()[0].toFixed(2)}`,
);
for (const [name, xs] of Object.entries(cpu)) {
  xs.sort((a, b) => a - b);
  console.log(
    `${name.padEnd(44)} ${xs[xs.length >> 1].toFixed(2)} CPU ms per pair (min ${xs[0].toFixed(2)}); overlay ${size[name][0]} B, heatmap ${size[name][1]} B`,
  );
}
