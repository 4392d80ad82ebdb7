/**
 * The browser's image library behind the interface of src/image/sharp-io.ts (the browser build
 * puts this module in its place): raster decoding with createImageBitmap + a 2D canvas, resizing
 * and PNG encoding with canvases. Everything else (sniffing, PNG checksums, DICOM, the decode
 * budgets, preprocessing, the gate, Grad-CAM, the overlay) is the Node engine's own code.
 *
 * What the browser cannot read as the server does is refused with a message that says so (the page
 * then offers the server when there is one): TIFF (Chromium has no TIFF decoder) and 16-bit PNG
 * (a canvas holds 8 bits per sample; the server reads all 16).
 */
import { PneumoError } from '../errors.ts';
import { checkAnalysisCost, checkDecodeCost, defaultMaxAnalysisBytes, workSize, type DecodeLimits } from '../image/limits.ts';
import { resizeAntialias } from '../image/resample.ts';
import type { RawImage, ResizeGray8 } from '../image/raw.ts';

export type RasterLimits = DecodeLimits;

/** A decoded raster at the working size (see workSize), with the size the file declares. */
export type ReducedImage = RawImage & { source?: { width: number; height: number } };

/** Samples as they come out of a decoder: 8 or 16 bits unsigned, or float. */
export type Samples = Uint8Array | Uint16Array | Float32Array;

/**
 * Reduces interleaved samples to outWidth x outHeight, keeping the sample type (rounded for
 * integers). The server reduces in libvips (triangle filter); the browser has no such native
 * resampler, so this is the contract's own antialiased triangle filter (src/image/resample.ts),
 * channel by channel: the same kind of filter, not the same rounding (see README, "Run it in your
 * browser", for how close large images stay).
 */
export async function reduceSamples(
  samples: Samples,
  width: number,
  height: number,
  channels: 1 | 2 | 3 | 4,
  outWidth: number,
  outHeight: number,
): Promise<Samples> {
  const n = width * height;
  const m = outWidth * outHeight;
  const out =
    samples instanceof Uint8Array
      ? new Uint8Array(m * channels)
      : samples instanceof Uint16Array
        ? new Uint16Array(m * channels)
        : new Float32Array(m * channels);
  const round = !(out instanceof Float32Array);
  const plane = new Float32Array(n);
  for (let c = 0; c < channels; c++) {
    for (let p = 0; p < n; p++) plane[p] = samples[p * channels + c];
    const r = resizeAntialias(plane, width, height, outWidth, outHeight);
    for (let p = 0; p < m; p++) out[p * channels + c] = round ? Math.round(r[p]) : r[p];
  }
  return out;
}

/** The 415 of an input this device cannot read; its message names the way out. */
export const notOnDevice = (what: string): PneumoError =>
  new PneumoError(
    'unsupported_media_type',
    `${what} cannot be decoded on this device; analyse it on the server, or convert it to 8-bit PNG.`,
  );

function context(width: number, height: number): OffscreenCanvasRenderingContext2D {
  const ctx = new OffscreenCanvas(width, height).getContext('2d', { willReadFrequently: true, colorSpace: 'srgb' });
  if (!ctx) throw new Error('no 2D canvas in this browser');
  return ctx;
}

/** PNG IHDR bit depth (byte 24), or 0 when the header is too short to say. */
const pngBitDepth = (b: Uint8Array): number => (b.length > 24 ? b[24] : 0);

const ascii = (b: Uint8Array, at: number, n: number): string => String.fromCharCode(...b.subarray(at, at + n));

/**
 * The channels sharp gives for this file, from its header (so the device sees the same image as
 * the server: a gray file is gray, alpha is kept where the file has it): PNG colour type (palette:
 * alpha when a tRNS chunk precedes IDAT), JPEG frame components; null (WebP) = from the pixels.
 */
function declaredLayout(b: Uint8Array, format: string): { gray: boolean; alpha: boolean } | null {
  if (format === 'png' && b.length > 25) {
    const type = b[25];
    if (type === 3) {
      for (let pos = 8; pos + 8 <= b.length;) {
        const len = ((b[pos] << 24) | (b[pos + 1] << 16) | (b[pos + 2] << 8) | b[pos + 3]) >>> 0;
        const name = ascii(b, pos + 4, 4);
        if (name === 'tRNS') return { gray: false, alpha: true };
        if (name === 'IDAT') break;
        pos += 12 + len;
      }
      return { gray: false, alpha: false };
    }
    return { gray: type === 0 || type === 4, alpha: type === 4 || type === 6 };
  }
  if (format === 'jpeg') {
    for (let pos = 2; pos + 9 < b.length && b[pos] === 0xff;) {
      const marker = b[pos + 1];
      if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
        return { gray: b[pos + 9] === 1, alpha: false };
      }
      pos += 2 + ((b[pos + 2] << 8) | b[pos + 3]);
    }
  }
  return null;
}

