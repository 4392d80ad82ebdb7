/**
 * The only module that imports sharp: raster decoding (JPEG, PNG, WebP, TIFF) to RawImage and PNG
 * encoding of 8-bit RGB buffers. Everything else sees plain typed arrays.
 */
import sharp from 'sharp';
import { PneumoError } from '../errors.ts';
import { GRAY_OF_EQUAL_RGB, type RawImage, type ResizeGray8 } from './raw.ts';
import { encodePngFast, encodePngIndexed as encodeIndexed } from './png-encode.ts';
import { checkAnalysisCost, checkDecodeCost, defaultMaxAnalysisBytes, workSize, type DecodeLimits } from './limits.ts';

// libvips caches operations by their inputs, but every image here arrives once: the cache only costs
// time (0.25-0.3 ms of a 224x224 JPEG's 1.3 ms decode, measured) and holds memory after the request.
sharp.cache(false);

/** maxPixels and maxDecodedBytes, both checked from the header before any pixel is decoded. */
export type RasterLimits = DecodeLimits;

/** A decoded raster at the working size (see workSize), with the size the file declares. */
export type ReducedImage = RawImage & { source?: { width: number; height: number } };

/**
 * libvips / libjpeg / libtiff / libspng messages that mean the file is damaged (cut short, a strip or
 * scan missing, corrupt entropy-coded data), as opposed to a format we do not read.
 */
const DAMAGE =
  /premature end|truncat|corrupt|read error|short|unexpected end|crc|checksum|out of data|not enough data|bad huffman|extraneous bytes|bogus|inconsistent|invalid (sos|code)|overrun|incomplete/i;

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
  if (DAMAGE.test(message) || /warning treated as error/i.test(message)) {
    return new PneumoError('damaged_image', `The ${format} file is damaged (${hint}); a damaged image is not analysed.`);
  }
  return new PneumoError('undecodable_image', `The ${format} file could not be decoded (${hint}).`);
}

/**
 * Decodes a raster image to RawImage (0..255 scale, 16-bit divided by 257), keeping alpha, upright
 * by its EXIF orientation. An image larger than the working size is reduced to it by libvips while
 * it decodes (shrink-on-load for JPEG, streamed otherwise), so no full-size copy is ever made in
 * JavaScript; the whole analysis is checked against its budget from the header first. Damage is
 * 422 damaged_image: a decoder error (a short TIFF strip, a cut PNG) or, for JPEG, any warning.
 */
export async function decodeRaster(bytes: Uint8Array, format: string, limits: RasterLimits): Promise<ReducedImage> {
  // Only the first page of a multi-page TIFF (or frame of an animated WebP) is ever decoded.
  // JPEG: any libjpeg warning is damage (a premature end of a scan is only a warning). Other formats:
  // errors (a short TIFF strip, a cut PNG); their warnings are mostly benign metadata (a TIFF tag with
  // the wrong count, an sRGB profile libpng dislikes), and PNG chunk CRCs are checked in decode.ts.
  const failOn = format === 'jpeg' ? ('warning' as const) : ('error' as const);
  const options = { limitInputPixels: limits.maxPixels, failOn, sequentialRead: true, pages: 1, page: 0 };
  try {
    const meta = await sharp(bytes, options).metadata();
    const sixteen = meta.depth === 'ushort';
    const gray = meta.channels !== undefined && meta.channels <= 2 && !meta.isPalette;
    // libvips drops alpha when converting to b-w, so gray+alpha is decoded as RGBA (R=G=B) and collapsed.
    const grayAlpha = gray && meta.channels === 2;
    // The decoded buffer's size, from the header: refused (413) before libvips allocates it.
    const outChannels = gray && !grayAlpha ? 1 : meta.isPalette ? (meta.hasAlpha ? 4 : 3) : grayAlpha ? 4 : (meta.channels ?? 4);
    const width = meta.width ?? 0;
    const height = meta.pageHeight ?? meta.height ?? 0;
    checkDecodeCost(width, height, outChannels, sixteen ? 2 : 1, limits);
    // libvips may hold a decoded frame while it reduces (an interlaced PNG, a tiled TIFF): counted once.
    const spec = { width, height, channels: outChannels, bytesPerSample: sixteen ? 2 : 1, fullResExtraPerSample: 0 };
    checkAnalysisCost(spec, limits.maxAnalysisBytes ?? defaultMaxAnalysisBytes());
    // EXIF orientation is applied (a phone photo of a film arrives upright, as a browser shows it);
    // the orientation tag only swaps width and height, so the cost checks above hold.
    let pipeline = sharp(bytes, options).autoOrient();
    const swapped = (meta.orientation ?? 1) >= 5;
    const [w, h] = swapped ? [height, width] : [width, height];
    const work = workSize(w, h);
    if (work.width !== w || work.height !== h) pipeline = pipeline.resize(work.width, work.height, { fit: 'fill', kernel: 'linear' });
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
    let outChannelsRead = channels;
    if (!sixteen && channels === 3 && equalRgb(data, pixels)) {
      // A gray film stored as RGB (most JPEGs of radiographs): read as one channel holding its
      // gray_bt601, the very values toGray would give the RGB (GRAY_OF_EQUAL_RGB), from a third of the memory.
      out = new Float32Array(pixels);
      for (let p = 0, i = 0; p < pixels; p++, i += 3) out[p] = GRAY_OF_EQUAL_RGB[data[i]];
      outChannelsRead = 1;
    } else if (keep) {
      out = new Float32Array(pixels * 2);
      for (let p = 0; p < pixels; p++) {
        out[p * 2] = samples[p * 4] / div;
        out[p * 2 + 1] = samples[p * 4 + 3] / div;
      }
    } else {
      out = new Float32Array(samples); // native element-wise conversion
      if (div !== 1) for (let i = 0; i < n; i++) out[i] /= div;
    }
    const image: ReducedImage = { data: out, width: info.width, height: info.height, channels: outChannelsRead };
    if (info.width !== w || info.height !== h) image.source = { width: w, height: h };
    return image;
  } catch (e) {
    if (e instanceof PneumoError) throw e;
    throw toPneumoError(e, format.toUpperCase());
  }
}

