/**
 * The only module that imports sharp: raster decoding (JPEG, PNG, WebP, TIFF) to RawImage and PNG
 * encoding of 8-bit RGB buffers. Everything else sees plain typed arrays.
 */
import sharp from 'sharp';
import { PneumoError } from '../errors.ts';
import type { RawImage } from '../types.ts';
import { checkDecodeCost, type DecodeLimits } from './limits.ts';

/** maxPixels and maxDecodedBytes, both checked from the header before any pixel is decoded. */
export type RasterLimits = DecodeLimits;

/** Maps a sharp/libvips error to the user-facing PneumoError. */
function toPneumoError(e: unknown, format: string): PneumoError {
  const message = e instanceof Error ? e.message : String(e);
  if (/exceeds pixel limit/i.test(message)) {
    return new PneumoError('unusable_image', 'The image has too many pixels to be processed.');
  }
  // libvips messages may quote internals; keep only the first line, and only as a hint.
  const hint = message
    .split('\n')[0]
    .replace(/^Input (buffer|file) (has )?/i, '')
    .slice(0, 120);
  return new PneumoError('undecodable_image', `The ${format} file could not be decoded (${hint}).`);
}

/** Decodes a raster image to RawImage (0..255 scale, 16-bit divided by 257), keeping alpha, upright by its EXIF orientation. */
export async function decodeRaster(bytes: Uint8Array, format: string, limits: RasterLimits): Promise<RawImage> {
  // Only the first page of a multi-page TIFF (or frame of an animated WebP) is ever decoded.
  const options = { limitInputPixels: limits.maxPixels, failOn: 'truncated' as const, sequentialRead: true, pages: 1, page: 0 };
  try {
    const meta = await sharp(bytes, options).metadata();
    const sixteen = meta.depth === 'ushort';
    const gray = meta.channels !== undefined && meta.channels <= 2 && !meta.isPalette;
    // libvips drops alpha when converting to b-w, so gray+alpha is decoded as RGBA (R=G=B) and collapsed.
    const grayAlpha = gray && meta.channels === 2;
    // The decoded buffer's size, from the header: refused (413) before libvips allocates it.
    const outChannels = gray && !grayAlpha ? 1 : meta.isPalette ? (meta.hasAlpha ? 4 : 3) : grayAlpha ? 4 : (meta.channels ?? 4);
    checkDecodeCost(meta.width ?? 0, meta.pageHeight ?? meta.height ?? 0, outChannels, sixteen ? 2 : 1, limits);
    // EXIF orientation is applied (a phone photo of a film arrives upright, as a browser shows it);
    // the orientation tag only swaps width and height, so the cost check above holds.
    let pipeline = sharp(bytes, options).autoOrient();
    if (gray && !grayAlpha) pipeline = pipeline.toColourspace(sixteen ? 'grey16' : 'b-w');
    else if (meta.space === 'cmyk') pipeline = pipeline.toColourspace('srgb');
    else if (sixteen) pipeline = pipeline.toColourspace('rgb16');
    const { data, info } = await pipeline.raw({ depth: sixteen ? 'ushort' : 'uchar' }).toBuffer({ resolveWithObject: true });
    const n = info.width * info.height * info.channels;
    const samples = sixteen ? new Uint16Array(data.buffer, data.byteOffset, n) : data;
    const div = sixteen ? 257 : 1;
    const keep = grayAlpha && info.channels === 4 ? [0, 3] : null;
    const channels = (keep ? 2 : info.channels) as RawImage['channels'];
    const pixels = info.width * info.height;
    let out: Float32Array;
    if (keep) {
      out = new Float32Array(pixels * 2);
      for (let p = 0; p < pixels; p++) {
        out[p * 2] = samples[p * 4] / div;
        out[p * 2 + 1] = samples[p * 4 + 3] / div;
      }
    } else {
      out = new Float32Array(samples); // native element-wise conversion
      if (div !== 1) for (let i = 0; i < n; i++) out[i] /= div;
    }
    return { data: out, width: info.width, height: info.height, channels };
  } catch (e) {
    if (e instanceof PneumoError) throw e;
    throw toPneumoError(e, format.toUpperCase());
  }
}

/** Downscales an 8-bit gray image for display (previews, overlays; not for model input). */
export async function resizeGray8(
  pixels: Uint8Array,
  width: number,
  height: number,
  outWidth: number,
  outHeight: number,
): Promise<Uint8Array> {
  const out = await sharp(pixels, { raw: { width, height, channels: 1 } })
    .resize(outWidth, outHeight, { fit: 'fill' })
    .toColourspace('b-w')
    .raw()
    .toBuffer();
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

/** Encodes interleaved 8-bit pixels (1..4 channels) as PNG. */
export async function encodePng(pixels: Uint8Array, width: number, height: number, channels: 1 | 2 | 3 | 4): Promise<Buffer> {
  return sharp(pixels, { raw: { width, height, channels } }).png({ compressionLevel: 4 }).toBuffer();
}
