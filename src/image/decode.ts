/** Stage 1, decode: bytes (any supported format, sniffed from magic bytes) -> DecodedImage. */
import { crc32 } from 'node:zlib';
import { PneumoError } from '../errors.ts';
import type { DecodedImage } from './raw.ts';
import { decodeDicom } from './dicom.ts';
import {
  DEFAULT_MAX_ANALYSIS_BYTES,
  DEFAULT_MAX_DECODED_BYTES,
  DEFAULT_MAX_PIXELS,
  defaultMaxAnalysisBytes,
  defaultMaxDecodedBytes,
} from './limits.ts';
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
  /**
   * Largest memory of the whole analysis: the decoded frame and the decoder's buffers at full size,
   * the working copies, the overlay (default 256 MiB, or $PNEUMOLENS_MAX_ANALYSIS_MB; see
   * analysisBytes in limits.ts); checked from the header before decoding.
   */
  maxAnalysisBytes?: number;
  /** Smallest accepted width and height (default 16). */
  minSide?: number;
}

export { DEFAULT_MAX_ANALYSIS_BYTES, DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_PIXELS, defaultMaxAnalysisBytes, defaultMaxDecodedBytes };
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
      throw new PneumoError('damaged_image', `The PNG file is damaged: the checksum of its ${type} chunk does not match.`);
    }
    if (buf.toString('latin1', pos + 4, pos + 8) === 'IEND') return;
    pos = end;
  }
}

/** More page headers (IFDs) than this in a TIFF is refused: real files have one to a few hundred. */
export const MAX_TIFF_PAGES = 1000;

/**
 * Walks a TIFF's chain of page headers (IFDs) and refuses more than MAX_TIFF_PAGES, or a chain that
 * loops, before libvips reads them all (150,000 page headers took it 4 s). Offsets past the end are
 * left to the decoder. BigTIFF is not walked.
 */
function checkTiffPages(bytes: Uint8Array): void {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.length < 8) return;
  const le = buf[0] === 0x49;
  const u16 = (at: number) => (le ? buf.readUInt16LE(at) : buf.readUInt16BE(at));
  const u32 = (at: number) => (le ? buf.readUInt32LE(at) : buf.readUInt32BE(at));
  if (u16(2) !== 42) return;
  const seen = new Set<number>();
  for (let ifd = u32(4); ifd !== 0 && ifd + 2 <= buf.length;) {
    if (seen.has(ifd)) throw new PneumoError('damaged_image', 'The TIFF file is damaged: its page headers form a loop.');
    seen.add(ifd);
    if (seen.size > MAX_TIFF_PAGES) {
      throw new PneumoError('unusable_image', `The TIFF file has more than ${MAX_TIFF_PAGES} pages; send the chest X-ray alone.`);
    }
    const next = ifd + 2 + u16(ifd) * 12;
    if (next + 4 > buf.length) return;
    ifd = u32(next);
  }
}

/** Decodes JPEG, PNG, WebP, TIFF or DICOM bytes to a RawImage with values in 0..255. */
export async function decodeImage(bytes: Uint8Array, opts: DecodeOptions = {}): Promise<DecodedImage> {
  const maxPixels = opts.maxPixels ?? DEFAULT_MAX_PIXELS;
  const limits = {
    maxPixels,
    maxDecodedBytes: opts.maxDecodedBytes ?? defaultMaxDecodedBytes(),
    maxAnalysisBytes: opts.maxAnalysisBytes ?? defaultMaxAnalysisBytes(),
  };
  const minSide = opts.minSide ?? DEFAULT_MIN_SIDE;
  if (bytes.length === 0) throw new PneumoError('bad_request', 'The upload is empty.');
  const format = sniffFormat(bytes);
  if (format === null) {
    throw new PneumoError('unsupported_media_type', 'Unsupported file type: expected JPEG, PNG, WebP, TIFF or DICOM.');
  }
  if (format === 'png') checkPngCrcs(bytes);
  if (format === 'tiff') checkTiffPages(bytes);
  let decoded: DecodedImage;
  if (format === 'dicom') decoded = await decodeDicom(bytes, limits);
  else {
    const { source, ...image } = await decodeRaster(bytes, format, limits);
    decoded = { image, format, notes: [], ...(source ? { source } : {}) };
  }
  const { width, height } = decoded.image;
  if (width < minSide || height < minSide) {
    throw new PneumoError(
      'unusable_image',
      `The image is ${width}x${height} pixels; at least ${minSide}x${minSide} is needed for an analysis.`,
    );
  }
  return decoded;
}
