/** Stage 5, postprocess: logit -> calibrated probability and label. */
import { PneumoError } from '../errors.ts';
import type { ModelCard } from './card.ts';

export interface Decision {
  probability: number;
  label: string;
  threshold: number;
}

export function sigmoid(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}

/** Validates a user threshold override (0..1); PneumoError 400 otherwise. */
export function checkThreshold(threshold: unknown): number {
  if (typeof threshold !== 'number' || !Number.isFinite(threshold) || threshold < 0 || threshold > 1) {
    throw new PneumoError('bad_request', `threshold must be a number between 0 and 1 (got ${String(threshold)}).`);
  }
  return threshold;
}

/**
 * probability = sigmoid(logit / temperature + bias); label = labels[1] if probability >= threshold.
 * `threshold` (default: the card's) is trusted: a caller's value is checked once, at the edge (checkThreshold).
 */
export function postprocess(logit: number, card: Pick<ModelCard, 'labels' | 'postprocessing'>, threshold?: number): Decision {
  const t = threshold ?? card.postprocessing.threshold;
  const probability = sigmoid(logit / card.postprocessing.temperature + (card.postprocessing.bias ?? 0));
  return { probability, label: probability >= t ? card.labels[1] : card.labels[0], threshold: t };
}