/** Whether every pixel of interleaved 8-bit RGB has red = green = blue (stops at the first that does not). */
function equalRgb(data: Uint8Array, pixels: number): boolean {
  for (let p = 0, i = 0; p < pixels; p++, i += 3) if (data[i] !== data[i + 1] || data[i] !== data[i + 2]) return false;
  return true;
}

/** Samples as they come out of a decoder: 8 or 16 bits unsigned, or float. */
export type Samples = Uint8Array | Uint16Array | Float32Array;

/**
 * Reduces interleaved samples (1 or 3 channels) to outWidth x outHeight in libvips (triangle
 * filter, antialiased), keeping the sample type: the DICOM path's native downscale of a large
 * frame before any float copy.
 */
export async function reduceSamples(
  samples: Samples,
  width: number,
  height: number,
  channels: 1 | 3,
  outWidth: number,
  outHeight: number,
): Promise<Samples> {
  const depth = samples instanceof Uint8Array ? 'uchar' : samples instanceof Uint16Array ? 'ushort' : 'float';
  const out = await sharp(samples, { raw: { width, height, channels }, limitInputPixels: false })
    .resize(outWidth, outHeight, { fit: 'fill', kernel: 'linear' })
    .raw({ depth })
    .toBuffer();
  const n = outWidth * outHeight * channels;
  if (depth === 'uchar') return new Uint8Array(out.buffer, out.byteOffset, n);
  // A fresh aligned copy (the Buffer may come from a pool at an odd offset).
  const aligned = new Uint8Array(out).buffer;
  return depth === 'ushort' ? new Uint16Array(aligned, 0, n) : new Float32Array(aligned, 0, n);
}

/** Downscales an 8-bit gray image for display (previews, overlays; not for model input). */
export const resizeGray8: ResizeGray8 = async (pixels, width, height, outWidth, outHeight) => {
  const out = await sharp(pixels, { raw: { width, height, channels: 1 } })
    .resize(outWidth, outHeight, { fit: 'fill' })
    .toColourspace('b-w')
    .raw()
    .toBuffer();
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
};

/**
 * Encodes interleaved 8-bit pixels (1..4 channels) as PNG: ./png-encode.ts (Up filter, Huffman-coded
 * in the thread pool), lossless, about a third of sharp's CPU time for the engine's overlays.
 */
export async function encodePng(pixels: Uint8Array, width: number, height: number, channels: 1 | 2 | 3 | 4): Promise<Buffer> {
  return encodePngFast(pixels, width, height, channels);
}

/** Encodes an indexed-colour PNG (one palette index per pixel; the palette as RGB triples): ./png-encode.ts. */
export async function encodePngIndexed(index: Uint8Array, width: number, height: number, palette: Uint8Array): Promise<Buffer> {
  return encodeIndexed(index, width, height, palette);
}
