/** Stage 1, decode: bytes (any supported format, sniffed from magic bytes) -> DecodedImage. */
import { PneumoError } from '../errors.ts';
import type { DecodedImage } from '../types.ts';
import { decodeDicom } from './dicom.ts';
import { decodeRaster } from './sharp-io.ts';
import { sniffFormat } from './sniff.ts';

export interface DecodeOptions {
  /** Largest accepted width*height (default 50 megapixels); checked before decoding pixels. */
  maxPixels?: number;
  /** Smallest accepted width and height (default 16). */
  minSide?: number;
}

export const DEFAULT_MAX_PIXELS = 50_000_000;
export const DEFAULT_MIN_SIDE = 16;

/** Decodes JPEG, PNG, WebP, TIFF or DICOM bytes to a RawImage with values in 0..255. */
export async function decodeImage(bytes: Uint8Array, opts: DecodeOptions = {}): Promise<DecodedImage> {
  const maxPixels = opts.maxPixels ?? DEFAULT_MAX_PIXELS;
  const minSide = opts.minSide ?? DEFAULT_MIN_SIDE;
  if (bytes.length === 0) throw new PneumoError(400, 'bad_request', 'The upload is empty.');
  const format = sniffFormat(bytes);
  if (format === null) {
    throw new PneumoError(415, 'unsupported_media_type', 'Unsupported file type: expected JPEG, PNG, WebP, TIFF or DICOM.');
  }
  const decoded: DecodedImage =
    format === 'dicom' ? decodeDicom(bytes, { maxPixels }) : { image: await decodeRaster(bytes, format, { maxPixels }), format, notes: [] };
  const { width, height } = decoded.image;
  if (width < minSide || height < minSide) {
    throw new PneumoError(
      422,
      'unusable_image',
      `The image is ${width}x${height} pixels; at least ${minSide}x${minSide} is needed for an analysis.`,
    );
  }
  return decoded;
}
