/**
 * The numbers of a site profile, pure (no I/O): the card's Platt form fitted to the site's raw
 * logits, a threshold by a named policy, the scope rule from the site's intended-use scores, and an
 * honest estimate by k-fold over groups (patients where known): each fold is judged only with what
 * was fitted on the other folds. Metrics come from src/eval (metrics, calibration).
 */
import { eceByChance, expectedCalibrationError } from '../eval/calibration.ts';
import {
  bootstrapAucCi,
  confusion,
  mulberry32,
  npv,
  precision,
  quantile,
  rocAuc,
  rocCurve,
  sensitivity,
  specificity,
} from '../eval/metrics.ts';
import type { ModelCard } from '../model/card.ts';
import { postprocess } from '../model/postprocess.ts';
import { SITE_RULES, type Estimate, type SiteCalibration, type SiteScope } from './profile.ts';

/** One of the site's chest X-rays, as the model saw it (forced past the intended-use decision). */
export interface SiteFilm {
  /** The fold group: a patient id where known, else the file. Never written anywhere. */
  group: string;
  truth: 0 | 1;
  /** Raw model logit. */
  logit: number;
  /** Intended-use score; null when the model has no intended-use head. */
  scope: number | null;
}

export interface FitOptions {
  policy?: string;
  folds?: number;
  seed?: number;
  bootstrap?: number;
}

export interface SiteFit {
  calibration: SiteCalibration;
  scope: SiteScope;
  validation: Estimate & { method: string; folds: number; seed: number; bootstrap: number };
  in_sample: Pick<Estimate, 'sensitivity' | 'specificity' | 'ece_after'>;
  /** The Platt slope (1 / temperature) was not positive: higher logits did not mean more pneumonia here. */
  inverted: boolean;
  /** The out-of-fold films the estimate is computed on, for the report: truth, card and site probabilities. */
  oof: { truth: number[]; before: number[]; after: number[] };
}

/** Thrown for data a profile cannot be fitted on (the CLI reports it as a refusal). */
export class SiteDataError extends Error {}

/**
 * Platt scaling in the card's form, p = sigmoid(logit / T + b), by Newton's method on the log
 * loss with Platt's smoothed targets ((N+ + 1)/(N+ + 2), 1/(N- + 2)), which keep it finite on
 * separable data. Returns slope a = 1/T (possibly <= 0 on an inverted site) and bias b.
 */
export function fitPlatt(logits: ArrayLike<number>, labels: ArrayLike<number>): { slope: number; bias: number } {
  const n = logits.length;
  let pos = 0;
  for (let i = 0; i < n; i++) pos += labels[i];
  if (pos === 0 || pos === n) throw new SiteDataError('Platt calibration needs films of both classes');
  const hi = (pos + 1) / (pos + 2);
  const lo = 1 / (n - pos + 2);
  const t = Float64Array.from({ length: n }, (_, i) => (labels[i] === 1 ? hi : lo));
  const loss = (a: number, b: number) => {
    let s = 0;
    for (let i = 0; i < n; i++) {
      const z = a * logits[i] + b;
      // log(1 + e^z) - t z, stably
      s += (z > 0 ? z + Math.log1p(Math.exp(-z)) : Math.log1p(Math.exp(z))) - t[i] * z;
    }
    return s;
  };
  let a = 1;
  let b = 0;
  let f = loss(a, b);
  for (let iter = 0; iter < 100; iter++) {
    let ga = 0;
    let gb = 0;
    let haa = 1e-12;
    let hab = 0;
    let hbb = 1e-12;
    for (let i = 0; i < n; i++) {
      const x = logits[i];
      const p = 1 / (1 + Math.exp(-(a * x + b)));
      const d = p - t[i];
      const w = p * (1 - p);
      ga += d * x;
      gb += d;
      haa += w * x * x;
      hab += w * x;
      hbb += w;
    }
    const det = haa * hbb - hab * hab;
    if (!(Math.abs(det) > 1e-300)) break;
    const da = (hbb * ga - hab * gb) / det;
    const db = (haa * gb - hab * ga) / det;
    let step = 1;
    let next = loss(a - da, b - db);
    while (next > f && step > 1e-8) {
      step /= 2;
      next = loss(a - step * da, b - step * db);
    }
    if (next > f) break;
    a -= step * da;
    b -= step * db;
    const done = Math.abs(f - next) < 1e-12 * Math.max(1, Math.abs(f));
    f = next;
    if (done) break;
  }
  return { slope: a, bias: b };
}

