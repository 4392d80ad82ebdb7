/**
 * The input-validity gate: refuses what is not a chest X-ray, then declines chest X-rays outside the
 * population the model is validated for (`outside_intended_use`, from the card's
 * gate.intended_use head, e.g. an adult's film). It combines the image checks
 * (image-checks.ts, always available) with the model's own `ood` score (contract: `gate`, only
 * with models that have it): the image is rejected when any image check fails or the score is
 * above card.gate.threshold. Pure: the pipeline decides what a rejection does (throw or flag).
 */
import type { GateSpec } from '../model/card.ts';
import { type CheckFailure, type ImageCheckResult, type ImageStats } from './image-checks.ts';

export type RejectionReason = 'not_a_chest_xray' | 'outside_intended_use';

export interface GateResult {
  rejected: boolean;
  reason?: RejectionReason;
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

/** What a user is told when a film is declined as outside the intended use. */
export const OUTSIDE_INTENDED_USE =
  "This chest X-ray looks outside the population the model is validated for (frontal chest X-rays of children aged 1-5 from one hospital); it may be an adult's film or come from a very different hospital or device. On such films the model's answer is not validated and can be confidently wrong.";

/** Combines the image checks with the model's gate score and, when the image is a chest X-ray, its intended-use score. */
export function gateDecision(
  checks: ImageCheckResult,
  score: number | null | undefined,
  spec: GateSpec | undefined,
  scopeScore?: number | null,
): GateResult {
  const reasons = checks.failures.map((f) => f.reason);
  const s = score === undefined || score === null ? null : score;
  const threshold = spec ? spec.threshold : null;
  if (threshold !== null && s !== null && !(s <= threshold)) {
    // NaN counts as a rejection: a broken gate must not let everything through.
    reasons.push(
      Number.isNaN(s)
        ? 'the model could not score how much this image resembles its training chest X-rays'
        : `unlike the chest X-rays the model was trained on (gate score ${s.toFixed(2)} > ${threshold})`,
    );
  }
  const scope = scopeScore === undefined || scopeScore === null ? null : scopeScore;
  const scopeThreshold = spec?.intended_use ? spec.intended_use.threshold : null;
  const notXray = reasons.length > 0;
  // NaN counts as outside: a broken head must not let everything through.
  const outside = !notXray && scopeThreshold !== null && scope !== null && !(scope <= scopeThreshold);
  if (outside) {
    reasons.push(
      Number.isNaN(scope)
        ? 'the model could not score how much this film resembles its validated population'
        : `unlike the population the model is validated for (intended-use score ${scope < 1000 ? scope.toFixed(2) : scope.toExponential(2)} > ${scopeThreshold})`,
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
    gate.message = rejectionMessage(reasons);
  } else if (outside) {
    gate.reason = 'outside_intended_use';
    gate.message = OUTSIDE_INTENDED_USE;
  }
  return gate;
}
