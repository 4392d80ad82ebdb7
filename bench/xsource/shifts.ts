/**
 * The acquisition-shift suite of the cross-source harness (issue 8): each shift maps a decoded
 * grayscale image (0..255) to encoded bytes that go through the engine's full path (decode ->
 * preprocess -> infer), so the engine's own preprocessing sees the shifted film. Pixel-wise shifts
 * are pure functions (tested); filters, resampling, JPEG and the text marker use sharp.
 */
import sharp, { type OverlayOptions } from 'sharp';
import { mulberry32, quantile } from '../../src/eval/metrics.ts';

/** A single-channel image, row-major, values 0..255. */
export interface Gray {
  data: Float32Array;
  width: number;
  height: number;
}

const clamp255 = (v: number): number => (v < 0 ? 0 : v > 255 ? 255 : v);
const mapPixels = (g: Gray, f: (v: number) => number): Gray => ({ ...g, data: g.data.map((v) => clamp255(f(v))) });

function mean(a: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i];
  return s / a.length;
}

/** Contrast about the image mean: v' = m + k (v - m), clipped. */
export const contrast = (g: Gray, k: number): Gray => {
  const m = mean(g.data);
  return mapPixels(g, (v) => m + k * (v - m));
};

/** v' = 255 (v / 255)^gamma. */
export const gamma = (g: Gray, gm: number): Gray => mapPixels(g, (v) => 255 * Math.pow(v / 255, gm));

/** Clip to the [lo, hi] percentiles of the image and stretch to 0..255 (a display window). */
export function window(g: Gray, lo = 0.05, hi = 0.95): Gray {
  const sorted = Float32Array.from(g.data).sort();
  const a = quantile(sorted, lo);
  const b = quantile(sorted, hi);
  if (!(b > a)) return g;
  return mapPixels(g, (v) => ((v - a) / (b - a)) * 255);
}

/** Additive Gaussian noise (Box-Muller, seeded), clipped. */
export function noise(g: Gray, sigma: number, seed = 1): Gray {
  const rand = mulberry32(seed);
  const data = new Float32Array(g.data.length);
  for (let i = 0; i < data.length; i += 2) {
    const u = Math.max(rand(), 1e-12);
    const r = sigma * Math.sqrt(-2 * Math.log(u));
    const t = 2 * Math.PI * rand();
    data[i] = clamp255(g.data[i] + r * Math.cos(t));
    if (i + 1 < data.length) data[i + 1] = clamp255(g.data[i + 1] + r * Math.sin(t));
  }
  return { ...g, data };
}

/**
 * Pads `frac` of the width/height on every side with the level `value` (0: the film shrinks inside a
 * black frame; near white: a small child on a large plate, the unexposed surround left bright).
 */
export function frame(g: Gray, frac: number, value = 0): Gray {
  const px = Math.round(g.width * frac);
  const py = Math.round(g.height * frac);
  const width = g.width + 2 * px;
  const height = g.height + 2 * py;
  const data = new Float32Array(width * height).fill(value);
  for (let y = 0; y < g.height; y++) data.set(g.data.subarray(y * g.width, (y + 1) * g.width), (y + py) * width + px);
  return { data, width, height };
}

/** Keeps the central `frac` of the width and of the height. */
export function centralCrop(g: Gray, frac: number): Gray {
  const width = Math.max(1, Math.round(g.width * frac));
  const height = Math.max(1, Math.round(g.height * frac));
  const x0 = Math.floor((g.width - width) / 2);
  const y0 = Math.floor((g.height - height) / 2);
  const data = new Float32Array(width * height);
  for (let y = 0; y < height; y++) data.set(g.data.subarray((y + y0) * g.width + x0, (y + y0) * g.width + x0 + width), y * width);
  return { data, width, height };
}

const toU8 = (g: Gray): Buffer => Buffer.from(Uint8ClampedArray.from(g.data)); // rounds and clamps
const raw = (g: Gray) => sharp(toU8(g), { raw: { width: g.width, height: g.height, channels: 1 } });

/** Lossless 8-bit gray PNG (fast compression: this is an internal hand-off). */
export const encodeGrayPng = (g: Gray): Promise<Buffer> => raw(g).png({ compressionLevel: 1 }).toBuffer();

/** Text burned into the top corners, as portable films carry: "R" top left, "PORTABLE" top right. */
export function markerSvg(width: number, height: number): string {
  const size = Math.max(8, Math.round(height * 0.07));
  const pad = Math.round(size * 0.4);
  const text = (x: number, anchor: string, s: string) =>
    `<text x="${x}" y="${pad + size}" font-family="DejaVu Sans, sans-serif" font-weight="bold" font-size="${size}" fill="#fff" text-anchor="${anchor}">${s}</text>`;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">${text(pad, 'start', 'R')}${text(width - pad, 'end', 'PORTABLE')}</svg>`;
}

export interface Shift {
  name: string;
  description: string;
  apply: (g: Gray) => Promise<Buffer>;
}

const pixelShift = (name: string, description: string, f: (g: Gray) => Gray): Shift => ({
  name,
  description,
  apply: (g) => encodeGrayPng(f(g)),
});