/**
 * The default threshold policy: the larger of min(sensitivity, specificity). Youden's J can buy a
 * little sensitivity with a lot of specificity (model 2.0.0 on nih_dev, split seed 1: 0.82 / 0.65
 * on the test patients); balanced kept both within 0.72-0.84 on the five splits measured
 * (bench/site-holdout.ts).
 */
export const DEFAULT_POLICY = 'balanced';

/** "youden" (max sensitivity + specificity - 1), "balanced" (max of the smaller of the two), "sensitivity:X", "specificity:X". */
export function checkPolicy(policy: string): string {
  if (policy === 'youden' || policy === 'balanced') return policy;
  const m = /^(sensitivity|specificity):(0(\.\d+)?|1(\.0+)?)$/.exec(policy);
  if (m && Number(m[2]) > 0 && Number(m[2]) < 1) return policy;
  throw new SiteDataError(`unknown threshold policy '${policy}': use youden, balanced, sensitivity:X or specificity:X with X in (0, 1)`);
}

/** The threshold a policy chooses on (labels, calibrated probabilities); score >= threshold is positive. */
export function policyThreshold(policy: string, labels: ArrayLike<number>, probs: ArrayLike<number>): number {
  checkPolicy(policy);
  const roc = rocCurve(labels, probs);
  if (roc === null) throw new SiteDataError('a threshold needs films of both classes');
  const pts = roc.slice(1); // by descending threshold; tpr and fpr rise
  const [kind, target] = policy.split(':');
  const x = Number(target);
  let best = pts[0];
  if (kind === 'youden') {
    for (const p of pts) if (p.tpr - p.fpr > best.tpr - best.fpr) best = p;
  } else if (kind === 'balanced') {
    for (const p of pts) if (Math.min(p.tpr, 1 - p.fpr) > Math.min(best.tpr, 1 - best.fpr)) best = p;
  } else if (kind === 'sensitivity') {
    best = pts.find((p) => p.tpr >= x) ?? pts[pts.length - 1]; // the highest threshold that reaches it
  } else {
    for (const p of pts) if (1 - p.fpr >= x) best = p; // the lowest threshold that keeps it
  }
  return Math.min(1, Math.max(0, best.threshold));
}

/** The scope rule from the site's intended-use scores (see SiteScope). */
export function fitScope(scores: Array<number | null>, card: Pick<ModelCard, 'name' | 'gate'>): SiteScope {
  const head = card.gate?.intended_use;
  if (!head) {
    return {
      rule: 'none',
      note: `Model ${card.name} has no intended-use head (card gate.intended_use): no intended-use scores to record; under this profile only the not-a-chest-X-ray gate declines films.`,
    };
  }
  const s = scores.filter((v): v is number => v !== null && !Number.isNaN(v)).sort((x, y) => x - y);
  if (s.length === 0)
    throw new SiteDataError(`the model has an intended-use head ("${head.output}") but gave no score for the site's films`);
  const q = SITE_RULES.scopeQuantile;
  return {
    rule: 'site_quantile',
    output: head.output,
    quantile: q,
    threshold: Math.max(head.threshold, quantile(s, q)),
    card_threshold: head.threshold,
    scores: { n: s.length, min: s[0], median: quantile(s, 0.5), max: s[s.length - 1] },
  };
}

const inScope = (film: SiteFilm, scope: SiteScope) => scope.rule === 'none' || film.scope === null || film.scope <= scope.threshold;

interface Fitted {
  calibration: SiteCalibration;
  scope: SiteScope;
  slope: number;
}

function fitOn(films: SiteFilm[], policy: string, card: Pick<ModelCard, 'name' | 'gate' | 'labels'>): Fitted {
  const { slope, bias } = fitPlatt(
    films.map((f) => f.logit),
    films.map((f) => f.truth),
  );
  // A non-positive slope cannot be written in the card's form (temperature > 0): keep the card's
  // direction with a tiny slope; the profile is then marked not validated (`inverted`).
  const temperature = 1 / Math.max(slope, 1e-6);
  const probs = films.map((f) => calibrated(f.logit, temperature, bias, card));
  const threshold = policyThreshold(
    policy,
    films.map((f) => f.truth),
    probs,
  );
  return {
    calibration: { temperature, bias, threshold, policy },
    scope: fitScope(
      films.map((f) => f.scope),
      card,
    ),
    slope,
  };
}

