/**
 * Calibration of predicted probabilities (of label 1): Brier score, reliability bins and the
 * expected calibration error. Scores must lie in [0, 1].
 */
import { checkInputs } from './metrics.ts';

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
    const b = Math.min(bins - 1, Math.floor(probs[i] * bins));
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
