/** Stage 1, decode: bytes (any supported format, sniffed from magic bytes) -> DecodedImage. */
import { crc32 } from 'node:zlib';
import { PneumoError } from '../errors.ts';
import type { DecodedImage } from '../types.ts';
import { decodeDicom } from './dicom.ts';
import { DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_PIXELS, defaultMaxDecodedBytes } from './limits.ts';
import { decodeRaster } from './sharp-io.ts';
import { sniffFormat } from './sniff.ts';

export interface DecodeOptions {
  /** Largest accepted width*height (default 50 megapixels); checked before decoding pixels. */
  maxPixels?: number;
  /**
   * Largest accepted decoded size in bytes, width x height x channels x bytes per sample (default
   * 128 MiB, or $PNEUMOLENS_MAX_DECODED_MB); checked from the header before decoding or inflating.
   */
  maxDecodedBytes?: number;
  /** Smallest accepted width and height (default 16). */
  minSide?: number;
}

export { DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_PIXELS, defaultMaxDecodedBytes };
export const DEFAULT_MIN_SIDE = 16;

/**
 * PNG chunk checksums (CRC-32), which libpng does not enforce for every chunk: a PNG with a bad CRC
 * is damaged, and a damaged medical image is refused (422) rather than analysed as if intact.
 * Chunks cut short are left to the decoder, which refuses truncated files.
 */
function checkPngCrcs(bytes: Uint8Array): void {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let pos = 8; pos + 12 <= buf.length;) {
    const length = buf.readUInt32BE(pos);
    const end = pos + 12 + length;
    if (end > buf.length) return;
    if (crc32(buf.subarray(pos + 4, end - 4)) !== buf.readUInt32BE(end - 4)) {
      const type = buf.toString('latin1', pos + 4, pos + 8).replace(/[^A-Za-z]/g, '?');
      throw new PneumoError('undecodable_image', `The PNG file is damaged: the checksum of its ${type} chunk does not match.`);
    }
    if (buf.toString('latin1', pos + 4, pos + 8) === 'IEND') return;
    pos = end;
  }
}

/** Decodes JPEG, PNG, WebP, TIFF or DICOM bytes to a RawImage with values in 0..255. */
export async function decodeImage(bytes: Uint8Array, opts: DecodeOptions = {}): Promise<DecodedImage> {
  const maxPixels = opts.maxPixels ?? DEFAULT_MAX_PIXELS;
  const limits = { maxPixels, maxDecodedBytes: opts.maxDecodedBytes ?? defaultMaxDecodedBytes() };
  const minSide = opts.minSide ?? DEFAULT_MIN_SIDE;
  if (bytes.length === 0) throw new PneumoError('bad_request', 'The upload is empty.');
  const format = sniffFormat(bytes);
  if (format === null) {
    throw new PneumoError('unsupported_media_type', 'Unsupported file type: expected JPEG, PNG, WebP, TIFF or DICOM.');
  }
  if (format === 'png') checkPngCrcs(bytes);
  const decoded: DecodedImage =
    format === 'dicom' ? await decodeDicom(bytes, limits) : { image: await decodeRaster(bytes, format, limits), format, notes: [] };
  const { width, height } = decoded.image;
  if (width < minSide || height < minSide) {
    throw new PneumoError(
      'unusable_image',
      `The image is ${width}x${height} pixels; at least ${minSide}x${minSide} is needed for an analysis.`,
    );
  }
  return decoded;
}