/** The suite, in report order. "identity" is the round trip through a lossless PNG (reference row). */
export const SHIFTS: Shift[] = [
  pixelShift('identity', 'decoded image re-encoded as lossless PNG (reference)', (g) => g),
  pixelShift('contrast_x0.6', 'contrast x0.6 about the image mean', (g) => contrast(g, 0.6)),
  pixelShift('contrast_x1.4', 'contrast x1.4 about the image mean, clipped', (g) => contrast(g, 1.4)),
  pixelShift('gamma_0.6', 'gamma 0.6 (brighter)', (g) => gamma(g, 0.6)),
  pixelShift('gamma_1.6', 'gamma 1.6 (darker)', (g) => gamma(g, 1.6)),
  pixelShift('window_p5_p95', 'clip to the 5th-95th percentile, stretch to 0..255', (g) => window(g, 0.05, 0.95)),
  { name: 'blur_s1.5', description: 'Gaussian blur sigma 1.5 px', apply: (g) => raw(g).blur(1.5).png({ compressionLevel: 1 }).toBuffer() },
  {
    name: 'sharpen',
    description: 'unsharp mask (sharp.sharpen sigma 1, m2 3)',
    apply: (g) => raw(g).sharpen({ sigma: 1, m1: 1, m2: 3 }).png({ compressionLevel: 1 }).toBuffer(),
  },
  pixelShift('noise_s8', 'additive Gaussian noise sigma 8 (of 255), seeded', (g) => noise(g, 8, 1)),
  {
    name: 'down_up_x0.3',
    description: 'downsample to 30% (bilinear), then back up (bilinear)',
    apply: async (g) => {
      const small = await raw(g)
        .resize(Math.max(1, Math.round(g.width * 0.3)), Math.max(1, Math.round(g.height * 0.3)), { kernel: 'linear', fit: 'fill' })
        .raw()
        .toBuffer({ resolveWithObject: true });
      return sharp(small.data, { raw: { width: small.info.width, height: small.info.height, channels: 1 } })
        .resize(g.width, g.height, { kernel: 'linear', fit: 'fill' })
        .png({ compressionLevel: 1 })
        .toBuffer();
    },
  },
  { name: 'jpeg_q20', description: 'JPEG quality 20 (libjpeg via sharp)', apply: (g) => raw(g).jpeg({ quality: 20 }).toBuffer() },
  pixelShift('black_border_10', 'black frame of 10% of the side added on every side', (g) => frame(g, 0.1)),
  pixelShift('black_border_25', 'black frame of 25% of the side on every side (the chest fills a quarter of the film)', (g) =>
    frame(g, 0.25),
  ),
  pixelShift('white_border_10', 'near-white (240) frame of 10% of the side on every side: an unexposed bright surround', (g) =>
    frame(g, 0.1, 240),
  ),
  pixelShift('white_border_25', 'near-white (240) frame of 25% of the side on every side: a small child on a large plate', (g) =>
    frame(g, 0.25, 240),
  ),
  pixelShift('center_crop_80', 'central crop keeping 80% of width and height', (g) => centralCrop(g, 0.8)),
  {
    name: 'text_marker',
    description: 'burned-in white "R" (top left) and "PORTABLE" (top right), 7% of the height',
    apply: (g) =>
      raw(g)
        .composite([{ input: Buffer.from(markerSvg(g.width, g.height)), top: 0, left: 0 }])
        .toColourspace('b-w')
        .png({ compressionLevel: 1 })
        .toBuffer(),
  },
];

// ---------------------------------------------------------------------------------------------
// Montage

export interface Tile {
  /** 8-bit RGB pixels. */
  rgb: Uint8Array;
  width: number;
  height: number;
  caption: string;
  /** Caption colour (e.g. red for a wrong call). */
  color: string;
}

const escapeXml = (s: string) => s.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);

/** A PNG grid of tiles (each letterboxed into `cell` px), captions under each, a title on top. */
export async function montage(tiles: Tile[], opts: { columns: number; cell: number; title: string }): Promise<Buffer> {
  const { columns, cell, title } = opts;
  const capH = 30;
  const titleH = 28;
  const rows = Math.max(1, Math.ceil(tiles.length / columns));
  const width = columns * cell;
  const height = titleH + rows * (cell + capH);
  const layers: OverlayOptions[] = [];
  const texts: string[] = [
    `<text x="6" y="19" font-family="DejaVu Sans, sans-serif" font-size="15" fill="#fff">${escapeXml(title)}</text>`,
  ];
  for (let i = 0; i < tiles.length; i++) {
    const t = tiles[i];
    const s = Math.min(cell / t.width, cell / t.height);
    const w = Math.max(1, Math.round(t.width * s));
    const h = Math.max(1, Math.round(t.height * s));
    const img = await sharp(t.rgb, { raw: { width: t.width, height: t.height, channels: 3 } })
      .resize(w, h, { fit: 'fill' })
      .png()
      .toBuffer();
    const x = (i % columns) * cell;
    const y = titleH + Math.floor(i / columns) * (cell + capH);
    layers.push({ input: img, left: x + Math.floor((cell - w) / 2), top: y + Math.floor((cell - h) / 2) });
    const [line1, line2] = t.caption.split('\n');
    texts.push(
      `<text x="${x + 4}" y="${y + cell + 12}" font-family="DejaVu Sans, sans-serif" font-size="11" fill="${t.color}">${escapeXml(line1 ?? '')}</text>`,
      `<text x="${x + 4}" y="${y + cell + 25}" font-family="DejaVu Sans, sans-serif" font-size="11" fill="#ccc">${escapeXml(line2 ?? '')}</text>`,
    );
  }
  layers.push({
    input: Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">${texts.join('')}</svg>`),
    top: 0,
    left: 0,
  });
  return sharp({ create: { width, height, channels: 3, background: { r: 16, g: 16, b: 16 } } })
    .composite(layers)
    .png()
    .toBuffer();
}
