/**
 * The one image type of every stage, and its colour step: what a decoder produces and every later
 * stage (checks, preprocessing, explanations) reads. The bottom of the image layer: it imports nothing.
 */

/** The one image type. Values are in 0..255 (8-bit scale) whatever the source bit depth. */
export interface RawImage {
  data: Float32Array; // interleaved, row-major, length = width * height * channels
  width: number;
  height: number;
  channels: 1 | 2 | 3 | 4; // 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA
}

/**
 * Downscales an 8-bit gray image (`pixels`, width x height) to outWidth x outHeight, for display
 * (previews, overlays; not for model input): sharp on Node (sharp-io.ts), canvases in the browser (src/web/canvas-io.ts).
 */
export type ResizeGray8 = (pixels: Uint8Array, width: number, height: number, outWidth: number, outHeight: number) => Promise<Uint8Array>;

export type SourceFormat = 'jpeg' | 'png' | 'webp' | 'tiff' | 'dicom';

export interface DecodedImage {
  image: RawImage;
  format: SourceFormat;
  /** Safe, non-identifying notes (e.g. "DICOM MONOCHROME1 inverted"). Never patient tags. */
  notes: string[];
  /**
   * The size the file declares, when `image` was reduced to the working size in native code
   * (src/image/limits.ts workSize); absent when the image is analysed at its own size.
   */
  source?: { width: number; height: number };
}

// float32 at every step, in the order numpy evaluates the spec (bit-identical to the Python side).
const f = Math.fround;
const [wr, wg, wb] = [f(0.299), f(0.587), f(0.114)];

/**
 * gray_bt601 of a pixel whose red, green and blue are all v, for v = 0..255: the exact float32 value
 * toGray gives it (not always v: 15 gives 15.000001), for a decoder that reads such a film as gray.
 */
export const GRAY_OF_EQUAL_RGB: Float32Array = Float32Array.from({ length: 256 }, (_, v) => f(f(f(wr * v) + f(wg * v)) + f(wb * v)));

/** Colour step `gray_bt601`: alpha composited onto black, RGB -> 0.299 R + 0.587 G + 0.114 B. */
export function toGray(image: RawImage): Float32Array {
  const { data, width, height, channels } = image;
  const n = width * height;
  if (data.length !== n * channels) throw new Error(`toGray: expected ${n * channels} values, got ${data.length}`);
  if (channels === 1) return data.slice();
  const out = new Float32Array(n);
  for (let p = 0, i = 0; p < n; p++, i += channels) {
    if (channels === 2) {
      out[p] = f(data[i] * data[i + 1]) / 255;
      continue;
    }
    const g = f(f(f(wr * data[i]) + f(wg * data[i + 1])) + f(wb * data[i + 2]));
    out[p] = channels === 4 ? f(g * data[i + 3]) / 255 : g;
  }
  return out;
}

/** The gray image of the `gray_bt601` step: the image's own values when it has one channel (not copied). */
export function grayOf(image: RawImage): Float32Array {
  return image.channels === 1 ? image.data : toGray(image);
}
