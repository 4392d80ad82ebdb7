import { describe, expect, it } from 'vitest';
import { antialiasWeights, resizeAntialias, upsampleBilinear } from '../../src/image/resample.ts';
import type { PreprocessingSpec } from '../../src/model/card.ts';
import { toGray } from '../../src/image/raw.ts';
import { letterboxBox, normalize, preprocess, resizeGray } from '../../src/model/preprocess.ts';
import { checkThreshold, postprocess, sigmoid } from '../../src/model/postprocess.ts';
import { PneumoError } from '../../src/errors.ts';

const F = (a: number[]) => Float32Array.from(a);
const close = (got: ArrayLike<number>, want: number[], eps = 1e-5) => {
  expect(got.length).toBe(want.length);
  want.forEach((w, i) => expect(Math.abs(got[i] - w)).toBeLessThan(eps));
};

const SPEC: PreprocessingSpec = {
  color: 'gray_bt601',
  resize: { mode: 'stretch', filter: 'bilinear_antialias', pad_value: 0 },
  scale: 1 / 255,
  normalize: { mode: 'fixed', mean: 0.5, std: 0.25 },
};

describe('bilinear_antialias resampling (contract algorithm)', () => {
  it('copies an axis unchanged when sizes are equal', () => {
    const src = F([1, 2, 3, 4, 5, 6]);
    const out = resizeAntialias(src, 3, 2, 3, 2);
    expect(Array.from(out)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(out).not.toBe(src);
  });

  it('downsamples 2->1 as the mean of the pair', () => {
    close(resizeAntialias(F([2, 6]), 2, 1, 1, 1), [4]);
  });

  it('downsamples 4->2 with the triangle filter of support 2 (weights .75,.75,.25 normalised)', () => {
    // out0 = (0*.75 + 4*.75 + 8*.25)/1.75, out1 = (4*.25 + 8*.75 + 12*.75)/1.75 (hand-computed)
    close(resizeAntialias(F([0, 4, 8, 12]), 4, 1, 2, 1), [5 / 1.75, 16 / 1.75]);
    const w = antialiasWeights(4, 2);
    expect(Array.from(w.start)).toEqual([0, 1]);
    expect(Array.from(w.count)).toEqual([3, 3]);
  });

  it('upsamples 2->4 like bilinear align_corners=false', () => {
    close(resizeAntialias(F([0, 8]), 2, 1, 4, 1), [0, 2, 6, 8]);
  });

  it('resizes horizontally then vertically and keeps constants constant', () => {
    const out = resizeAntialias(new Float32Array(7 * 5).fill(100), 7, 5, 3, 4);
    out.forEach((v) => expect(v).toBeCloseTo(100, 4));
    // vertical 2->1 averages rows, horizontal identity
    close(resizeAntialias(F([1, 2, 3, 5, 6, 7]), 3, 2, 3, 1), [3, 4, 5]);
  });

  it('upsampleBilinear matches torch interpolate(align_corners=False) on 2x2 -> 4x4', () => {
    const out = upsampleBilinear(F([0, 1, 2, 3]), 2, 2, 4, 4);
    close(out, [0, 0.25, 0.75, 1, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2, 2.25, 2.75, 3]);
  });
});

describe('letterbox', () => {
  it('centres the resized image with floor offsets and pads with pad_value', () => {
    expect(letterboxBox(8, 4, 4, 4)).toEqual({ left: 0, top: 1, width: 4, height: 2 });
    expect(letterboxBox(6, 2, 5, 5)).toEqual({ left: 0, top: 1, width: 5, height: 2 });
    const img = new Float32Array(8 * 4).fill(200);
    const out = resizeGray(img, 8, 4, 4, 4, { mode: 'letterbox', filter: 'bilinear_antialias', pad_value: 7 });
    expect(Array.from(out)).toEqual([7, 7, 7, 7, 200, 200, 200, 200, 200, 200, 200, 200, 7, 7, 7, 7]);
  });

  it('rounds half to even, as Python round() does on the training side', () => {
    // s = min(4/5, 5/10) = 0.5 -> nw = round(2.5) = 2, left = floor((4-2)/2) = 1
    expect(letterboxBox(5, 10, 4, 5)).toEqual({ left: 1, top: 0, width: 2, height: 5 });
  });
});

describe('gray_bt601', () => {
  it('weights RGB 0.299/0.587/0.114 and composites alpha onto black', () => {
    close(toGray({ data: F([255, 0, 0, 0, 255, 0, 0, 0, 255]), width: 3, height: 1, channels: 3 }), [76.245, 149.685, 29.07], 1e-4);
    close(toGray({ data: F([100, 100, 100, 51]), width: 1, height: 1, channels: 4 }), [20], 1e-4);
    close(toGray({ data: F([200, 127.5]), width: 1, height: 1, channels: 2 }), [100]);
    expect(Array.from(toGray({ data: F([9, 8]), width: 2, height: 1, channels: 1 }))).toEqual([9, 8]);
  });
});

describe('normalize (the one place that knows the pixel range)', () => {
  it('maps 0..255 with the fixed mean/std', () => {
    close(normalize(F([0, 127.5, 255]), SPEC), [-2, 0, 2]);
  });

  it('standardises per image with the population std', () => {
    const out = normalize(F([0, 255]), { scale: 1 / 255, normalize: { mode: 'per_image' } });
    close(out, [-1, 1]);
    close(normalize(F([9, 9, 9]), { scale: 1 / 255, normalize: { mode: 'per_image' } }), [0, 0, 0]);
  });

  it.each([
    ['NaN', [0, NaN, 3], /NaN/],
    ['Infinity', [0, Infinity], /NaN or infinite/],
    ['negative values', [-1, 10], /0\.\.255/],
    ['values above 255 (an undivided 16-bit image)', [0, 65535], /0\.\.255/],
    ['values just above 255', [0, 255.01], /0\.\.255/],
  ])('throws on %s', (_name, values, message) => {
    expect(() => normalize(F(values as number[]), SPEC)).toThrow(message);
  });

  it('throws on a wrong length or an empty input', () => {
    expect(() => normalize(F([1, 2, 3]), SPEC, 4)).toThrow(/expected 4 values, got 3/);
    expect(() => normalize(F([]), SPEC)).toThrow(/empty/);
  });

  it('accepts already-normalised values only if they are in range (no silent double normalisation)', () => {
    expect(() => normalize(normalize(F([0, 255]), SPEC), SPEC)).toThrow(/0\.\.255/);
  });
});

describe('preprocess', () => {
  it('turns a RawImage into [1,H,W] for the card input size', () => {
    const image = { data: new Float32Array(20 * 10 * 3).fill(255), width: 20, height: 10, channels: 3 as const };
    const out = preprocess(image, { input: { name: 'input', channels: 1, height: 4, width: 6 }, preprocessing: SPEC });
    expect(out.length).toBe(24);
    out.forEach((v) => expect(v).toBeCloseTo(2, 4));
  });
});

describe('postprocess', () => {
  const card = { labels: ['NORMAL', 'PNEUMONIA'] as [string, string], postprocessing: { temperature: 2, threshold: 0.5 } };

  it('applies temperature and threshold', () => {
    expect(sigmoid(0)).toBe(0.5);
    expect(sigmoid(-800)).toBeGreaterThanOrEqual(0);
    expect(postprocess(2, card).probability).toBeCloseTo(1 / (1 + Math.exp(-1)), 12);
    expect(postprocess(0, card).label).toBe('PNEUMONIA'); // probability >= threshold
    expect(postprocess(-0.01, card).label).toBe('NORMAL');
    expect(postprocess(2, card, 0.9)).toMatchObject({ label: 'NORMAL', threshold: 0.9 });
  });

  it.each([1.5, -0.1, NaN, '0.5'])('rejects threshold %s with 400', (t) => {
    expect(() => checkThreshold(t)).toThrow(PneumoError);
    try {
      checkThreshold(t);
    } catch (e) {
      expect((e as PneumoError).status).toBe(400);
    }
  });
});
