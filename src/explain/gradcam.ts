/**
 * Stage 4, explain: class activation maps from CAM-layer features.
 * `weightedCam` is the shared base (weighted channel sum, ReLU, normalisation); a CAM method only
 * supplies the channel weights. `gradCam` is exact for the contract's GAP + linear head:
 * dlogit/dA_k(i,j) = w_k / (h*w), so alpha_k = w_k / (h*w).
 *
 * Normalisation (docs/model-contract.md, Postprocessing): with the card's `gradcam.display_scale`
 * (a positive number in the units of acc(i,j) = sum_k alpha_k * A_k(i,j)) the map is
 * clamp(acc / display_scale, 0, 1), one scale for every film, so two films' maps can be compared;
 * without it, acc / max(acc), each film's own maximum (the peak of every film is 1).
 */

export interface CamMap {
  /** Row-major h*w values in [0, 1] (all zeros stays zeros). */
  map: Float32Array;
  width: number;
  height: number;
  /**
   * The value of acc shown as 1: the card's display_scale (`fixed`), or this film's maximum of acc
   * (0 when no cell is positive).
   */
  scale: number;
  /** True when `scale` is the card's display_scale, the same for every film. */
  fixed: boolean;
}

/** What a renderer needs of a map: its values and size. */
export type CamGrid = Pick<CamMap, 'map' | 'width' | 'height'>;

/** Shape of one item's features: [C, h, w]. */
export type FeatureShape = readonly [number, number, number];

/** acc(i,j) = sum_k alpha_k * A_k(i,j) over one item's features [C, h, w], before any ReLU or scale (h*w values). */
export function camAccumulation(features: Float32Array, shape: FeatureShape, alphas: ArrayLike<number>): Float64Array {
  const [C, h, w] = shape;
  const hw = h * w;
  if (features.length !== C * hw) throw new Error(`weightedCam: expected ${C * hw} feature values, got ${features.length}`);
  if (alphas.length !== C) throw new Error(`weightedCam: expected ${C} channel weights, got ${alphas.length}`);
  const acc = new Float64Array(hw);
  for (let k = 0; k < C; k++) {
    const a = alphas[k];
    if (a === 0) continue;
    const base = k * hw;
    for (let p = 0; p < hw; p++) acc[p] += a * features[base + p];
  }
  return acc;
}

/**
 * cam(i,j) = ReLU(sum_k alpha_k * A_k(i,j)) divided by its maximum; with a displayScale,
 * clamp(acc / displayScale, 0, 1) instead.
 */
export function weightedCam(features: Float32Array, shape: FeatureShape, alphas: ArrayLike<number>, displayScale?: number): CamMap {
  const acc = camAccumulation(features, shape, alphas);
  const [, h, w] = shape;
  const hw = h * w;
  if (displayScale !== undefined && !(Number.isFinite(displayScale) && displayScale > 0)) {
    throw new Error(`weightedCam: displayScale must be a positive number (got ${displayScale})`);
  }
  const map = new Float32Array(hw);
  if (displayScale !== undefined) {
    for (let p = 0; p < hw; p++) {
      const v = acc[p] / displayScale;
      map[p] = v > 1 ? 1 : v > 0 ? v : 0;
    }
    return { map, width: w, height: h, scale: displayScale, fixed: true };
  }
  let max = 0;
  for (let p = 0; p < hw; p++) if (acc[p] > max) max = acc[p];
  if (max > 0) for (let p = 0; p < hw; p++) map[p] = acc[p] > 0 ? acc[p] / max : 0;
  return { map, width: w, height: h, scale: max, fixed: false };
}

/** Grad-CAM channel weights for a GAP + linear head: alpha_k = w_k / (h*w). */
export function gradCamAlphas(headWeights: readonly number[], shape: FeatureShape): Float64Array {
  const hw = shape[1] * shape[2];
  return Float64Array.from(headWeights, (wk) => wk / hw);
}

/**
 * Exact Grad-CAM of the decision logit for one item's features [C, h, w]; displayScale is the
 * card's `gradcam.display_scale` (absent: each film's own maximum).
 */
export function gradCam(features: Float32Array, shape: FeatureShape, headWeights: readonly number[], displayScale?: number): CamMap {
  return weightedCam(features, shape, gradCamAlphas(headWeights, shape), displayScale);
}
