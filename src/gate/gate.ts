/**
 * The input-validity gate: refuses what is not a chest X-ray. It combines the image checks
 * (image-checks.ts, always available) with the model's own `ood` score (contract: `gate`, only
 * with models that have it): the image is rejected when any image check fails or the score is
 * above card.gate.threshold. Pure: the pipeline decides what a rejection does (throw or flag).
 */
import type { GateSpec } from '../model/card.ts';
import { type CheckFailure, type ImageCheckResult, type ImageStats } from './image-checks.ts';

export type RejectionReason = 'not_a_chest_xray';

export interface GateResult {
  rejected: boolean;
  reason?: RejectionReason;
  /** The model's gate score (normalised; above `threshold` = reject); null when the model has none. */
  score: number | null;
  /** card.gate.threshold; null when the card has no gate (then `score`, if any, is not used). */
  threshold: number | null;
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

/** Combines the image checks with the model's gate score. */
export function gateDecision(checks: ImageCheckResult, score: number | null | undefined, spec: GateSpec | undefined): GateResult {
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
  const gate: GateResult = {
    rejected: reasons.length > 0,
    score: s,
    threshold,
    checks: { passed: checks.passed, stats: checks.stats, failures: checks.failures },
    reasons,
  };
  if (gate.rejected) {
    gate.reason = 'not_a_chest_xray';
    gate.message = rejectionMessage(reasons);
  }
  return gate;
}
