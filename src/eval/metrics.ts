/**
 * Binary classification metrics on (labels, scores): labels are 0 (NORMAL) or 1 (PNEUMONIA),
 * scores are the predicted probability of label 1 (any finite real for the ranking metrics).
 * Pure functions, no I/O. A ratio whose denominator is zero is `null`, never NaN.
 */

export interface Confusion {
  tp: number;
  fp: number;
  tn: number;
  fn: number;
}

/** Throws a RangeError unless labels are all 0/1, scores all finite, and the lengths match. */
export function checkInputs(labels: ArrayLike<number>, scores: ArrayLike<number>): void {
  if (labels.length !== scores.length) {
    throw new RangeError(`labels (${labels.length}) and scores (${scores.length}) differ in length`);
  }
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] !== 0 && labels[i] !== 1) throw new RangeError(`label ${i} is ${labels[i]}, not 0 or 1`);
    if (!Number.isFinite(scores[i])) throw new RangeError(`score ${i} is ${scores[i]}, not a finite number`);
  }
}

function ratio(num: number, den: number): number | null {
  return den === 0 ? null : num / den;
}

/** Counts at a threshold: predicted positive when score >= threshold (the contract's rule). */
export function confusion(labels: ArrayLike<number>, scores: ArrayLike<number>, threshold: number): Confusion {
  checkInputs(labels, scores);
  const c: Confusion = { tp: 0, fp: 0, tn: 0, fn: 0 };
  for (let i = 0; i < labels.length; i++) {
    const pred = scores[i] >= threshold;
    if (labels[i] === 1) pred ? c.tp++ : c.fn++;
    else pred ? c.fp++ : c.tn++;
  }
  return c;
}

export const accuracy = (c: Confusion): number | null => ratio(c.tp + c.tn, c.tp + c.fp + c.tn + c.fn);
/** Recall, true-positive rate. */
export const sensitivity = (c: Confusion): number | null => ratio(c.tp, c.tp + c.fn);
/** True-negative rate. */
export const specificity = (c: Confusion): number | null => ratio(c.tn, c.tn + c.fp);
/** Positive predictive value. */
export const precision = (c: Confusion): number | null => ratio(c.tp, c.tp + c.fp);
/** Negative predictive value. */
export const npv = (c: Confusion): number | null => ratio(c.tn, c.tn + c.fn);
/** Harmonic mean of precision and recall = 2TP / (2TP + FP + FN); null when there is no TP, FP or FN. */
export const f1 = (c: Confusion): number | null => ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn);

export interface RatesAtThreshold {
  threshold: number;
  confusion: Confusion;
  accuracy: number | null;
  sensitivity: number | null;
  specificity: number | null;
  precision: number | null;
  npv: number | null;
  f1: number | null;
  /** Youden's J = sensitivity + specificity - 1. */
  youden: number | null;
}

export function ratesAt(labels: ArrayLike<number>, scores: ArrayLike<number>, threshold: number): RatesAtThreshold {
  const c = confusion(labels, scores, threshold);
  const se = sensitivity(c);
  const sp = specificity(c);
  return {
    threshold,
    confusion: c,
    accuracy: accuracy(c),
    sensitivity: se,
    specificity: sp,
    precision: precision(c),
    npv: npv(c),
    f1: f1(c),
    youden: se === null || sp === null ? null : se + sp - 1,
  };
}

/** Indices sorted by descending score (stable). */
function orderDesc(scores: ArrayLike<number>): number[] {
  const idx = Array.from({ length: scores.length }, (_, i) => i);
  idx.sort((a, b) => scores[b] - scores[a] || a - b);
  return idx;
}

export interface RocPoint {
  /** Points at or above this score are called positive; the first point (0,0) has +Infinity. */
  threshold: number;
  fpr: number;
  tpr: number;
}

/** ROC curve with one point per distinct score (tied scores move diagonally), from (0,0) to (1,1). */
export function rocCurve(labels: ArrayLike<number>, scores: ArrayLike<number>): RocPoint[] | null {
  checkInputs(labels, scores);
  const { pos, neg } = classCounts(labels);
  if (pos === 0 || neg === 0) return null;
  const pts: RocPoint[] = [{ threshold: Infinity, fpr: 0, tpr: 0 }];
  for (const { threshold, tp, fp } of cumulativeCounts(labels, scores)) pts.push({ threshold, fpr: fp / neg, tpr: tp / pos });
  return pts;
}

/** True and false positives when every score >= threshold is called positive, one entry per distinct score, descending. */
function cumulativeCounts(labels: ArrayLike<number>, scores: ArrayLike<number>): Array<{ threshold: number; tp: number; fp: number }> {
  const order = orderDesc(scores);
  const out: Array<{ threshold: number; tp: number; fp: number }> = [];
  let tp = 0;
  let fp = 0;
  for (let k = 0; k < order.length; k++) {
    const i = order[k];
    labels[i] === 1 ? tp++ : fp++;
    const next = order[k + 1];
    if (next === undefined || scores[next] !== scores[i]) out.push({ threshold: scores[i], tp, fp });
  }
  return out;
}

