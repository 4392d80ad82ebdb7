import { describe, expect, it } from 'vitest';
import { accuracy, averagePrecision, bootstrapAucCi, confusion, f1, mulberry32, npv, prCurve, precision } from '../../src/eval/metrics.ts';
import { quantile, rocAuc, rocCurve, sensitivity, specificity, thresholdSweep, youdenThreshold } from '../../src/eval/metrics.ts';
import { brierScore, eceByChance, expectedCalibrationError, reliabilityBins } from '../../src/eval/calibration.ts';
import { summarize } from '../../src/eval/summary.ts';

// Hand-worked example. Positives score {0.9, 0.8, 0.3, 0.5}, negatives {0.7, 0.2, 0.1, 0.5}.
const y = [1, 1, 1, 0, 0, 0, 0, 1];
const p = [0.9, 0.8, 0.3, 0.7, 0.2, 0.1, 0.5, 0.5];

describe('confusion and rates', () => {
  it('counts at a threshold with score >= threshold positive', () => {
    const c = confusion(y, p, 0.5);
    expect(c).toEqual({ tp: 3, fp: 2, tn: 2, fn: 1 });
    expect(accuracy(c)).toBeCloseTo(5 / 8, 12);
    expect(sensitivity(c)).toBeCloseTo(3 / 4, 12);
    expect(specificity(c)).toBeCloseTo(2 / 4, 12);
    expect(precision(c)).toBeCloseTo(3 / 5, 12);
    expect(npv(c)).toBeCloseTo(2 / 3, 12);
    expect(f1(c)).toBeCloseTo(2 / 3, 12);
  });

  it('returns null, not NaN, when a denominator is zero', () => {
    const c = confusion([1, 1], [0.9, 0.7], 0.5); // one class, all predicted positive
    expect(c).toEqual({ tp: 2, fp: 0, tn: 0, fn: 0 });
    expect(specificity(c)).toBeNull();
    expect(npv(c)).toBeNull();
    expect(sensitivity(c)).toBe(1);
    const empty = confusion([], [], 0.5);
    expect(accuracy(empty)).toBeNull();
    expect(f1(empty)).toBeNull();
    expect(f1(confusion([0, 0], [0.1, 0.2], 0.5))).toBeNull(); // no TP, FP or FN
  });

  it('rejects bad labels, non-finite scores and length mismatches', () => {
    expect(() => confusion([1, 2], [0.1, 0.2], 0.5)).toThrow(RangeError);
    expect(() => confusion([1, 0], [0.1, NaN], 0.5)).toThrow(RangeError);
    expect(() => rocAuc([1, 0, 1], [0.1, 0.2])).toThrow(/length/);
    expect(() => brierScore([1, 0], [0.1, 1.2])).toThrow(/outside/);
  });
});

describe('ROC and PR', () => {
  it('computes the exact AUC with a tie counted as one half', () => {
    // 16 pairs: 0.9 and 0.8 beat all 4 negatives, 0.3 beats 2, 0.5 beats 2 and ties 1 -> 12.5 / 16
    expect(rocAuc(y, p)).toBeCloseTo(12.5 / 16, 12);
  });

  it('gives 0.5 when every score is tied and 1 / 0 for perfect / inverted rankings', () => {
    expect(rocAuc([1, 0, 1, 0], [0.3, 0.3, 0.3, 0.3])).toBe(0.5);
    expect(rocAuc([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1])).toBe(1);
    expect(rocAuc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9])).toBe(0);
  });

  it('is null with one class only', () => {
    expect(rocAuc([1, 1, 1], [0.1, 0.5, 0.9])).toBeNull();
    expect(rocAuc([0, 0], [0.1, 0.5])).toBeNull();
    expect(rocCurve([0, 0], [0.1, 0.5])).toBeNull();
    expect(prCurve([0, 0], [0.1, 0.5])).toBeNull();
    expect(averagePrecision([0, 0], [0.1, 0.5])).toBeNull();
    expect(bootstrapAucCi([1, 1], [0.1, 0.5])).toBeNull();
    expect(youdenThreshold([1, 1], [0.1, 0.5])).toBeNull();
  });

  it('matches a brute-force pairwise count on random data with many ties', () => {
    const rand = mulberry32(7);
    const labels: number[] = [];
    const scores: number[] = [];
    for (let i = 0; i < 300; i++) {
      labels.push(rand() < 0.4 ? 1 : 0);
      scores.push(Math.round(rand() * 10) / 10);
    }
    let wins = 0;
    let pairs = 0;
    for (let i = 0; i < labels.length; i++) {
      if (labels[i] !== 1) continue;
      for (let j = 0; j < labels.length; j++) {
        if (labels[j] !== 0) continue;
        pairs++;
        wins += scores[i] > scores[j] ? 1 : scores[i] === scores[j] ? 0.5 : 0;
      }
    }
    expect(rocAuc(labels, scores)).toBeCloseTo(wins / pairs, 12);
    // trapezoidal area under the tie-aware ROC curve is the same number
    const roc = rocCurve(labels, scores)!;
    let area = 0;
    for (let k = 1; k < roc.length; k++) area += ((roc[k].fpr - roc[k - 1].fpr) * (roc[k].tpr + roc[k - 1].tpr)) / 2;
    expect(area).toBeCloseTo(wins / pairs, 12);
  });

  it('builds the ROC curve with one point per distinct score', () => {
    const roc = rocCurve(y, p)!;
    expect(roc.map((r) => [r.fpr, r.tpr])).toEqual([
      [0, 0],
      [0, 0.25],
      [0, 0.5],
      [0.25, 0.5],
      [0.5, 0.75],
      [0.5, 1],
      [0.75, 1],
      [1, 1],
    ]);
  });

  it('computes the PR curve and average precision by hand', () => {
    const pr = prCurve(y, p)!;
    expect(pr[0]).toEqual({ threshold: 0.9, recall: 0.25, precision: 1 });
    expect(pr[3].threshold).toBe(0.5);
    expect(pr[3].precision).toBeCloseTo(3 / 5, 12);
    // 0.25*1 + 0.25*1 + 0*(2/3) + 0.25*(3/5) + 0.25*(4/6)
    expect(averagePrecision(y, p)).toBeCloseTo(0.25 + 0.25 + 0.15 + 1 / 6, 12);
  });
});

