/** Shared types of the pipeline stages: decode -> preprocess -> infer -> explain -> postprocess. */
import type { PneumoError } from './errors.ts';
import type { GateResult, RejectionReason } from './gate/gate.ts';
import type { SiteSummary } from './site/profile.ts';
import type { Colormap } from './explain/colormaps.ts';
import type { SourceFormat } from './image/raw.ts';

export type { GateResult, RejectionReason } from './gate/gate.ts';
export type { DecodedImage, RawImage, SourceFormat } from './image/raw.ts';
export type { Colormap } from './explain/colormaps.ts';

export interface AnalyseOptions {
  /** Compute the Grad-CAM overlay (default true). */
  cam?: boolean;
  /** With cam: also encode the heatmap alone as a PNG (`cam.heatmapPng`, default true); a front end that only shows the overlay turns it off. */
  heatmap?: boolean;
  /** With cam: also keep the overlay's pixels (`cam.overlayRgb`, default false), for a caller that writes them elsewhere (the PACS Secondary Capture). */
  overlayRgb?: boolean;
  colormap?: Colormap; // default 'jet'
  alpha?: number; // overlay opacity 0..1, default 0.45
  /** Override the card's decision threshold (0..1). */
  threshold?: number;
  /**
   * Analyse even what the input gate rejects (default false). Without it, the image's outcome is
   * `rejected` (422 not_a_chest_xray or outside_intended_use, no Grad-CAM); with it, `analysed`,
   * with `rejected: true` and a warning in the result.
   */
  force?: boolean;
}

export interface CamResult {
  /** Grad-CAM at the CAM layer resolution, normalised to [0,1]. */
  map: Float32Array;
  mapWidth: number;
  mapHeight: number;
  /**
   * What 1 on the map means: `fixed` = the card's gradcam.display_scale, the same for every film
   * (maps of two films compare); otherwise this film's own maximum (`value`, 0 when nothing is positive).
   */
  scale?: { value: number; fixed: boolean };
  /** PNG of the overlay at the original image size (longest side capped for the web). */
  overlayPng: Buffer;
  /** The colour-mapped heatmap alone, opaque indexed-colour PNG (palette = the colour map) at the overlay's size (the overlay blends these pixels). */
  heatmapPng?: Buffer;
  /** With `overlayRgb: true`: the overlay's pixels, interleaved 8-bit RGB (what overlayPng encodes). */
  overlayRgb?: { data: Uint8Array; width: number; height: number };
}

export interface AnalysisResult {
  label: string;
  probability: number; // calibrated, sigmoid(logit / temperature + bias)
  logit: number; // raw logit
  threshold: number;
  model: { name: string; version: string };
  image: { width: number; height: number; format: SourceFormat };
  timings_ms: Record<string, number>;
  cam?: CamResult;
  warnings: string[];
  /** Safe, non-identifying notes from decoding (e.g. "DICOM VOI window applied"). */
  notes?: string[];
  /**
   * The input gate's verdict (= gate.rejected): true when this is judged not to be a chest X-ray.
   * Such a label and probability are meaningless; they are only computed because of batching, or
   * because the caller forced the analysis (then `warnings` says so).
   */
  rejected: boolean;
  reason?: RejectionReason;
  /** Image checks, the model's gate score and the reasons of a rejection. */
  gate: GateResult;
  /** Ensemble disagreement in [0, 0.5] (population std of the members' probabilities); null when the model has no ensemble. */
  uncertainty: number | null;
  /** uncertainty > the card's cutoff: "uncertain: refer to a clinician" (also in `warnings`). */
  uncertain: boolean;
  /** The site profile the answer was decided with (src/site); absent without one. */
  site?: SiteSummary;
}

/**
 * What became of one input: the engine decides it in one place (Engine.analyseStream), every front
 * end only renders it.
 * - analysed: a result to show (`result.rejected` is true only when the analysis was forced).
 * - rejected: the input gate refused the image (`error` is its 422, code = `result.reason`:
 *   not_a_chest_xray or outside_intended_use); `result` carries the gate and image facts, its label
 *   and probability are meaningless and must not be shown.
 * - failed: it could not be read, decoded or analysed (`error`: a PneumoError for user-facing
 *   problems, any other Error is unexpected).
 */
export type Outcome =
  | { status: 'analysed'; result: AnalysisResult }
  | { status: 'rejected'; result: AnalysisResult; error: PneumoError }
  | { status: 'failed'; error: Error };
