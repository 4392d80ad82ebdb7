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
