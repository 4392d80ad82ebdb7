/**
 * The overlay: a CAM map upsampled (bilinear, align_corners=false) onto the grayscale image,
 * coloured with a colormap and blended with opacity alpha, encoded as PNG. Separate from the CAM
 * computation so front ends can re-render with another colormap or opacity.
 */
import { PneumoError } from '../errors.ts';
import { upsampleBilinear } from '../image/resample.ts';
import { encodePng, resizeGray8 } from '../image/sharp-io.ts';
import { toGray } from '../model/preprocess.ts';
import type { Colormap, RawImage } from '../types.ts';
import { COLORMAPS, colormapLut } from './colormaps.ts';
import type { CamGrid } from './gradcam.ts';

export interface OverlayOptions {
  colormap?: Colormap; // default 'jet'
  alpha?: number; // opacity of the heat map, 0..1, default 0.45
  /** Longest side of the overlay in pixels (default 768: the 7x7 map carries no finer detail); smaller images keep their size. */
  maxSide?: number;
}

export const DEFAULT_COLORMAP: Colormap = 'jet';
export const DEFAULT_ALPHA = 0.45;
export const DEFAULT_MAX_SIDE = 768;

/** Validates user overlay options (PneumoError 400 on bad values). */
export function checkOverlayOptions(opts: OverlayOptions): Required<OverlayOptions> {
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

/** The grayscale image at overlay size (downscaled with sharp when larger than maxSide). */
export async function overlayBase(image: RawImage, maxSide = DEFAULT_MAX_SIDE): Promise<GrayBase> {
  const gray = image.channels === 1 ? image.data : toGray(image);
  const { width, height } = overlaySize(image.width, image.height, maxSide);
  if (width === image.width && height === image.height) return { data: gray, width, height };
  const gray8 = new Uint8Array(new Uint8ClampedArray(gray).buffer); // native round + clamp to 0..255
  return { data: await resizeGray8(gray8, image.width, image.height, width, height), width, height };
}

/**
 * The one heatmap renderer: the CAM upsampled (bilinear, align_corners=false) to width x height and
 * colour-mapped; opaque 8-bit RGBA. The overlay blends it over the image; the web page blends the
 * same pixels (served as `heatmap`) over the original it shows.
 */
export function heatmapRgba(cam: CamGrid, width: number, height: number, colormap: Colormap = DEFAULT_COLORMAP): Uint8ClampedArray {
  const heat = upsampleBilinear(cam.map, cam.width, cam.height, width, height);
  const lut = colormapLut(colormap);
  const rgba = new Uint8ClampedArray(width * height * 4);
  for (let p = 0, o = 0; p < width * height; p++, o += 4) {
    const t = heat[p];
    const idx = (((t < 0 ? 0 : t > 1 ? 1 : t) * 255 + 0.5) | 0) * 3;
    rgba[o] = lut[idx];
    rgba[o + 1] = lut[idx + 1];
    rgba[o + 2] = lut[idx + 2];
    rgba[o + 3] = 255;
  }
  return rgba;
}

/** Blends the heatmap (heatmapRgba at the base size) over the gray base with opacity alpha; 8-bit RGB out. */
export function blendOverlay(
  base: GrayBase,
  cam: CamGrid,
  opts: OverlayOptions = {},
  heat: Uint8ClampedArray = heatmapRgba(cam, base.width, base.height, checkOverlayOptions(opts).colormap),
): { rgb: Uint8ClampedArray; width: number; height: number } {
  const { alpha } = checkOverlayOptions(opts);
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

/** The overlay as a PNG at the image size, longest side capped at maxSide. */
export async function renderOverlay(image: RawImage, cam: CamGrid, opts: OverlayOptions = {}): Promise<Buffer> {
  const { maxSide } = checkOverlayOptions(opts);
  const { rgb, width, height } = blendOverlay(await overlayBase(image, maxSide), cam, opts);
  return encodePng(new Uint8Array(rgb.buffer), width, height, 3);
}

/**
 * The overlay (RGB PNG) and the heatmap alone (opaque RGBA PNG, for a front end that blends it
 * itself), both at the image size with the longest side capped at maxSide, from one heatmapRgba.
 */
export async function renderCam(
  image: RawImage,
  cam: CamGrid,
  opts: OverlayOptions = {},
): Promise<{ overlayPng: Buffer; heatmapPng: Buffer }> {
  const { colormap, maxSide } = checkOverlayOptions(opts);
  const base = await overlayBase(image, maxSide);
  const heat = heatmapRgba(cam, base.width, base.height, colormap);
  const { rgb, width, height } = blendOverlay(base, cam, opts, heat);
  const [overlayPng, heatmapPng] = await Promise.all([
    encodePng(new Uint8Array(rgb.buffer), width, height, 3),
    encodePng(new Uint8Array(heat.buffer), width, height, 4),
  ]);
  return { overlayPng, heatmapPng };
}