describe('thresholds', () => {
  it('sweeps 0..1 in 0.05 steps', () => {
    const s = thresholdSweep(y, p);
    expect(s).toHaveLength(21);
    expect(s[0].threshold).toBe(0);
    expect(s[6].threshold).toBe(0.3);
    expect(s[20].threshold).toBe(1);
    expect(s[0].confusion).toEqual({ tp: 4, fp: 4, tn: 0, fn: 0 });
    expect(s[0].specificity).toBe(0);
    expect(s[20].confusion).toEqual({ tp: 0, fp: 0, tn: 4, fn: 4 });
    expect(s[20].precision).toBeNull();
    expect(s[10].confusion).toEqual(confusion(y, p, 0.5));
  });

  it('picks the Youden threshold, preferring the higher one on a tie', () => {
    // J = 0.5 at t = 0.8 (tpr 0.5, fpr 0) and at t = 0.3 (tpr 1, fpr 0.5)
    const best = youdenThreshold(y, p)!;
    expect(best.threshold).toBe(0.8);
    expect(best.youden).toBeCloseTo(0.5, 12);
  });
});

describe('calibration', () => {
  it('computes the Brier score and ECE by hand', () => {
    expect(brierScore(y, p)).toBeCloseTo(1.58 / 8, 12);
    // bins 1,2,3,7,8,9 are off by 0.1,0.2,0.7,0.7,0.2,0.1 with one sample each; bin 5 is exact
    expect(expectedCalibrationError(y, p)).toBeCloseTo(2.0 / 8, 12);
    expect(brierScore([], [])).toBeNull();
    expect(expectedCalibrationError([], [])).toBeNull();
  });

  it('puts 1.0 in the last bin and leaves empty bins null', () => {
    const bins = reliabilityBins([1, 0, 1], [1, 0, 0.95], 10);
    expect(bins[9]).toMatchObject({ count: 2, fractionPositive: 1 });
    expect(bins[9].meanPredicted).toBeCloseTo(0.975, 12);
    expect(bins[0]).toMatchObject({ count: 1, meanPredicted: 0, fractionPositive: 0 });
    expect(bins[4]).toMatchObject({ count: 0, meanPredicted: null, fractionPositive: null });
  });
});

describe('ECE by chance alone', () => {
  const spread = (n: number) => Array.from({ length: n }, (_, i) => (i + 0.5) / n);

  it('is what a perfectly calibrated model reads: large on 100 films, small on 10,000, seeded', () => {
    const small = eceByChance(spread(100))!;
    const large = eceByChance(spread(10_000))!;
    expect(small.mean).toBeGreaterThan(0.05); // 10 bins of about 10 films: sampling noise alone
    expect(small.mean).toBeLessThan(0.15);
    expect(small.p90).toBeGreaterThan(small.mean);
    expect(large.mean).toBeLessThan(0.015);
    expect(large.mean).toBeLessThan(small.mean / 4); // about 1/sqrt(n)
    expect(eceByChance(spread(100))).toEqual(small);
    expect(eceByChance(spread(100), { seed: 2 })!.mean).not.toBe(small.mean);
  });

  it('matches the ECE of labels actually drawn from the probabilities, and not a miscalibrated set', () => {
    const p = spread(200);
    const rand = mulberry32(7);
    const eces = Array.from({ length: 200 }, () => {
      const y = p.map((v) => (rand() < v ? 1 : 0));
      return expectedCalibrationError(y, p)!;
    });
    const mean = eces.reduce((a, b) => a + b, 0) / eces.length;
    expect(eceByChance(p)!.mean).toBeCloseTo(mean, 2);
    // a model twice as sure as it should be: its ECE is above what chance alone gives its probabilities
    const y = p.map((v) => (rand() < v ? 1 : 0));
    const overconfident = p.map((v) => Math.min(1, Math.max(0, 0.5 + (v - 0.5) * 2)));
    expect(expectedCalibrationError(y, overconfident)!).toBeGreaterThan(eceByChance(overconfident)!.p90);
  });

  it('bounds its work and refuses bad input', () => {
    expect(eceByChance([])).toBeNull();
    expect(eceByChance(spread(1_000_000))!.draws).toBe(20);
    expect(eceByChance(spread(1_000))!.draws).toBe(500);
    expect(() => eceByChance([0.5, 1.5])).toThrow(/outside \[0, 1\]/);
    expect(() => eceByChance([0.5], { draws: 0 })).toThrow(/draws/);
  });
});

