/**
 * Shortcut audit (issue 8): does the model encode where an image came from rather than what it
 * shows? Two pure tools, no I/O:
 *  - a linear probe: L2-regularised logistic regression on standardised pooled features, scored by
 *    cross-validation with folds grouped by patient (a high AUC = the features encode the shortcut);
 *  - Grad-CAM mass: the share of a (non-negative) CAM map that falls inside a region mask (border
 *    band, burned-in markers, below the lung fields), next to the region's share of the area.
 */
import { mulberry32, rocAuc } from './metrics.ts';

// ---------------------------------------------------------------------------------------------
// Linear probe

export interface Standardizer {
  mean: Float64Array;
  std: Float64Array;
}

/** Per-column mean and standard deviation (population; a constant column gets std 1). */
export function fitStandardizer(rows: ArrayLike<number>[]): Standardizer {
  if (rows.length === 0) throw new RangeError('fitStandardizer: no rows');
  const d = rows[0].length;
  const mean = new Float64Array(d);
  const std = new Float64Array(d);
  for (const r of rows) for (let j = 0; j < d; j++) mean[j] += r[j];
  for (let j = 0; j < d; j++) mean[j] /= rows.length;
  for (const r of rows) for (let j = 0; j < d; j++) std[j] += (r[j] - mean[j]) ** 2;
  for (let j = 0; j < d; j++) {
    const s = Math.sqrt(std[j] / rows.length);
    std[j] = s > 1e-12 ? s : 1;
  }
  return { mean, std };
}

export function standardize(rows: ArrayLike<number>[], s: Standardizer): Float64Array[] {
  return rows.map((r) => Float64Array.from({ length: s.mean.length }, (_, j) => (r[j] - s.mean[j]) / s.std[j]));
}

export interface LogisticModel {
  weights: Float64Array;
  intercept: number;
}

const sigmoid = (z: number): number => (z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z)));

/** Solves A x = b for a symmetric positive-definite A (Cholesky, in place on a copy). */
function solveSpd(A: Float64Array, b: Float64Array, n: number): Float64Array {
  const L = new Float64Array(A);
  for (let j = 0; j < n; j++) {
    let s = L[j * n + j];
    for (let k = 0; k < j; k++) s -= L[j * n + k] ** 2;
    if (!(s > 0)) throw new Error('solveSpd: matrix is not positive definite');
    const d = Math.sqrt(s);
    L[j * n + j] = d;
    for (let i = j + 1; i < n; i++) {
      let t = L[i * n + j];
      for (let k = 0; k < j; k++) t -= L[i * n + k] * L[j * n + k];
      L[i * n + j] = t / d;
    }
  }
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let t = b[i];
    for (let k = 0; k < i; k++) t -= L[i * n + k] * y[k];
    y[i] = t / L[i * n + i];
  }
  const x = new Float64Array(n);
  for (let i = n - 1; i >= 0; i--) {
    let t = y[i];
    for (let k = i + 1; k < n; k++) t -= L[k * n + i] * x[k];
    x[i] = t / L[i * n + i];
  }
  return x;
}

/**
 * Logistic regression minimising sum_i logloss_i + (l2 / 2) ||w||^2 (the intercept is not
 * penalised; l2 = 1 is scikit-learn's LogisticRegression(C=1)), by Newton's method.
 */
export function fitLogistic(x: ArrayLike<number>[], y: ArrayLike<number>, l2 = 1, maxIter = 50, tol = 1e-8): LogisticModel {
  const n = x.length;
  if (n === 0 || y.length !== n) throw new RangeError(`fitLogistic: ${n} rows and ${y.length} labels`);
  if (!(l2 > 0)) throw new RangeError(`fitLogistic: l2 must be > 0, got ${l2}`);
  const d = x[0].length;
  const m = d + 1; // last parameter = intercept
  const theta = new Float64Array(m);
  const H = new Float64Array(m * m);
  const g = new Float64Array(m);
  const xi = new Float64Array(m);
  for (let iter = 0; iter < maxIter; iter++) {
    H.fill(0);
    g.fill(0);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < d; j++) xi[j] = x[i][j];
      xi[d] = 1;
      let z = 0;
      for (let j = 0; j < m; j++) z += theta[j] * xi[j];
      const p = sigmoid(z);
      const r = p - y[i];
      const w = Math.max(p * (1 - p), 1e-12);
      for (let a = 0; a < m; a++) {
        g[a] += r * xi[a];
        const wa = w * xi[a];
        if (wa === 0) continue;
        for (let b = 0; b <= a; b++) H[a * m + b] += wa * xi[b];
      }
    }
    for (let a = 0; a < m; a++) for (let b = 0; b < a; b++) H[b * m + a] = H[a * m + b];
    for (let j = 0; j < d; j++) {
      g[j] += l2 * theta[j];
      H[j * m + j] += l2;
    }
    H[d * m + d] += 1e-9; // keeps the intercept row positive definite on a one-class fold
    const step = solveSpd(H, g, m);
    let change = 0;
    for (let j = 0; j < m; j++) {
      theta[j] -= step[j];
      change = Math.max(change, Math.abs(step[j]));
    }
    if (change < tol) break;
  }
  return { weights: theta.slice(0, d), intercept: theta[d] };
}

