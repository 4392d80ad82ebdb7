/**
 * Calibration of predicted probabilities (of label 1): Brier score, reliability bins and the
 * expected calibration error. Scores must lie in [0, 1].
 */
import { checkInputs, mulberry32, quantile } from './metrics.ts';

function checkProbabilities(labels: ArrayLike<number>, probs: ArrayLike<number>): void {
  checkInputs(labels, probs);
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] < 0 || probs[i] > 1) throw new RangeError(`probability ${i} is ${probs[i]}, outside [0, 1]`);
  }
}

/** Mean squared difference between probability and outcome. Null on an empty set. */
export function brierScore(labels: ArrayLike<number>, probs: ArrayLike<number>): number | null {
  checkProbabilities(labels, probs);
  if (labels.length === 0) return null;
  let s = 0;
  for (let i = 0; i < labels.length; i++) s += (probs[i] - labels[i]) ** 2;
  return s / labels.length;
}

export interface ReliabilityBin {
  lower: number;
  upper: number;
  count: number;
  /** Mean predicted probability in the bin (null when empty). */
  meanPredicted: number | null;
  /** Observed fraction of positives in the bin (null when empty). */
  fractionPositive: number | null;
}

/** The equal-width bin of a probability: bin k holds [k/B, (k+1)/B), the last bin also holds 1.0. */
const binOf = (p: number, bins: number): number => Math.min(bins - 1, Math.floor(p * bins));

/**
 * Equal-width bins over [0, 1]: bin k holds probabilities in [k/B, (k+1)/B), the last bin also
 * holds 1.0.
 */
export function reliabilityBins(labels: ArrayLike<number>, probs: ArrayLike<number>, bins = 10): ReliabilityBin[] {
  checkProbabilities(labels, probs);
  if (!(Number.isInteger(bins) && bins >= 1)) throw new RangeError(`bins must be a positive integer, got ${bins}`);
  const count = new Array<number>(bins).fill(0);
  const sumP = new Array<number>(bins).fill(0);
  const sumY = new Array<number>(bins).fill(0);
  for (let i = 0; i < labels.length; i++) {
    const b = binOf(probs[i], bins);
    count[b]++;
    sumP[b] += probs[i];
    sumY[b] += labels[i];
  }
  return count.map((n, b) => ({
    lower: b / bins,
    upper: (b + 1) / bins,
    count: n,
    meanPredicted: n === 0 ? null : sumP[b] / n,
    fractionPositive: n === 0 ? null : sumY[b] / n,
  }));
}

/**
 * Expected calibration error over equal-width bins of the positive-class probability:
 * sum_b (n_b / n) * |mean predicted_b - fraction positive_b|. Null on an empty set.
 */
export function expectedCalibrationError(labels: ArrayLike<number>, probs: ArrayLike<number>, bins = 10): number | null {
  const rb = reliabilityBins(labels, probs, bins);
  if (labels.length === 0) return null;
  let e = 0;
  for (const b of rb) {
    if (b.count > 0) e += (b.count / labels.length) * Math.abs((b.meanPredicted as number) - (b.fractionPositive as number));
  }
  return e;
}

/** What the ECE of a perfectly calibrated model would read on these very probabilities, by chance alone. */
export interface EceByChance {
  /** Mean ECE over the draws. */
  mean: number;
  /** 90% of the draws read at most this: an ECE above it is unlikely to be noise of the sample size. */
  p90: number;
  draws: number;
}

/**
 * ECE is biased upwards on a small set: with 10 bins and about 100 films, a perfectly calibrated model
 * reads about 0.1. This draws each film's outcome from its own probability (so calibration is perfect
 * by construction) with a seeded generator, and returns the ECE that chance alone gives. The work is
 * bounded: at most `draws` draws (default 500) and about 5 million film-draws in all (at least 20 draws).
 * Null on an empty set.
 */
export function eceByChance(probs: ArrayLike<number>, opts: { draws?: number; seed?: number; bins?: number } = {}): EceByChance | null {
  const bins = opts.bins ?? 10;
  const n = probs.length;
  if (!(Number.isInteger(bins) && bins >= 1)) throw new RangeError(`bins must be a positive integer, got ${bins}`);
  const wanted = opts.draws ?? 500;
  if (!(Number.isInteger(wanted) && wanted >= 1)) throw new RangeError(`draws must be a positive integer, got ${wanted}`);
  if (n === 0) return null;
  const bin = new Uint16Array(n);
  const sumP = new Float64Array(bins);
  const count = new Float64Array(bins);
  for (let i = 0; i < n; i++) {
    const p = probs[i];
    if (!(p >= 0 && p <= 1)) throw new RangeError(`probability ${i} is ${p}, outside [0, 1]`);
    bin[i] = binOf(p, bins);
    sumP[bin[i]] += p;
    count[bin[i]]++;
  }
  const draws = Math.min(wanted, Math.max(20, Math.ceil(5e6 / n)));
  const rand = mulberry32(opts.seed ?? 1);
  const sumY = new Float64Array(bins);
  const eces = new Float64Array(draws);
  for (let d = 0; d < draws; d++) {
    sumY.fill(0);
    for (let i = 0; i < n; i++) if (rand() < probs[i]) sumY[bin[i]]++;
    let e = 0;
    for (let b = 0; b < bins; b++) e += Math.abs(sumP[b] - sumY[b]); // (n_b / n) * |mean p_b - mean y_b| = |sum p_b - sum y_b| / n
    eces[d] = e / n;
  }
  eces.sort();
  return { mean: eces.reduce((a, b) => a + b, 0) / draws, p90: quantile(eces, 0.9), draws };
}
