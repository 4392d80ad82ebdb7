/**
 * Decode budgets, checked from the header before any pixel is decoded or any byte inflated: a
 * pixel count, and a byte budget for the decoded pixels (width x height x channels x bytes per
 * sample), because a small file can declare a huge image (a 381 KB PNG of zeros can decode to
 * 392 MB). Both the server and the CLI decode through decodeImage and so share these bounds.
 */
import { PneumoError } from '../errors.ts';

export const DEFAULT_MAX_PIXELS = 50_000_000;
/** 128 MiB of decoded samples: a 16-bit 8000x8000 gray image, or 8-bit RGB of 44 megapixels. */
export const DEFAULT_MAX_DECODED_BYTES = 128 * 1024 * 1024;

/** Largest input file the CLI reads (64 MiB, or $PNEUMOLENS_MAX_FILE_MB); the server has its upload limit. */
export const DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024;

function envMb(name: string, env: Record<string, string | undefined>): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return undefined;
  const v = Number(raw);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`${name} must be a number of megabytes > 0, got '${raw}'`);
  return Math.round(v * 1024 * 1024);
}

/** The decode budget: PNEUMOLENS_MAX_DECODED_MB when set (server and CLI alike), else the default. */
export function defaultMaxDecodedBytes(env: Record<string, string | undefined> = process.env): number {
  return envMb('PNEUMOLENS_MAX_DECODED_MB', env) ?? DEFAULT_MAX_DECODED_BYTES;
}

/** The CLI's file size limit: PNEUMOLENS_MAX_FILE_MB when set, else the default. */
export function defaultMaxFileBytes(env: Record<string, string | undefined> = process.env): number {
  return envMb('PNEUMOLENS_MAX_FILE_MB', env) ?? DEFAULT_MAX_FILE_BYTES;
}

export interface DecodeLimits {
  /** Largest width*height accepted. */
  maxPixels: number;
  /** Largest width*height*channels*bytesPerSample accepted (the decoder's own output buffer). */
  maxDecodedBytes: number;
  /** Largest memory of the whole analysis (analysisBytes); unchecked when absent. */
  maxAnalysisBytes?: number;
}

const mb = (n: number): string => `${+(n / (1024 * 1024)).toFixed(1)} MB`;

/** The 413 of an image (or inflated data) larger than the decode budget. */
export function decodeBudgetError(bytes: number, limit: number, what = 'The image'): PneumoError {
  return new PneumoError(
    'payload_too_large',
    `${what} would decode to ${mb(bytes)}, more than the limit of ${mb(limit)}; send a smaller or 8-bit gray image.`,
  );
}

/** Throws 422 (too many pixels) or 413 (too many decoded bytes) before the decoder allocates anything. */
export function checkDecodeCost(width: number, height: number, channels: number, bytesPerSample: number, limits: DecodeLimits): void {
  if (width * height > limits.maxPixels) throw new PneumoError('unusable_image', 'The image has too many pixels to be processed.');
  const bytes = width * height * channels * bytesPerSample;
  if (bytes > limits.maxDecodedBytes) throw decodeBudgetError(bytes, limits.maxDecodedBytes);
}

/**
 * The longest side an analysis works at. A larger image is reduced to it in native code (libvips,
 * src/image/sharp-io.ts) straight from its decoded 8/16-bit samples, before any float copy; the
 * model's own resize (docs/model-contract.md) then runs on the reduced image. 1024 is more than 4x
 * the model input and above the overlay's longest side (768), so what the model and the user see
 * is unchanged in kind; test/image/engine-decode.test.ts states how close it stays to a full-size resize.
 */
export const WORK_MAX_SIDE = 1024;

/** The size an image of width x height is analysed at (the same when its longest side fits). */
export function workSize(width: number, height: number): { width: number; height: number } {
  const s = Math.min(1, WORK_MAX_SIDE / Math.max(width, height, 1));
  return { width: Math.max(1, Math.round(width * s)), height: Math.max(1, Math.round(height * s)) };
}

/**
 * 256 MiB for everything one analysis holds at once (or $PNEUMOLENS_MAX_ANALYSIS_MB): two analyses at
 * the budget plus the server's own ~400 MB stay under the 1 GiB a replica is given (README, Deploy).
 */
export const DEFAULT_MAX_ANALYSIS_BYTES = 256 * 1024 * 1024;

/** The whole-analysis budget: PNEUMOLENS_MAX_ANALYSIS_MB when set, else the default. */
export function defaultMaxAnalysisBytes(env: Record<string, string | undefined> = process.env): number {
  return envMb('PNEUMOLENS_MAX_ANALYSIS_MB', env) ?? DEFAULT_MAX_ANALYSIS_BYTES;
}

/** The overlay, heatmap and their PNGs at the overlay's size (768 px, RGBA, a few copies). */
const EXPLAIN_BYTES = 768 * 768 * 4 * 6;

export interface AnalysisCostSpec {
  width: number;
  height: number;
  channels: number;
  bytesPerSample: number;
  /**
   * Bytes per sample held at full resolution besides the decoded frame itself: a codec's working
   * buffers (OpenJPEG keeps a 32-bit value per sample), its output and the copy out of its heap,
   * a lookup-table output. 0 when the decoder streams into the reduction (libvips).
   */
  fullResExtraPerSample: number;
}

/**
 * Bytes of every intermediate of one analysis, from the header: the decoded frame and the
 * decoder's own buffers at full resolution, then at the working size the float image (channels x
 * 4), its gray copy and the resize passes (3 x 4 bytes a pixel), then the overlay and its PNGs.
 */
export function analysisBytes(s: AnalysisCostSpec): number {
  const full = s.width * s.height * s.channels * (s.bytesPerSample + s.fullResExtraPerSample);
  const work = workSize(s.width, s.height);
  return full + work.width * work.height * (s.channels * 4 + 12) + EXPLAIN_BYTES;
}

/** Throws 413 when the whole analysis of an image would hold more than the budget (checked before decoding). */
export function checkAnalysisCost(s: AnalysisCostSpec, maxAnalysisBytes: number): void {
  const bytes = analysisBytes(s);
  if (bytes > maxAnalysisBytes) {
    throw new PneumoError(
      'payload_too_large',
      `Analysing this ${s.width}x${s.height} image would take ${mb(bytes)} of memory (decoding at full size and the working copies), ` +
        `more than the limit of ${mb(maxAnalysisBytes)}; send a smaller or 8-bit gray image.`,
    );
  }
}
