/**
 * The overlay: a CAM map upsampled (bilinear, align_corners=false) onto the grayscale image,
 * coloured with a colormap and blended with opacity alpha, encoded as PNG. Separate from the CAM
 * computation so front ends can re-render with another colormap or opacity.
 */
import { PneumoError } from '../errors.ts';
import { encodePng, encodePngIndexed, resizeGray8 } from '../image/sharp-io.ts';
import { grayOf } from '../image/raw.ts';
import type { RawImage } from '../image/raw.ts';
import { COLORMAPS, colormapLut, type Colormap } from './colormaps.ts';
import type { CamGrid } from './gradcam.ts';

export interface OverlayOptions {
  colormap?: Colormap; // default 'jet'
  alpha?: number; // opacity of the heat map, 0..1, default 0.45
  /** Longest side of the overlay in pixels (default 768: the 7x7 or 14x14 map carries no finer detail); smaller images keep their size. */
  maxSide?: number;
}

export const DEFAULT_COLORMAP: Colormap = 'jet';
export const DEFAULT_ALPHA = 0.45;
export const DEFAULT_MAX_SIDE = 768;

/** Checks a caller's overlay options and completes them with the defaults (PneumoError 400 on bad values). */
export function resolveOverlayOptions(opts: OverlayOptions): Required<OverlayOptions> {
  const colormap = opts.colormap ?? DEFAULT_COLORMAP;
  const alpha = opts.alpha ?? DEFAULT_ALPHA;
  const maxSide = opts.maxSide ?? DEFAULT_MAX_SIDE;
  if (!COLORMAPS.includes(colormap)) {
    throw new PneumoError('bad_request', `colormap must be one of ${COLORMAPS.join(', ')} (got ${String(colormap)}).`);
  }
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha < 0 || alpha > 1) {
    throw new PneumoError('bad_request', `alpha (overlay opacity) must be a number between 0 and 1 (got ${String(alpha)}).`);
  }
  if (!Number.isInteger(maxSide) || maxSide < 1) throw new Error(`maxSide must be a positive integer (got ${maxSide})`);
  return { colormap, alpha, maxSide };
}

/** Output size: the image size scaled down so that its longest side is at most maxSide. */
export function overlaySize(width: number, height: number, maxSide: number): { width: number; height: number } {
  const s = Math.min(1, maxSide / Math.max(width, height));
  return { width: Math.max(1, Math.round(width * s)), height: Math.max(1, Math.round(height * s)) };
}

/** A single-channel image in 0..255 at the overlay size. */
export interface GrayBase {
  data: ArrayLike<number>;
  width: number;
  height: number;
}

/**
 * The grayscale image at overlay size (downscaled with sharp when larger than maxSide). `gray` is
 * the image's gray_bt601 when the caller has it already (the engine computes it once per image).
 */
export async function overlayBase(image: RawImage, maxSide = DEFAULT_MAX_SIDE, gray: Float32Array = grayOf(image)): Promise<GrayBase> {
  const { width, height } = overlaySize(image.width, image.height, maxSide);
  if (width === image.width && height === image.height) return { data: gray, width, height };
  const gray8 = new Uint8Array(new Uint8ClampedArray(gray).buffer); // native round + clamp to 0..255
  return { data: await resizeGray8(gray8, image.width, image.height, width, height), width, height };
}

/**
 * The colour-map index (0..255) of every pixel of the CAM upsampled (bilinear, align_corners=false,
 * edge clamping, as `upsampleBilinear`) to width x height: round(clamp(value, 0, 1) * 255). Separable:
 * each CAM row is interpolated across once, then every output row mixes two of those rows, with
 * the same float64 products and the same float32 rounding of the value as upsampleBilinear.
 */
export function heatmapIndex(cam: CamGrid, width: number, height: number): Uint8Array {
  const { map: src, width: w, height: h } = cam;
  if (src.length !== w * h) throw new Error(`heatmapIndex: expected ${w * h} values, got ${src.length}`);
  const sx = w / width;
  const sy = h / height;
  const rows = new Float64Array(h * width);
  for (let x = 0; x < width; x++) {
    const u = Math.max((x + 0.5) * sx - 0.5, 0);
    const x0 = Math.min(Math.floor(u), w - 1);
    const x1 = Math.min(x0 + 1, w - 1);
    const fx = u - x0;
    for (let r = 0; r < h; r++) rows[r * width + x] = src[r * w + x0] * (1 - fx) + src[r * w + x1] * fx;
  }
  const out = new Uint8Array(width * height);
  for (let y = 0, o = 0; y < height; y++) {
    const v = Math.max((y + 0.5) * sy - 0.5, 0);
    const y0 = Math.min(Math.floor(v), h - 1);
    const y1 = Math.min(y0 + 1, h - 1);
    const fy = v - y0;
    const gy = 1 - fy;
    const top = y0 * width;
    const bottom = y1 * width;
    for (let x = 0; x < width; x++, o++) {
      const t = Math.fround(rows[top + x] * gy + rows[bottom + x] * fy);
      out[o] = ((t < 0 ? 0 : t > 1 ? 1 : t) * 255 + 0.5) | 0;
    }
  }
  return out;
}

