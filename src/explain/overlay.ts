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
import type { CamMap } from './gradcam.ts';

export interface OverlayOptions {
  colormap?: Colormap; // default 'jet'
  alpha?: number; // opacity of the heat map, 0..1, default 0.45
  /** Longest side of the overlay in pixels (default 1024); smaller images keep their size. */
  maxSide?: number;
}

export const DEFAULT_COLORMAP: Colormap = 'jet';
export const DEFAULT_ALPHA = 0.45;
export const DEFAULT_MAX_SIDE = 1024;

/** Validates user overlay options (PneumoError 400 on bad values). */
export function checkOverlayOptions(opts: OverlayOptions): Required<OverlayOptions> {
  const colormap = opts.colormap ?? DEFAULT_COLORMAP;
  const alpha = opts.alpha ?? DEFAULT_ALPHA;
  const maxSide = opts.maxSide ?? DEFAULT_MAX_SIDE;
  if (!COLORMAPS.includes(colormap)) {
    throw new PneumoError(400, 'bad_request', `colormap must be one of ${COLORMAPS.join(', ')} (got ${String(colormap)}).`);
  }
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha < 0 || alpha > 1) {
    throw new PneumoError(400, 'bad_request', `alpha (overlay opacity) must be a number between 0 and 1 (got ${String(alpha)}).`);
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
  const gray8 = new Uint8Array(gray.length);
  for (let i = 0; i < gray.length; i++) gray8[i] = Math.round(Math.min(255, Math.max(0, gray[i])));
  return { data: await resizeGray8(gray8, image.width, image.height, width, height), width, height };
}

/** Blends the colour-mapped CAM (upsampled to the base size) over the gray base; 8-bit RGB out. */
export function blendOverlay(base: GrayBase, cam: CamMap, opts: OverlayOptions = {}): { rgb: Uint8Array; width: number; height: number } {
  const { colormap, alpha } = checkOverlayOptions(opts);
  const { width, height, data } = base;
  const heat = upsampleBilinear(cam.map, cam.width, cam.height, width, height);
  const lut = colormapLut(colormap);
  const rgb = new Uint8Array(width * height * 3);
  for (let p = 0; p < width * height; p++) {
    const g = data[p] * (1 - alpha);
    const idx = Math.round(Math.min(1, Math.max(0, heat[p])) * 255) * 3;
    for (let c = 0; c < 3; c++) rgb[p * 3 + c] = Math.round(Math.min(255, Math.max(0, g + alpha * lut[idx + c])));
  }
  return { rgb, width, height };
}

/** The overlay as a PNG at the image size, longest side capped at maxSide. */
export async function renderOverlay(image: RawImage, cam: CamMap, opts: OverlayOptions = {}): Promise<Buffer> {
  const { maxSide } = checkOverlayOptions(opts);
  const { rgb, width, height } = blendOverlay(await overlayBase(image, maxSide), cam, opts);
  return encodePng(rgb, width, height, 3);
}
