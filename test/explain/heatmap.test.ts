/**
 * The heatmap is drawn once (issue 12 item 5): src/explain/overlay.ts renders the colour-mapped
 * heatmap; the server's overlay blends exactly those pixels, the API serves them as `heatmap`, and
 * the page only blends that image (it has no colour map or upsampling of its own).
 */
import { readFileSync } from 'node:fs';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { COLORMAPS } from '../../src/explain/colormaps.ts';
import { heatmapRgba } from '../../src/explain/overlay.ts';
import { decodeImage } from '../../src/image/decode.ts';
import { tinyEngine } from '../fixtures/tiny-model.ts';
import { texturedGrayPng } from '../fixtures/non-cxr.ts';
import { useApp } from '../fixtures/app.ts';

const t = useApp(() => tinyEngine());
const png = texturedGrayPng(40, 48, 3, 0, 120);

const raw = async (p: Uint8Array) => {
  const { data, info } = await sharp(p).raw().toBuffer({ resolveWithObject: true });
  return { data, ...info };
};

describe('one heatmap renderer', () => {
  it.each(COLORMAPS)('%s: the overlay is the served heatmap blended over the image', async (colormap) => {
    const alpha = 0.6;
    const r = await t.engine.analyse(png, { colormap, alpha });
    const cam = { map: r.cam!.map, width: r.cam!.mapWidth, height: r.cam!.mapHeight };
    const heat = await raw(r.cam!.heatmapPng!); // an indexed-colour PNG: opaque RGB when decoded
    expect([heat.width, heat.height, heat.channels]).toEqual([40, 48, 3]);
    const rgba = heatmapRgba(cam, 40, 48, colormap);
    expect(Buffer.from(heat.data)).toEqual(Buffer.from(rgba.filter((_, i) => i % 4 !== 3)));
    expect(rgba.every((v, i) => i % 4 !== 3 || v === 255)).toBe(true);
    const overlay = await raw(r.cam!.overlayPng);
    const gray = (await decodeImage(png)).image.data;
    let worst = 0;
    for (let p = 0; p < 40 * 48; p++) {
      for (let c = 0; c < 3; c++) {
        const expected = gray[p] * (1 - alpha) + alpha * heat.data[p * 3 + c];
        worst = Math.max(worst, Math.abs(overlay.data[p * 3 + c] - expected));
      }
    }
    expect(worst).toBeLessThanOrEqual(0.5 + 1e-9);
  });

  it('the API serves that heatmap beside the overlay', async () => {
    const res = await t.predict(png, '?colormap=inferno');
    const body = res.json();
    const r = await t.engine.analyse(png, { colormap: 'inferno' });
    expect(body.heatmap).toBe(`data:image/png;base64,${r.cam!.heatmapPng!.toString('base64')}`);
    expect(body.gradcam).toMatch(/^data:image\/png;base64,/);
  });

  it('the page has no colour map or upsampling of its own', () => {
    const page = readFileSync(new URL('../../web/app.js', import.meta.url), 'utf8');
    expect(page).not.toMatch(/#440154|#000004|Math\.abs\(4 \* v|createImageData|gradcam_map\.data|\bfunction colour\b/);
    expect(page).toMatch(/result\.heatmap/);
  });
});
