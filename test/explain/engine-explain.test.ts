import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { colormapLut } from '../../src/explain/colormaps.ts';
import { gradCam, gradCamAlphas, weightedCam } from '../../src/explain/gradcam.ts';
import { blendOverlay, overlayBase, overlaySize, renderOverlay } from '../../src/explain/overlay.ts';
import { headLogit } from '../../src/model/session.ts';
import { PneumoError } from '../../src/errors.ts';

// Two channels of a 2x2 CAM layer.
const A = Float32Array.from([1, 2, 3, 4, 4, 3, 2, 1]);
const SHAPE = [2, 2, 2] as const;

describe('Grad-CAM (closed form for GAP + linear head)', () => {
  it('uses alpha_k = w_k / (h*w), ReLU and max-normalisation', () => {
    expect(Array.from(gradCamAlphas([1, -0.5], SHAPE))).toEqual([0.25, -0.125]);
    // raw = .25*A0 - .125*A1 = [-.25, .125, .5, .875] -> ReLU / .875
    const cam = gradCam(A, SHAPE, [1, -0.5]);
    expect(cam).toMatchObject({ width: 2, height: 2 });
    [0, 1 / 7, 4 / 7, 1].forEach((v, i) => expect(cam.map[i]).toBeCloseTo(v, 6));
  });

  it('is all zeros when every weighted sum is negative', () => {
    expect(Array.from(gradCam(A, SHAPE, [-1, -1]).map)).toEqual([0, 0, 0, 0]);
  });

  it('is invariant to a positive scale of the weights and checks shapes', () => {
    const a = gradCam(A, SHAPE, [1, -0.5]).map;
    const b = weightedCam(A, SHAPE, [10, -5]).map;
    a.forEach((v, i) => expect(b[i]).toBeCloseTo(v, 6));
    expect(() => gradCam(A, SHAPE, [1])).toThrow(/2 channel weights/);
    expect(() => gradCam(A.subarray(1), SHAPE, [1, 1])).toThrow(/8 feature values/);
  });

  it('head logit = sum_k w_k mean(A_k) + b', () => {
    expect(headLogit(A, SHAPE, [1, -0.5], 0.1)).toBeCloseTo(2.5 - 1.25 + 0.1, 12);
  });
});

describe('colormaps', () => {
  const rgb = (lut: Uint8Array, i: number) => Array.from(lut.subarray(i * 3, i * 3 + 3));
  const near = (got: number[], want: number[], tol: number) =>
    got.forEach((g, i) => expect(Math.abs(g - want[i])).toBeLessThanOrEqual(tol));

  it('jet endpoints and middle are exact (matplotlib definition)', () => {
    const jet = colormapLut('jet');
    expect(rgb(jet, 0)).toEqual([0, 0, 128]);
    expect(rgb(jet, 255)).toEqual([128, 0, 0]);
    // t = 128/255: r = (t - .35)/.31, g = 1, b = (.65 - t)/.31
    expect(rgb(jet, 128)).toEqual([125, 255, 122]);
  });

  it('viridis and inferno endpoints are within 5/255 of matplotlib', () => {
    near(rgb(colormapLut('viridis'), 0), [68, 1, 84], 5);
    near(rgb(colormapLut('viridis'), 255), [253, 231, 37], 5);
    near(rgb(colormapLut('inferno'), 0), [0, 0, 4], 5);
    near(rgb(colormapLut('inferno'), 255), [252, 255, 164], 5);
  });

  it('viridis and inferno luminance increases monotonically', () => {
    for (const name of ['viridis', 'inferno'] as const) {
      const lut = colormapLut(name);
      const lum = Array.from({ length: 256 }, (_, i) => 0.299 * lut[i * 3] + 0.587 * lut[i * 3 + 1] + 0.114 * lut[i * 3 + 2]);
      for (let i = 8; i < 256; i += 8) expect(lum[i]).toBeGreaterThan(lum[i - 8]);
    }
  });
});

describe('overlay', () => {
  const image = { data: new Float32Array(32 * 16).fill(100), width: 32, height: 16, channels: 1 as const };
  const base = { data: image.data, width: 32, height: 16 };
  const cam = { map: Float32Array.from([0, 1, 1, 0]), width: 2, height: 2 };

  it('alpha 0 shows only the image, alpha 1 only the colour-mapped CAM', () => {
    const plain = blendOverlay(base, cam, { alpha: 0 });
    expect(plain.rgb.every((v) => v === 100)).toBe(true);
    const heat = blendOverlay(base, cam, { alpha: 1, colormap: 'jet' });
    expect(Array.from(heat.rgb.subarray(0, 3))).toEqual([0, 0, 128]); // top-left is cam 0
    const last = (32 * 16 - 1) * 3; // bottom-right is cam 0 too, bottom-left/top-right 1
    expect(Array.from(heat.rgb.subarray(last, last + 3))).toEqual([0, 0, 128]);
    const topRight = 31 * 3;
    expect(Array.from(heat.rgb.subarray(topRight, topRight + 3))).toEqual([128, 0, 0]);
  });

  it('blends with the opacity', () => {
    const half = blendOverlay(base, { map: new Float32Array(4), width: 2, height: 2 }, { alpha: 0.5, colormap: 'jet' });
    expect(Array.from(half.rgb.subarray(0, 3))).toEqual([50, 50, 114]);
  });

  it('caps the longest side and encodes a PNG of that size', async () => {
    expect(overlaySize(2048, 1024, 1024)).toEqual({ width: 1024, height: 512 });
    expect(overlaySize(300, 200, 1024)).toEqual({ width: 300, height: 200 });
    const png = await renderOverlay(image, cam, { maxSide: 16, colormap: 'inferno' });
    const meta = await sharp(png).metadata();
    expect([meta.format, meta.width, meta.height, meta.channels]).toEqual(['png', 16, 8, 3]);
    const small = await overlayBase({ data: new Float32Array(64 * 32).fill(300), width: 64, height: 32, channels: 1 }, 16);
    expect([small.width, small.height, small.data[0]]).toEqual([16, 8, 255]); // clamped, then downscaled
  });

  it('rejects a bad opacity or colormap with 400', () => {
    for (const opts of [{ alpha: 1.2 }, { alpha: NaN }, { colormap: 'rainbow' as never }]) {
      expect(() => blendOverlay(base, cam, opts)).toThrow(PneumoError);
    }
  });
});