/** Decision values w.x + b (monotone in the predicted probability). */
export function decisionValues(model: LogisticModel, x: ArrayLike<number>[]): Float64Array {
  return Float64Array.from(x, (r) => {
    let z = model.intercept;
    for (let j = 0; j < model.weights.length; j++) z += model.weights[j] * r[j];
    return z;
  });
}

/**
 * Fold index (0..k-1) per sample; all samples of a group share a fold. Groups are shuffled with
 * the seed, then each goes to the fold with the fewest samples so far (largest groups first).
 */
export function groupKFold(groups: readonly string[], k: number, seed = 0): Int32Array {
  if (!(Number.isInteger(k) && k >= 2)) throw new RangeError(`groupKFold: k must be an integer >= 2, got ${k}`);
  const sizes = new Map<string, number>();
  for (const g of groups) sizes.set(g, (sizes.get(g) ?? 0) + 1);
  const keys = [...sizes.keys()].sort();
  const rand = mulberry32(seed);
  for (let i = keys.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [keys[i], keys[j]] = [keys[j], keys[i]];
  }
  keys.sort((a, b) => sizes.get(b)! - sizes.get(a)!); // stable: shuffled order within a size
  const load = new Array<number>(k).fill(0);
  const foldOf = new Map<string, number>();
  for (const key of keys) {
    let best = 0;
    for (let f = 1; f < k; f++) if (load[f] < load[best]) best = f;
    foldOf.set(key, best);
    load[best] += sizes.get(key)!;
  }
  return Int32Array.from(groups, (g) => foldOf.get(g)!);
}

export interface ProbeResult {
  n: number;
  positives: number;
  groups: number;
  folds: number;
  l2: number;
  /** ROC-AUC of the pooled out-of-fold decision values (null when one class is absent). */
  auc: number | null;
  /** ROC-AUC of each test fold (null where the fold lacks a class). */
  foldAucs: Array<number | null>;
}

/**
 * Cross-validated linear probe: for each fold, standardise on the training folds, fit the
 * logistic regression, score the test fold; the AUC is over all out-of-fold scores.
 */
export function crossValidatedProbe(
  features: ArrayLike<number>[],
  labels: ArrayLike<number>,
  groups: readonly string[],
  opts: { folds?: number; l2?: number; seed?: number } = {},
): ProbeResult {
  const n = features.length;
  if (labels.length !== n || groups.length !== n) throw new RangeError('crossValidatedProbe: lengths differ');
  const k = opts.folds ?? 5;
  const l2 = opts.l2 ?? 1;
  const fold = groupKFold(groups, k, opts.seed ?? 0);
  const scores = new Float64Array(n);
  const foldAucs: Array<number | null> = [];
  for (let f = 0; f < k; f++) {
    const train: number[] = [];
    const test: number[] = [];
    for (let i = 0; i < n; i++) (fold[i] === f ? test : train).push(i);
    if (test.length === 0 || train.length === 0) {
      foldAucs.push(null);
      continue;
    }
    const s = fitStandardizer(train.map((i) => features[i]));
    const model = fitLogistic(
      standardize(
        train.map((i) => features[i]),
        s,
      ),
      train.map((i) => labels[i]),
      l2,
    );
    const z = decisionValues(
      model,
      standardize(
        test.map((i) => features[i]),
        s,
      ),
    );
    test.forEach((i, t) => (scores[i] = z[t]));
    foldAucs.push(
      rocAuc(
        test.map((i) => labels[i]),
        z,
      ),
    );
  }
  let positives = 0;
  for (let i = 0; i < n; i++) positives += labels[i] === 1 ? 1 : 0;
  return { n, positives, groups: new Set(groups).size, folds: k, l2, auc: rocAuc(labels, scores), foldAucs };
}