export function classCounts(labels: ArrayLike<number>): { pos: number; neg: number } {
  let pos = 0;
  for (let i = 0; i < labels.length; i++) pos += labels[i] === 1 ? 1 : 0;
  return { pos, neg: labels.length - pos };
}

/**
 * Exact ROC-AUC = P(score of a random positive > score of a random negative) + 0.5 P(tie), the
 * Mann-Whitney U statistic divided by pos*neg. Null when one class is absent.
 */
export function rocAuc(labels: ArrayLike<number>, scores: ArrayLike<number>): number | null {
  checkInputs(labels, scores);
  const ones = new Float64Array(labels.length).fill(1);
  return weightedAuc(ascendingOrder(scores), labels, scores, ones);
}

function ascendingOrder(scores: ArrayLike<number>): Int32Array {
  const idx = Array.from({ length: scores.length }, (_, i) => i);
  idx.sort((a, b) => scores[a] - scores[b]);
  return Int32Array.from(idx);
}

/**
 * AUC where sample i counts w[i] times, in one pass over `order` (indices by ascending score).
 * Walks tie groups: each positive beats the negatives below its group and ties half of those in it.
 */
function weightedAuc(order: Int32Array, labels: ArrayLike<number>, scores: ArrayLike<number>, w: Float64Array): number | null {
  let negBelow = 0;
  let totalPos = 0;
  let wins = 0;
  let k = 0;
  while (k < order.length) {
    let gPos = 0;
    let gNeg = 0;
    const s = scores[order[k]];
    while (k < order.length && scores[order[k]] === s) {
      const i = order[k];
      if (labels[i] === 1) gPos += w[i];
      else gNeg += w[i];
      k++;
    }
    wins += gPos * negBelow + 0.5 * gPos * gNeg;
    negBelow += gNeg;
    totalPos += gPos;
  }
  const den = totalPos * negBelow;
  return den === 0 ? null : wins / den;
}

export interface PrPoint {
  threshold: number;
  recall: number;
  precision: number;
}

/** Precision-recall curve, one point per distinct score, by descending threshold. Null without positives. */
export function prCurve(labels: ArrayLike<number>, scores: ArrayLike<number>): PrPoint[] | null {
  checkInputs(labels, scores);
  const { pos } = classCounts(labels);
  if (pos === 0) return null;
  return cumulativeCounts(labels, scores).map(({ threshold, tp, fp }) => ({ threshold, recall: tp / pos, precision: tp / (tp + fp) }));
}

/**
 * Average precision, the step-wise area under the PR curve: sum over thresholds of
 * (R_k - R_{k-1}) * P_k (the scikit-learn definition, no interpolation). Null without positives.
 */
export function averagePrecision(labels: ArrayLike<number>, scores: ArrayLike<number>): number | null {
  const pts = prCurve(labels, scores);
  if (pts === null) return null;
  let ap = 0;
  let prevRecall = 0;
  for (const p of pts) {
    ap += (p.recall - prevRecall) * p.precision;
    prevRecall = p.recall;
  }
  return ap;
}

/** Table of rates at thresholds 0, step, 2*step, ..., 1 (rounded to avoid 0.30000000000000004). */
export function thresholdSweep(labels: ArrayLike<number>, scores: ArrayLike<number>, step = 0.05): RatesAtThreshold[] {
  if (!(step > 0 && step <= 1)) throw new RangeError(`sweep step must be in (0, 1], got ${step}`);
  const n = Math.round(1 / step);
  const rows: RatesAtThreshold[] = [];
  for (let k = 0; k <= n; k++) {
    const t = Math.min(1, Number((k * step).toFixed(10)));
    rows.push(ratesAt(labels, scores, t));
  }
  return rows;
}

/**
 * The threshold that maximises Youden's J over all distinct scores (score >= t is positive). On a
 * tie the higher threshold wins. Null when one class is absent.
 */
export function youdenThreshold(labels: ArrayLike<number>, scores: ArrayLike<number>): RatesAtThreshold | null {
  const roc = rocCurve(labels, scores);
  if (roc === null) return null;
  let best: RocPoint | null = null;
  for (const p of roc.slice(1)) {
    if (best === null || p.tpr - p.fpr > best.tpr - best.fpr) best = p;
  }
  return best === null ? null : ratesAt(labels, scores, best.threshold);
}

/** Mulberry32: a small, fast, seeded PRNG returning floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface BootstrapOptions {
  resamples?: number; // default 1000
  seed?: number; // default 42
  level?: number; // default 0.95
  /** Class names for the words of a non-informative interval (default NORMAL, PNEUMONIA). */
  labels?: readonly [string, string];
  /**
   * The group (patient) of each item: resample groups, not items, so that several films of one
   * patient count as one draw (their errors are not independent). Without it every item is its own group.
   */
  groups?: ArrayLike<string | number>;
}

