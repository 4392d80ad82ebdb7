/**
 * Stage 4, explain: class activation maps from CAM-layer features.
 * `weightedCam` is the shared base (weighted channel sum, ReLU, normalisation); a CAM method only
 * supplies the channel weights. `gradCam` is exact for the contract's GAP + linear head:
 * dlogit/dA_k(i,j) = w_k / (h*w), so alpha_k = w_k / (h*w).
 */

export interface CamMap {
  /** Row-major h*w values in [0, 1] (all zeros stays zeros). */
  map: Float32Array;
  width: number;
  height: number;
}

/** Shape of one item's features: [C, h, w]. */
export type FeatureShape = readonly [number, number, number];

/** cam(i,j) = ReLU(sum_k alpha_k * A_k(i,j)), divided by its maximum. */
export function weightedCam(features: Float32Array, shape: FeatureShape, alphas: ArrayLike<number>): CamMap {
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
  let max = 0;
  for (let p = 0; p < hw; p++) if (acc[p] > max) max = acc[p];
  const map = new Float32Array(hw);
  if (max > 0) for (let p = 0; p < hw; p++) map[p] = acc[p] > 0 ? acc[p] / max : 0;
  return { map, width: w, height: h };
}

/** Grad-CAM channel weights for a GAP + linear head: alpha_k = w_k / (h*w). */
export function gradCamAlphas(headWeights: readonly number[], shape: FeatureShape): Float64Array {
  const hw = shape[1] * shape[2];
  return Float64Array.from(headWeights, (wk) => wk / hw);
}

/** Exact Grad-CAM of the decision logit for one item's features [C, h, w]. */
export function gradCam(features: Float32Array, shape: FeatureShape, headWeights: readonly number[]): CamMap {
  return weightedCam(features, shape, gradCamAlphas(headWeights, shape));
}