// ---------------------------------------------------------------------------------------------
// Grad-CAM mass

/** 1 inside the outer band of `frac` of each side (frac 0.1: 36% of the area), else 0. */
export function borderMask(width: number, height: number, frac: number): Uint8Array {
  const bx = Math.round(width * frac);
  const by = Math.round(height * frac);
  const m = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (x < bx || x >= width - bx || y < by || y >= height - by) m[y * width + x] = 1;
    }
  }
  return m;
}

/** 1 on the bottom `frac` of the rows, else 0. */
export function bottomMask(width: number, height: number, frac: number): Uint8Array {
  const m = new Uint8Array(width * height);
  m.fill(1, (height - Math.round(height * frac)) * width);
  return m;
}

export interface MarkerMaskOptions {
  /** Band (fraction of each side) where markers are searched (default 0.25). */
  band?: number;
  /** A pixel is "very bright" at or above max(minLevel, the image's `percentile`) (defaults 230, 0.995). */
  minLevel?: number;
  percentile?: number;
  /** Largest component kept, as a fraction of the image area (default 0.005); larger = anatomy or a bright field. */
  maxArea?: number;
  /** Dilation radius in pixels (default 3), since the CAM is coarse. */
  dilate?: number;
}

/**
 * Burned-in markers (lead letters "R"/"L", "PORTABLE", scanner text): small, very bright
 * connected components (4-connected) lying within the outer band of the image, dilated. `gray`
 * is row-major 0..255.
 */
export function markerMask(gray: ArrayLike<number>, width: number, height: number, opts: MarkerMaskOptions = {}): Uint8Array {
  const band = opts.band ?? 0.25;
  const maxArea = (opts.maxArea ?? 0.005) * width * height;
  const r = opts.dilate ?? 3;
  const sorted = Float32Array.from(gray).sort();
  const level = Math.max(opts.minLevel ?? 230, sorted[Math.min(sorted.length - 1, Math.floor((opts.percentile ?? 0.995) * sorted.length))]);
  const bx = Math.round(width * band);
  const by = Math.round(height * band);
  const inBand = (x: number, y: number) => x < bx || x >= width - bx || y < by || y >= height - by;
  const bright = new Uint8Array(width * height);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) if (gray[y * width + x] >= level && inBand(x, y)) bright[y * width + x] = 1;
  const keep = new Uint8Array(width * height);
  const seen = new Uint8Array(width * height);
  const stack: number[] = [];
  for (let p = 0; p < bright.length; p++) {
    if (!bright[p] || seen[p]) continue;
    const comp: number[] = [];
    stack.push(p);
    seen[p] = 1;
    while (stack.length > 0) {
      const q = stack.pop()!;
      comp.push(q);
      const x = q % width;
      const y = (q - x) / width;
      const nb = [x > 0 ? q - 1 : -1, x < width - 1 ? q + 1 : -1, y > 0 ? q - width : -1, y < height - 1 ? q + width : -1];
      for (const v of nb) {
        if (v >= 0 && bright[v] && !seen[v]) {
          seen[v] = 1;
          stack.push(v);
        }
      }
    }
    if (comp.length <= maxArea) for (const q of comp) keep[q] = 1;
  }
  if (r <= 0) return keep;
  const out = new Uint8Array(width * height);
  for (let p = 0; p < keep.length; p++) {
    if (!keep[p]) continue;
    const x = p % width;
    const y = (p - x) / width;
    for (let yy = Math.max(0, y - r); yy <= Math.min(height - 1, y + r); yy++) {
      for (let xx = Math.max(0, x - r); xx <= Math.min(width - 1, x + r); xx++) out[yy * width + xx] = 1;
    }
  }
  return out;
}

/** Share of the map's total (non-negative) mass inside the mask; null when the map is all zero. */
export function massShare(map: ArrayLike<number>, mask: ArrayLike<number>): number | null {
  if (map.length !== mask.length) throw new RangeError(`massShare: map (${map.length}) and mask (${mask.length}) differ in length`);
  let total = 0;
  let inside = 0;
  for (let i = 0; i < map.length; i++) {
    const v = map[i] > 0 ? map[i] : 0;
    total += v;
    if (mask[i]) inside += v;
  }
  return total > 0 ? inside / total : null;
}

/** Fraction of the area inside the mask: the share a uniform map would put there. */
export function areaShare(mask: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < mask.length; i++) s += mask[i] ? 1 : 0;
  return mask.length === 0 ? 0 : s / mask.length;
}
