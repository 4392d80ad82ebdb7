/** Every metric of an evaluation in one plain, JSON-serialisable object. */
import {
  averagePrecision,
  bootstrapAucCi,
  classCounts,
  prCurve,
  ratesAt,
  rocAuc,
  rocCurve,
  thresholdSweep,
  youdenThreshold,
  type ConfidenceInterval,
  type PrPoint,
  type RatesAtThreshold,
  type RocPoint,
} from './metrics.ts';
import {
  brierScore,
  eceByChance,
  expectedCalibrationError,
  reliabilityBins,
  type EceByChance,
  type ReliabilityBin,
} from './calibration.ts';

/** The rates at the decision threshold (as in the sweep), plus the threshold-free metrics. */
export interface MetricsSummary extends Omit<RatesAtThreshold, 'youden'> {
  n: number;
  positives: number;
  negatives: number;
  auc: number | null;
  auc_ci95: ConfidenceInterval | null;
  pr_auc: number | null;
  brier: number | null;
  ece: number | null;
  /** The ECE a perfectly calibrated model would read on these probabilities by chance alone (src/eval/calibration.ts). */
  ece_chance: EceByChance | null;
  reliability: ReliabilityBin[];
  sweep: RatesAtThreshold[];
  youden: RatesAtThreshold | null;
}

export interface Curves {
  roc: RocPoint[] | null;
  pr: PrPoint[] | null;
}

export interface SummaryOptions {
  bootstrap?: { resamples?: number; seed?: number };
  /** Class names (labels[0] = 0, labels[1] = 1), for the words of a non-informative interval. */
  labels?: readonly [string, string];
  sweepStep?: number;
  bins?: number;
}

export function summarize(
  labels: ArrayLike<number>,
  probs: ArrayLike<number>,
  threshold: number,
  opts: SummaryOptions = {},
): MetricsSummary {
  const at = ratesAt(labels, probs, threshold);
  const { pos, neg } = classCounts(labels);
  return {
    n: labels.length,
    positives: pos,
    negatives: neg,
    threshold,
    confusion: at.confusion,
    accuracy: at.accuracy,
    sensitivity: at.sensitivity,
    specificity: at.specificity,
    precision: at.precision,
    npv: at.npv,
    f1: at.f1,
    auc: rocAuc(labels, probs),
    auc_ci95: bootstrapAucCi(labels, probs, { ...opts.bootstrap, level: 0.95, ...(opts.labels ? { labels: opts.labels } : {}) }),
    pr_auc: averagePrecision(labels, probs),
    brier: brierScore(labels, probs),
    ece: expectedCalibrationError(labels, probs, opts.bins ?? 10),
    ece_chance: eceByChance(probs, { bins: opts.bins ?? 10 }),
    reliability: reliabilityBins(labels, probs, opts.bins ?? 10),
    sweep: thresholdSweep(labels, probs, opts.sweepStep ?? 0.05),
    youden: youdenThreshold(labels, probs),
  };
}

export function curves(labels: ArrayLike<number>, probs: ArrayLike<number>): Curves {
  return { roc: rocCurve(labels, probs), pr: prCurve(labels, probs) };
}