/** Opaque RGBA pixels of colour-map indices. */
function indexToRgba(index: Uint8Array, lut: Uint8Array): Uint8ClampedArray {
  const rgba = new Uint8ClampedArray(index.length * 4);
  for (let p = 0, o = 0; p < index.length; p++, o += 4) {
    const i = index[p] * 3;
    rgba[o] = lut[i];
    rgba[o + 1] = lut[i + 1];
    rgba[o + 2] = lut[i + 2];
    rgba[o + 3] = 255;
  }
  return rgba;
}

/**
 * The one heatmap renderer: the CAM upsampled (bilinear, align_corners=false) to width x height and
 * colour-mapped; opaque 8-bit RGBA. The overlay blends it over the image; the web page blends the
 * same pixels (served as `heatmap`) over the original it shows.
 */
export function heatmapRgba(cam: CamGrid, width: number, height: number, colormap: Colormap = DEFAULT_COLORMAP): Uint8ClampedArray {
  return indexToRgba(heatmapIndex(cam, width, height), colormapLut(colormap));
}

/** Blends the heatmap (heatmapRgba at the base size) over the gray base with opacity alpha; 8-bit RGB out. */
export function blendOverlay(
  base: GrayBase,
  cam: CamGrid,
  opts: OverlayOptions = {},
  heat?: Uint8ClampedArray,
): { rgb: Uint8ClampedArray; width: number; height: number } {
  const { alpha, colormap } = resolveOverlayOptions(opts);
  heat ??= heatmapRgba(cam, base.width, base.height, colormap);
  const { width, height, data } = base;
  const rgb = new Uint8ClampedArray(width * height * 3); // rounds and clamps on store
  const beta = 1 - alpha;
  for (let p = 0, o = 0, h = 0; p < width * height; p++, o += 3, h += 4) {
    const g = data[p] * beta;
    rgb[o] = g + alpha * heat[h];
    rgb[o + 1] = g + alpha * heat[h + 1];
    rgb[o + 2] = g + alpha * heat[h + 2];
  }
  return { rgb, width, height };
}

/** blendOverlay from colour-map indices: the same arithmetic (alpha * colour precomputed per LUT entry). */
function blendIndexed(base: GrayBase, index: Uint8Array, lut: Uint8Array, alpha: number): Uint8ClampedArray {
  const { width, height, data } = base;
  const n = width * height;
  if (index.length !== n) throw new Error(`blendIndexed: expected ${n} indices, got ${index.length}`);
  const tinted = new Float64Array(lut.length);
  for (let i = 0; i < lut.length; i++) tinted[i] = alpha * lut[i];
  const rgb = new Uint8ClampedArray(n * 3); // rounds and clamps on store
  const beta = 1 - alpha;
  for (let p = 0, o = 0; p < n; p++, o += 3) {
    const g = data[p] * beta;
    const i = index[p] * 3;
    rgb[o] = g + tinted[i];
    rgb[o + 1] = g + tinted[i + 1];
    rgb[o + 2] = g + tinted[i + 2];
  }
  return rgb;
}

/** The overlay as a PNG at the image size, longest side capped at maxSide. */
export async function renderOverlay(image: RawImage, cam: CamGrid, opts: OverlayOptions = {}): Promise<Buffer> {
  return (await renderCam(image, cam, { ...resolveOverlayOptions(opts), heatmap: false, rgb: false })).overlayPng;
}

/** What renderCam draws: overlay options already resolved (resolveOverlayOptions), and which outputs. */
export type RenderOptions = Required<OverlayOptions> & { heatmap: boolean; rgb: boolean };

/**
 * The overlay (RGB PNG) and, unless `heatmap: false`, the heatmap alone (the pixels of heatmapRgba
 * as an opaque indexed-colour PNG whose palette is the colour map, for a front end that blends it itself), both at the image size with the longest side capped at
 * maxSide, from one colour-mapped upsampling. `gray` is the image's gray_bt601 when the caller has it,
 * `base` its overlayBase at maxSide when the caller made it already (the engine makes it while the model runs).
 * With `rgb: true`, also the overlay's pixels as encoded (`overlayRgb`, interleaved 8-bit RGB), for
 * a caller that needs them (the PACS Secondary Capture) and would otherwise decode the PNG again.
 */
export async function renderCam(
  image: RawImage,
  cam: CamGrid,
  opts: RenderOptions,
  gray?: Float32Array,
  base?: GrayBase,
): Promise<{ overlayPng: Buffer; heatmapPng?: Buffer; overlayRgb?: OverlayRgb }> {
  const { colormap, alpha, maxSide } = opts; // resolved by the caller (the engine resolves them once per stream)
  base ??= await overlayBase(image, maxSide, gray);
  const { width, height } = base;
  const lut = colormapLut(colormap);
  const index = heatmapIndex(cam, width, height);
  const rgb = blendIndexed(base, index, lut, alpha);
  const pixels = new Uint8Array(rgb.buffer);
  const overlay = encodePng(pixels, width, height, 3);
  const overlayRgb = opts.rgb ? { overlayRgb: { data: pixels, width, height } } : {};
  if (!opts.heatmap) return { overlayPng: await overlay, ...overlayRgb };
  // The heatmap's pixels are colour-map entries: an indexed-colour PNG whose palette is the map.
  const [overlayPng, heatmapPng] = await Promise.all([overlay, encodePngIndexed(index, width, height, lut)]);
  return { overlayPng, heatmapPng, ...overlayRgb };
}

/** The overlay's pixels: interleaved 8-bit RGB, width x height. */
export interface OverlayRgb {
  data: Uint8Array;
  width: number;
  height: number;
}