export interface ConfidenceInterval {
  lower: number;
  upper: number;
  level: number;
  resamples: number;
  seed: number;
  /**
   * False when the interval says nothing useful (see ciInformative): the numbers are kept for
   * the JSON, but people are told it is not informative instead of being shown them.
   */
  informative: boolean;
  /** Why it is not informative, in words; null when it is. */
  not_informative_because: string | null;
}

/**
 * Fewer images than this in either class and the bootstrap interval of the AUC is not informative:
 * resampling so few images cannot show how the AUC would vary on new ones (a percentile bootstrap
 * of 20 against 20 perfectly ranked images reads 1.000-1.000).
 */
export const MIN_PER_CLASS_FOR_CI = 30;

/**
 * Whether a bootstrap interval of the AUC is informative: at least MIN_PER_CLASS_FOR_CI images of
 * each class, and the bootstrap did not degenerate (every resample the same AUC, e.g. a perfect
 * ranking: an interval of width zero claims a certainty no finite sample gives).
 */
export function ciInformative(
  lower: number,
  upper: number,
  pos: number,
  neg: number,
  labels: readonly [string, string] = ['NORMAL', 'PNEUMONIA'],
): { informative: boolean; not_informative_because: string | null } {
  const why: string[] = [];
  const few = [
    ...(neg < MIN_PER_CLASS_FOR_CI ? [`${neg} ${labels[0]}`] : []),
    ...(pos < MIN_PER_CLASS_FOR_CI ? [`${pos} ${labels[1]}`] : []),
  ];
  if (few.length) why.push(`only ${few.join(' and ')} image(s); it needs at least ${MIN_PER_CLASS_FOR_CI} of each class`);
  if (!(upper - lower > 1e-12)) why.push(`every bootstrap resample gave the same AUC (${upper.toFixed(3)})`);
  return why.length
    ? { informative: false, not_informative_because: why.join('; ') }
    : { informative: true, not_informative_because: null };
}

/**
 * Percentile bootstrap CI of the ROC-AUC, stratified and, with `opts.groups`, clustered: the groups
 * (patients) are split into strata by the classes of their items (only positives, only negatives,
 * both), and each resample draws every stratum's groups with replacement from that stratum, all of a
 * drawn group's items with it, so both classes are always present. Without groups every item is its
 * own group (positives drawn from the positives, negatives from the negatives). Deterministic for a
 * given seed. Null when one class is absent.
 */
export function bootstrapAucCi(
  labels: ArrayLike<number>,
  scores: ArrayLike<number>,
  opts: BootstrapOptions = {},
): ConfidenceInterval | null {
  checkInputs(labels, scores);
  const resamples = opts.resamples ?? 1000;
  const seed = opts.seed ?? 42;
  const level = opts.level ?? 0.95;
  if (!(Number.isInteger(resamples) && resamples >= 1)) throw new RangeError(`resamples must be a positive integer, got ${resamples}`);
  if (!(level > 0 && level < 1)) throw new RangeError(`level must be in (0, 1), got ${level}`);
  if (opts.groups && opts.groups.length !== labels.length) {
    throw new RangeError(`groups must have one entry per item (${labels.length}), got ${opts.groups.length}`);
  }
  let positives = 0;
  for (let i = 0; i < labels.length; i++) positives += labels[i] === 1 ? 1 : 0;
  const negatives = labels.length - positives;
  if (positives === 0 || negatives === 0) return null;
  const strata = groupStrata(labels, opts.groups);

  const order = ascendingOrder(scores);
  const rand = mulberry32(seed);
  const w = new Float64Array(labels.length);
  const aucs = new Float64Array(resamples);
  for (let r = 0; r < resamples; r++) {
    w.fill(0);
    for (const stratum of strata) {
      for (let k = 0; k < stratum.length; k++) for (const i of stratum[Math.floor(rand() * stratum.length)]) w[i]++;
    }
    aucs[r] = weightedAuc(order, labels, scores, w) as number;
  }
  aucs.sort();
  const tail = (1 - level) / 2;
  const [lower, upper] = [quantile(aucs, tail), quantile(aucs, 1 - tail)];
  return { lower, upper, level, resamples, seed, ...ciInformative(lower, upper, positives, negatives, opts.labels) };
}

/**
 * The bootstrap's strata, each a list of groups (item indices): groups of positives only, of
 * negatives only, of both; empty strata left out. Groups keep the order of their first item.
 */
function groupStrata(labels: ArrayLike<number>, groups?: ArrayLike<string | number>): number[][][] {
  const byGroup = new Map<string | number, number[]>();
  for (let i = 0; i < labels.length; i++) {
    const g = groups ? groups[i] : i;
    const members = byGroup.get(g);
    if (members) members.push(i);
    else byGroup.set(g, [i]);
  }
  const strata: number[][][] = [[], [], []]; // positives only, negatives only, mixed
  for (const members of byGroup.values()) {
    const pos = members.filter((i) => labels[i] === 1).length;
    strata[pos === members.length ? 0 : pos === 0 ? 1 : 2].push(members);
  }
  return strata.filter((s) => s.length > 0);
}

/** Linear-interpolated quantile of a sorted array (numpy's default). */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) throw new RangeError('quantile of an empty array');
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}