/** The calibrated probability, by the function the engine uses (model/postprocess.ts). */
function calibrated(logit: number, temperature: number, bias: number, card: Pick<ModelCard, 'labels'>): number {
  return postprocess(logit, { labels: card.labels, postprocessing: { temperature, bias, threshold: 0.5 } }).probability;
}

/** Groups to folds: sorted, shuffled with the seed, dealt round-robin (each group in exactly one fold). */
export function assignFolds(groups: string[], k: number, seed: number): Map<string, number> {
  const unique = [...new Set(groups)].sort();
  const rand = mulberry32(seed);
  for (let i = unique.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [unique[i], unique[j]] = [unique[j], unique[i]];
  }
  return new Map(unique.map((g, i) => [g, i % k]));
}

/** Rates from per-film decisions (each film judged at its own fold's threshold). */
function rates(truth: number[], decided: number[]) {
  const c = confusion(truth, decided, 0.5);
  return { sensitivity: sensitivity(c), specificity: specificity(c), ppv: precision(c), npv: npv(c) };
}

/**
 * Fits a site and estimates it honestly. `films` are the site's chest X-rays (those the
 * not-a-chest-X-ray gate accepted); `notChestXray` counts the others, for the declined share.
 */
export function fitSite(
  films: SiteFilm[],
  card: Pick<ModelCard, 'name' | 'gate' | 'labels' | 'postprocessing'>,
  notChestXray = 0,
  opts: FitOptions = {},
): SiteFit {
  const policy = checkPolicy(opts.policy ?? DEFAULT_POLICY);
  const k = opts.folds ?? 5;
  const seed = opts.seed ?? 42;
  const resamples = opts.bootstrap ?? 1000;
  if (!(Number.isInteger(k) && k >= 2)) throw new SiteDataError(`folds must be an integer >= 2 (got ${k})`);
  const groups = new Set(films.map((f) => f.group));
  if (groups.size < k) throw new SiteDataError(`${groups.size} patient(s)/file(s) are too few for ${k} folds`);
  const fold = assignFolds(
    films.map((f) => f.group),
    k,
    seed,
  );

  const truth: number[] = [];
  const groupOf: string[] = [];
  const after: number[] = [];
  const before: number[] = [];
  const decided: number[] = [];
  let declined = notChestXray;
  for (let j = 0; j < k; j++) {
    const train = films.filter((f) => fold.get(f.group) !== j);
    const test = films.filter((f) => fold.get(f.group) === j);
    const fit = fitOn(train, policy, card);
    for (const f of test) {
      if (!inScope(f, fit.scope)) {
        declined++;
        continue;
      }
      const p = calibrated(f.logit, fit.calibration.temperature, fit.calibration.bias, card);
      truth.push(f.truth);
      groupOf.push(f.group);
      after.push(p);
      before.push(postprocess(f.logit, card).probability);
      decided.push(p >= fit.calibration.threshold ? 1 : 0);
    }
  }
  const ci = bootstrapAucCi(truth, after, { resamples, seed, groups: groupOf }); // patients resampled, not films
  const validation = {
    method: `${k}-fold by group, each fold judged with the calibration, threshold and scope fitted on the other folds; the AUC's CI from a bootstrap of the groups (a patient's films together), stratified by class`,
    folds: k,
    seed,
    bootstrap: resamples,
    n: truth.length,
    auc: rocAuc(truth, after),
    auc_ci95: ci ? ([ci.lower, ci.upper] as [number, number]) : null,
    ...rates(truth, decided),
    ece_before: expectedCalibrationError(truth, before),
    ece_after: expectedCalibrationError(truth, after),
    ece_after_chance: eceByChance(after, { seed }),
    declined: declined / (films.length + notChestXray),
  };

  const all = fitOn(films, policy, card);
  const y = films.map((f) => f.truth);
  const p = films.map((f) => calibrated(f.logit, all.calibration.temperature, all.calibration.bias, card));
  const inSample = rates(
    y,
    p.map((v) => (v >= all.calibration.threshold ? 1 : 0)),
  );
  return {
    calibration: all.calibration,
    scope: all.scope,
    validation,
    in_sample: { sensitivity: inSample.sensitivity, specificity: inSample.specificity, ece_after: expectedCalibrationError(y, p) },
    inverted: !(all.slope > 0),
    oof: { truth, before, after },
  };
}
