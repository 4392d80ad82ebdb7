/**
 * Pure-TypeScript resampling of single-channel float images (no image library):
 * - `resizeAntialias`: the contract's `bilinear_antialias` filter (PIL / torch antialias=True),
 *   separable, horizontal pass then vertical, float32 storage between passes.
 * - `upsampleBilinear`: plain bilinear with align_corners=false (torch `interpolate`), for CAM maps.
 */

interface AxisFilter {
  start: Int32Array; // first input index per output index
  count: Int32Array; // number of taps per output index
  weights: Float64Array; // count[i] weights starting at offset[i]
  offset: Int32Array;
}

/** Filter taps for one axis, exactly as written in docs/model-contract.md. */
export function antialiasWeights(inSize: number, outSize: number): AxisFilter {
  const scale = inSize / outSize;
  const fs = Math.max(scale, 1);
  const support = 1 * fs;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const offset = new Int32Array(outSize);
  const all: number[] = [];
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    const xmin = Math.max(Math.floor(center - support + 0.5), 0);
    const xmax = Math.min(Math.floor(center + support + 0.5), inSize);
    const ws: number[] = [];
    let total = 0;
    for (let j = xmin; j < xmax; j++) {
      const w = Math.max(0, 1 - Math.abs((j - center + 0.5) / fs));
      ws.push(w);
      total += w;
    }
    offset[i] = all.length;
    if (total > 0) {
      start[i] = xmin;
      count[i] = ws.length;
      for (const w of ws) all.push(w / total);
    } else {
      start[i] = Math.min(Math.floor(center), inSize - 1);
      count[i] = 1;
      all.push(1);
    }
  }
  return { start, count, offset, weights: Float64Array.from(all) };
}

/** Resizes a single-channel image (row-major, width*height) with the bilinear_antialias filter. */
export function resizeAntialias(src: Float32Array, width: number, height: number, outWidth: number, outHeight: number): Float32Array {
  if (src.length !== width * height) throw new Error(`resizeAntialias: expected ${width * height} values, got ${src.length}`);
  if (outWidth < 1 || outHeight < 1) throw new Error(`resizeAntialias: bad output size ${outWidth}x${outHeight}`);
  let cur = src;
  if (outWidth !== width) {
    const { start, count, offset, weights } = antialiasWeights(width, outWidth);
    const next = new Float32Array(outWidth * height);
    for (let y = 0; y < height; y++) {
      const row = y * width;
      const dst = y * outWidth;
      for (let i = 0; i < outWidth; i++) {
        let acc = 0;
        const s = row + start[i];
        const o = offset[i];
        const n = count[i];
        for (let k = 0; k < n; k++) acc += weights[o + k] * cur[s + k];
        next[dst + i] = acc;
      }
    }
    cur = next;
  }
  if (outHeight !== height) {
    const f = antialiasWeights(height, outHeight);
    const next = new Float32Array(outWidth * outHeight);
    const acc = new Float64Array(outWidth);
    for (let i = 0; i < outHeight; i++) {
      acc.fill(0);
      const o = f.offset[i];
      for (let k = 0; k < f.count[i]; k++) {
        const w = f.weights[o + k];
        const row = (f.start[i] + k) * outWidth;
        for (let x = 0; x < outWidth; x++) acc[x] += w * cur[row + x];
      }
      next.set(acc, i * outWidth);
    }
    cur = next;
  }
  return cur === src ? src.slice() : cur;
}

/** Bilinear interpolation with align_corners=false and edge clamping (torch `interpolate`). */
export function upsampleBilinear(src: Float32Array, width: number, height: number, outWidth: number, outHeight: number): Float32Array {
  if (src.length !== width * height) throw new Error(`upsampleBilinear: expected ${width * height} values, got ${src.length}`);
  const out = new Float32Array(outWidth * outHeight);
  const sx = width / outWidth;
  const sy = height / outHeight;
  const x0 = new Int32Array(outWidth);
  const x1 = new Int32Array(outWidth);
  const fx = new Float64Array(outWidth);
  for (let x = 0; x < outWidth; x++) {
    const u = Math.max((x + 0.5) * sx - 0.5, 0);
    x0[x] = Math.min(Math.floor(u), width - 1);
    x1[x] = Math.min(x0[x] + 1, width - 1);
    fx[x] = u - x0[x];
  }
  for (let y = 0; y < outHeight; y++) {
    const v = Math.max((y + 0.5) * sy - 0.5, 0);
    const y0 = Math.min(Math.floor(v), height - 1);
    const y1 = Math.min(y0 + 1, height - 1);
    const fy = v - y0;
    for (let x = 0; x < outWidth; x++) {
      const top = src[y0 * width + x0[x]] * (1 - fx[x]) + src[y0 * width + x1[x]] * fx[x];
      const bottom = src[y1 * width + x0[x]] * (1 - fx[x]) + src[y1 * width + x1[x]] * fx[x];
      out[y * outWidth + x] = top * (1 - fy) + bottom * fy;
    }
  }
  return out;
}