/** Decodes a raster image to RawImage with the channels sharp would give (see declaredLayout). */
export async function decodeRaster(bytes: Uint8Array, format: string, limits: RasterLimits): Promise<ReducedImage> {
  if (format === 'tiff') throw notOnDevice('A TIFF file');
  if (format === 'png' && pngBitDepth(bytes) === 16) throw notOnDevice('A 16-bit PNG');
  let bitmap: ImageBitmap;
  try {
    // No colour management and no premultiplication: the file's own sample values, as sharp reads them.
    bitmap = await createImageBitmap(new Blob([bytes as Uint8Array<ArrayBuffer>]), {
      colorSpaceConversion: 'none',
      premultiplyAlpha: 'none',
      imageOrientation: 'from-image',
    });
  } catch {
    throw new PneumoError('undecodable_image', `The ${format.toUpperCase()} file could not be decoded.`);
  }
  const { width, height } = bitmap;
  try {
    checkDecodeCost(width, height, 4, 1, limits);
    // The browser's RGBA copy and this float image, both at full size, then the working copies.
    const spec = { width, height, channels: 4, bytesPerSample: 1, fullResExtraPerSample: 4 };
    checkAnalysisCost(spec, limits.maxAnalysisBytes ?? defaultMaxAnalysisBytes());
    const ctx = context(width, height);
    ctx.drawImage(bitmap, 0, 0);
    const rgba = ctx.getImageData(0, 0, width, height, { colorSpace: 'srgb' }).data;
    let layout = declaredLayout(bytes, format);
    if (!layout) {
      let gray = true;
      let opaque = true;
      for (let i = 0; i < rgba.length && (gray || opaque); i += 4) {
        if (rgba[i] !== rgba[i + 1] || rgba[i] !== rgba[i + 2]) gray = false;
        if (rgba[i + 3] !== 255) opaque = false;
      }
      layout = { gray, alpha: !opaque };
    }
    const { gray, alpha } = layout;
    const channels = ((gray ? 1 : 3) + (alpha ? 1 : 0)) as RawImage['channels'];
    const n = width * height;
    const data = new Float32Array(n * channels);
    for (let p = 0, o = 0; p < n; p++) {
      const i = p * 4;
      data[o++] = rgba[i];
      if (!gray) {
        data[o++] = rgba[i + 1];
        data[o++] = rgba[i + 2];
      }
      if (alpha) data[o++] = rgba[i + 3];
    }
    const work = workSize(width, height);
    if (work.width === width && work.height === height) return { data, width, height, channels };
    const reduced = (await reduceSamples(data, width, height, channels, work.width, work.height)) as Float32Array;
    return { data: reduced, ...work, channels, source: { width, height } };
  } finally {
    bitmap.close();
  }
}

/** Interleaved 8-bit pixels (1..4 channels) as canvas RGBA. */
function toImageData(pixels: Uint8Array, width: number, height: number, channels: 1 | 2 | 3 | 4): ImageData {
  const out = new ImageData(width, height);
  const d = out.data;
  for (let p = 0, i = 0; p < width * height; p++, i += channels) {
    const o = p * 4;
    if (channels <= 2) d[o] = d[o + 1] = d[o + 2] = pixels[i];
    else {
      d[o] = pixels[i];
      d[o + 1] = pixels[i + 1];
      d[o + 2] = pixels[i + 2];
    }
    d[o + 3] = channels === 2 ? pixels[i + 1] : channels === 4 ? pixels[i + 3] : 255;
  }
  return out;
}

/** Downscales an 8-bit gray image for display (overlays; not for model input). */
export const resizeGray8: ResizeGray8 = async (pixels, width, height, outWidth, outHeight) => {
  const src = new OffscreenCanvas(width, height);
  src.getContext('2d')!.putImageData(toImageData(pixels, width, height, 1), 0, 0);
  const ctx = context(outWidth, outHeight);
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(src, 0, 0, outWidth, outHeight);
  const rgba = ctx.getImageData(0, 0, outWidth, outHeight).data;
  const out = new Uint8Array(outWidth * outHeight);
  for (let p = 0; p < out.length; p++) out[p] = rgba[p * 4];
  return out;
};

/** Encodes interleaved 8-bit pixels (1..4 channels) as PNG. */
export async function encodePng(pixels: Uint8Array, width: number, height: number, channels: 1 | 2 | 3 | 4): Promise<Buffer> {
  const canvas = new OffscreenCanvas(width, height);
  canvas.getContext('2d')!.putImageData(toImageData(pixels, width, height, channels), 0, 0);
  const blob = await canvas.convertToBlob({ type: 'image/png' });
  return Buffer.from(await blob.arrayBuffer());
}

/**
 * The indexed-colour PNG of sharp-io's encodePngIndexed (one palette index per pixel, the palette as
 * RGB triples): the canvas writes the same pixels as opaque RGB(A).
 */
export async function encodePngIndexed(index: Uint8Array, width: number, height: number, palette: Uint8Array): Promise<Buffer> {
  const rgb = new Uint8Array(index.length * 3);
  for (let p = 0; p < index.length; p++) {
    const i = index[p] * 3;
    rgb[p * 3] = palette[i];
    rgb[p * 3 + 1] = palette[i + 1];
    rgb[p * 3 + 2] = palette[i + 2];
  }
  return encodePng(rgb, width, height, 3);
}