describe('bootstrap CI', () => {
  const rand = mulberry32(123);
  const labels: number[] = [];
  const scores: number[] = [];
  for (let i = 0; i < 200; i++) {
    const l = rand() < 0.5 ? 1 : 0;
    labels.push(l);
    scores.push(Math.min(1, Math.max(0, 0.5 + (l ? 0.15 : -0.15) + (rand() - 0.5) * 0.8)));
  }

  it('contains the AUC, is deterministic for a seed and changes with the seed', () => {
    const auc = rocAuc(labels, scores)!;
    const a = bootstrapAucCi(labels, scores, { resamples: 300, seed: 1 })!;
    const b = bootstrapAucCi(labels, scores, { resamples: 300, seed: 1 })!;
    const c = bootstrapAucCi(labels, scores, { resamples: 300, seed: 2 })!;
    expect(a).toEqual(b);
    expect(c.lower).not.toBe(a.lower);
    expect(a.lower).toBeLessThan(auc);
    expect(a.upper).toBeGreaterThan(auc);
    expect(a.upper - a.lower).toBeGreaterThan(0.02);
    expect(a.upper - a.lower).toBeLessThan(0.3);
  });

  it('resamples patients, not films: one group per film is the film bootstrap; 5 copies per patient widen it', () => {
    const singletons = bootstrapAucCi(labels, scores, { resamples: 300, seed: 1, groups: labels.map((_, i) => `p${i}`) });
    expect(singletons).toEqual(bootstrapAucCi(labels, scores, { resamples: 300, seed: 1 }));
    // The same 200 patients, each filmed 5 times with the same score: as films, 1,000 independent draws
    // (a CI about sqrt(5) narrower, falsely); as patients, the interval of 200.
    const rep = <T>(xs: T[]): T[] => xs.flatMap((x) => [x, x, x, x, x]);
    const patients = rep(labels.map((_, i) => `p${i}`));
    const films = bootstrapAucCi(rep(labels), rep(scores), { resamples: 300, seed: 1 })!;
    const clustered = bootstrapAucCi(rep(labels), rep(scores), { resamples: 300, seed: 1, groups: patients })!;
    const width = (ci: { lower: number; upper: number }): number => ci.upper - ci.lower;
    expect(width(clustered)).toBeGreaterThan(1.8 * width(films));
    expect(width(clustered) / width(singletons!)).toBeGreaterThan(0.75);
    expect(width(clustered) / width(singletons!)).toBeLessThan(1.33);
    // A patient with films of both classes is drawn whole; a group list of the wrong length is refused.
    const mixed = bootstrapAucCi([1, 0, 1, 0], [0.9, 0.1, 0.6, 0.4], { resamples: 50, groups: ['a', 'a', 'b', 'b'] })!;
    expect(mixed.lower).toBeLessThanOrEqual(mixed.upper);
    expect(() => bootstrapAucCi([1, 0], [0.9, 0.1], { groups: ['a'] })).toThrow(/one entry per item/);
  });

  it('collapses to [1, 1] for a perfect ranking', () => {
    const ci = bootstrapAucCi([1, 1, 1, 0, 0], [0.9, 0.8, 0.7, 0.2, 0.1], { resamples: 50 })!;
    expect([ci.lower, ci.upper]).toEqual([1, 1]);
  });

  it('interpolates quantiles like numpy', () => {
    expect(quantile([1, 2, 3, 4], 0.5)).toBe(2.5);
    expect(quantile([1, 2, 3, 4], 0)).toBe(1);
    expect(quantile([1, 2, 3, 4], 1)).toBe(4);
  });
});

describe('summarize', () => {
  it('gathers every metric into one JSON-safe object', () => {
    const s = summarize(y, p, 0.5, { bootstrap: { resamples: 100 } });
    expect(s).toMatchObject({ n: 8, positives: 4, negatives: 4, threshold: 0.5, confusion: { tp: 3, fp: 2, tn: 2, fn: 1 } });
    expect(s.auc).toBeCloseTo(0.78125, 12);
    expect(s.sweep).toHaveLength(21);
    const json = JSON.parse(JSON.stringify(s));
    expect(json.auc_ci95.lower).toBeLessThanOrEqual(s.auc!);
    expect(JSON.stringify(s)).not.toMatch(/NaN|Infinity/);
  });
});
