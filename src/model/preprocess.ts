/**
 * Stage 2, preprocess: RawImage (0..255) -> Float32Array [1, H, W] model input, exactly as in
 * docs/model-contract.md (gray_bt601, stretch/letterbox with bilinear_antialias, scale, normalise).
 */
import { resizeAntialias } from '../image/resample.ts';
import { grayOf, type RawImage } from '../image/raw.ts';
import type { ModelCard, PreprocessingSpec } from './card.ts';

/** Tolerance on the 0..255 range (float rounding of resampling), as on the Python side. */
const RANGE_EPS = 1e-3;

/** Python's round(): half to even. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Placement of the resized image inside the target for the letterbox mode. */
export function letterboxBox(width: number, height: number, outWidth: number, outHeight: number) {
  const s = Math.min(outWidth / width, outHeight / height);
  const w = Math.max(1, roundHalfEven(width * s));
  const h = Math.max(1, roundHalfEven(height * s));
  return { left: Math.floor((outWidth - w) / 2), top: Math.floor((outHeight - h) / 2), width: w, height: h };
}

/** Resize step: `stretch` or `letterbox` of a gray image to outWidth x outHeight. */
export function resizeGray(
  gray: Float32Array,
  width: number,
  height: number,
  outWidth: number,
  outHeight: number,
  resize: PreprocessingSpec['resize'],
): Float32Array {
  if (resize.mode === 'stretch') return resizeAntialias(gray, width, height, outWidth, outHeight);
  const box = letterboxBox(width, height, outWidth, outHeight);
  const inner = resizeAntialias(gray, width, height, box.width, box.height);
  const out = new Float32Array(outWidth * outHeight).fill(resize.pad_value);
  for (let y = 0; y < box.height; y++) {
    out.set(inner.subarray(y * box.width, (y + 1) * box.width), (box.top + y) * outWidth + box.left);
  }
  return out;
}

/**
 * Scale and normalise 0..255 gray values. The single place that knows the pixel range: throws on
 * NaN/Infinity, values outside 0..255 or a wrong length, so a mis-scaled input can never reach
 * the model silently. Indexed loops over typed arrays (one pass checks the range, scales and sums),
 * with the same float32/float64 steps as before, so the output is bit-identical.
 */
export function normalize(
  values: Float32Array,
  spec: Pick<PreprocessingSpec, 'scale' | 'normalize'>,
  expectedLength?: number,
): Float32Array {
  const n = values.length;
  if (expectedLength !== undefined && n !== expectedLength) {
    throw new Error(`normalize: expected ${expectedLength} values, got ${n}`);
  }
  if (n === 0) throw new Error('normalize: empty input');
  const scale = Math.fround(spec.scale);
  const out = new Float32Array(n);
  let lo = Infinity;
  let hi = -Infinity;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const v = values[i];
    if (v < lo) lo = v;
    if (v > hi) hi = v;
    out[i] = v * scale;
    sum += out[i];
  }
  // NaN fails every comparison: it never moves lo or hi, and it makes the sum NaN.
  if (!Number.isFinite(lo) || !Number.isFinite(hi) || Number.isNaN(sum)) {
    throw new Error('normalize: input contains NaN or infinite values');
  }
  if (lo < -RANGE_EPS || hi > 255 + RANGE_EPS) {
    throw new Error(`normalize: pixel values must be in 0..255, got ${lo.toFixed(3)}..${hi.toFixed(3)}`);
  }
  let mean: number;
  let std: number;
  if (spec.normalize.mode === 'fixed') {
    mean = Math.fround(spec.normalize.mean);
    std = Math.fround(spec.normalize.std);
  } else {
    const m = sum / n;
    let sq = 0;
    for (let i = 0; i < n; i++) {
      const d = out[i] - m;
      sq += d * d;
    }
    mean = Math.fround(m);
    std = Math.fround(Math.max(Math.sqrt(sq / n), 1e-6));
  }
  for (let i = 0; i < n; i++) out[i] = Math.fround(out[i] - mean) / std;
  return out;
}

/**
 * RawImage -> model input [1, H, W] (returned flat, length H*W) for the card's input size. `gray`
 * is the image's `grayOf` when the caller has it already (the engine shares it with the gate's
 * checks and the overlay); it is only read.
 */
export function preprocess(
  image: RawImage,
  card: Pick<ModelCard, 'input' | 'preprocessing'>,
  gray: Float32Array = grayOf(image),
): Float32Array {
  const { width: W, height: H } = card.input;
  if (gray.length !== image.width * image.height)
    throw new Error(`preprocess: expected ${image.width * image.height} gray values, got ${gray.length}`);
  const { resize } = card.preprocessing;
  // Already at the input size: nothing to resample (normalize reads its input and writes a new array).
  const same = image.width === W && image.height === H;
  const resized = same ? gray : resizeGray(gray, image.width, image.height, W, H, resize);
  return normalize(resized, card.preprocessing, W * H);
}
