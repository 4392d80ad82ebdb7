/**
 * The input-validity gate. Two reasons to decline, and each means what it says:
 *
 * - `not_a_chest_xray`: the image checks (image-checks.ts) found a property no radiograph has
 *   (colour, blank, no contrast, an extreme shape, a document's white page, pixel noise). These
 *   are tests of the picture itself, fitted with wide margins on every training film and
 *   independent of the model, so they can say "this is not a chest X-ray".
 * - `outside_intended_use`: the image passes those checks, but the model says it is unlike the
 *   films it was trained and validated on: its gate score (`ood`, card `gate`) is above
 *   card.gate.threshold, or its intended-use score (`scope`, card `gate.intended_use`, optional)
 *   is above that threshold.
 *
 * Why a high gate score is not "not a chest X-ray": every gate component of the card measures
 * likeness to the training films (Mahalanobis distance of the model's features; the thumbnail's
 * residual and coefficients on the training films' principal components; a logistic head fitted
 * against synthetic transforms of training films, exp(logit - threshold)). None was fitted on real
 * images of other kinds or on real chest films of other sources (training/pneumolens_train/gate.py),
 * and the ONNX output is only their maximum, so a high score cannot tell a hand or CT slice from an
 * adult's PA chest film of another hospital: both are unlike the training films (adult PA films
 * score 1e12-1e16 on 2.0.0's exp-form head). What the score does establish is that the model was
 * not validated on this image, which is the claim `outside_intended_use` makes, in words that
 * name both possibilities. Pure: the pipeline decides what a rejection does (throw or flag).
 */
import type { GateSpec } from '../model/card.ts';
import { type CheckFailure, type ImageCheckResult, type ImageStats } from './image-checks.ts';

export type RejectionReason = 'not_a_chest_xray' | 'outside_intended_use';

/** Which test declined the image: the image checks, the model's gate score, or its intended-use score. */
export type DeclineBasis = 'image_checks' | 'gate_score' | 'intended_use_score';

export interface GateResult {
  rejected: boolean;
  reason?: RejectionReason;
  /** When rejected: which test decided the reason. */
  basis?: DeclineBasis;
  /** The model's gate score (normalised; above `threshold` = reject); null when the model has none. */
  score: number | null;
  /** card.gate.threshold; null when the card has no gate (then `score`, if any, is not used). */
  threshold: number | null;
  /** The intended-use score (above `scopeThreshold` = outside the validated population); null when the model has none. */
  scope: number | null;
  /** card.gate.intended_use.threshold; null when the card has no intended-use head. */
  scopeThreshold: number | null;
  /** The image checks: measured statistics and the failed checks. */
  checks: { passed: boolean; stats: ImageStats; failures: CheckFailure[] };
  /** Why it was rejected, for people (one line per failed check or score). */
  reasons: string[];
  /** One sentence for people, when rejected. */
  message?: string;
}

/** The message of a rejection: the reasons, then why that matters. */
export function rejectionMessage(reasons: string[]): string {
  return `This does not look like a chest X-ray: ${reasons.join('; ')}. The model was trained only on frontal chest X-rays, so its answer on this image would be meaningless.`;
}

/** What a user is told when a film is declined by the intended-use score. */
export const OUTSIDE_INTENDED_USE =
  "This chest X-ray looks outside the population the model is validated for (frontal chest X-rays of children aged 1-5 from one hospital); it may be an adult's film or come from a very different hospital or device. On such films the model's answer is not validated and can be confidently wrong.";

/**
 * What a user is told when the image passes the image checks but the model's gate score says it is
 * unlike the films the model was trained and validated on.
 */
export const UNLIKE_TRAINING_FILMS =
  "This radiograph is unlike the chest X-rays the model was trained and validated on: it may show another body part or an unusual view, or be a chest X-ray from a population, hospital or device the model was not validated for. On such images the model's answer is not validated and can be confidently wrong.";

/**
 * How far a score is above its threshold, in words for people (the numbers stay in the JSON): the
 * exp-form heads reach 1e12-1e16, which means nothing to a reader beyond "far above".
 */
export function timesThreshold(score: number, threshold: number): string {
  const r = score / threshold;
  if (!Number.isFinite(r) || r >= 1000) return 'more than 1,000 times its limit';
  if (r >= 10) return `${Math.round(r)} times its limit`;
  if (r < 1.1) return 'just above its limit';
  return `${(Math.floor(r * 10) / 10).toFixed(1)} times its limit`;
}

/** Combines the image checks with the model's gate score and, when the image passes the checks, its intended-use score. */
export function gateDecision(
  checks: ImageCheckResult,
  score: number | null | undefined,
  spec: GateSpec | undefined,
  scopeScore?: number | null,
): GateResult {
  const reasons = checks.failures.map((f) => f.reason);
  const notXray = reasons.length > 0;
  const s = score === undefined || score === null ? null : score;
  const threshold = spec ? spec.threshold : null;
  // NaN counts as over: a broken gate must not let everything through.
  const unlike = threshold !== null && s !== null && !(s <= threshold);
  if (unlike) {
    reasons.push(
      Number.isNaN(s)
        ? 'the model could not score how much this image resembles its training chest X-rays'
        : `unlike the chest X-rays the model was trained and validated on (gate score ${timesThreshold(s, threshold)})`,
    );
  }
  const scope = scopeScore === undefined || scopeScore === null ? null : scopeScore;
  const scopeThreshold = spec?.intended_use ? spec.intended_use.threshold : null;
  // Only asked of images the image checks and the gate score accept (contract: `scope`).
  const outsidePopulation = !notXray && !unlike && scopeThreshold !== null && scope !== null && !(scope <= scopeThreshold);
  if (outsidePopulation) {
    reasons.push(
      Number.isNaN(scope)
        ? 'the model could not score how much this film resembles its validated population'
        : `unlike the population the model is validated for (intended-use score ${timesThreshold(scope, scopeThreshold)})`,
    );
  }
  const gate: GateResult = {
    rejected: reasons.length > 0,
    score: s,
    threshold,
    scope,
    scopeThreshold,
    checks: { passed: checks.passed, stats: checks.stats, failures: checks.failures },
    reasons,
  };
  if (notXray) {
    gate.reason = 'not_a_chest_xray';
    gate.basis = 'image_checks';
    gate.message = rejectionMessage(reasons);
  } else if (unlike) {
    gate.reason = 'outside_intended_use';
    gate.basis = 'gate_score';
    gate.message = UNLIKE_TRAINING_FILMS;
  } else if (outsidePopulation) {
    gate.reason = 'outside_intended_use';
    gate.basis = 'intended_use_score';
    gate.message = OUTSIDE_INTENDED_USE;
  }
  return gate;
}

/** One line for people: the reason a declined image was declined and what decided it (SR, SC, CLI). */
export function declineSummary(gate: Pick<GateResult, 'reason' | 'basis'>): string {
  if (gate.reason === 'not_a_chest_xray') return 'not a chest X-ray (failed the image checks)';
  if (gate.basis === 'gate_score') return 'outside the intended use (unlike the chest X-rays the model was trained and validated on)';
  return 'outside the intended use (unlike the population the model is validated for)';
}
