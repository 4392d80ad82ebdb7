/**
 * Uncertainty from the disagreement of an ensemble (contract: `uncertainty`, output `members`):
 * the population standard deviation of the members' calibrated probabilities
 * sigmoid(member_logit / temperature). Probabilities lie in [0, 1], so the value lies in [0, 0.5].
 */
import type { UncertaintySpec } from '../model/card.ts';

export const UNCERTAIN_WARNING = 'uncertain: refer to a clinician';

export interface UncertaintyResult {
  /** Population std of the members' probabilities, in [0, 0.5]; null when the model has no ensemble. */
  value: number | null;
  /** value > cutoff, or (with the card's margin_logit) the probability is that close to the threshold. */
  uncertain: boolean;
  cutoff: number | null;
  /** The calibrated logit is within the card's margin_logit of the threshold's logit. */
  nearThreshold: boolean;
}

const sigmoid = (x: number): number => 1 / (1 + Math.exp(-x));

/** Population std of sigmoid(logit / temperature + bias) over the members; throws on an empty or non-finite input. */
export function ensembleStd(memberLogits: ArrayLike<number>, temperature: number, bias = 0): number {
  const m = memberLogits.length;
  if (m === 0) throw new Error('ensembleStd: no members');
  if (!(temperature > 0)) throw new Error(`ensembleStd: temperature must be positive (got ${temperature})`);
  const p = new Float64Array(m);
  let sum = 0;
  for (let i = 0; i < m; i++) {
    const l = memberLogits[i];
    if (Number.isNaN(l)) throw new Error('ensembleStd: a member logit is NaN');
    p[i] = sigmoid(l / temperature + bias);
    sum += p[i];
  }
  const mean = sum / m;
  let ss = 0;
  for (let i = 0; i < m; i++) ss += (p[i] - mean) ** 2; // two passes: exact 0 for identical members
  return Math.min(0.5, Math.sqrt(ss / m));
}

const logit = (p: number): number => Math.log(p / (1 - p));

/**
 * The uncertainty of one item, or {value: null} when the card has no uncertainty block. `decision`
 * (the calibrated probability and the threshold in use) enables the card's margin_logit rule.
 */
export function uncertaintyOf(
  memberLogits: ArrayLike<number> | undefined,
  spec: UncertaintySpec | undefined,
  temperature: number,
  bias = 0,
  decision?: { probability: number; threshold: number },
): UncertaintyResult {
  if (!spec || !memberLogits) return { value: null, uncertain: false, cutoff: spec?.cutoff ?? null, nearThreshold: false };
  const value = ensembleStd(memberLogits, temperature, bias);
  const margin = spec.margin_logit;
  const nearThreshold =
    margin !== undefined && margin > 0 && decision !== undefined
      ? Math.abs(logit(decision.probability) - logit(decision.threshold)) < margin
      : false;
  return { value, uncertain: value > spec.cutoff || nearThreshold, cutoff: spec.cutoff, nearThreshold };
}
