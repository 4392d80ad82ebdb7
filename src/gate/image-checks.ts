/**
 * Input gate, part 1: cheap statistics of the decoded image (before preprocessing) that no real
 * chest X-ray has. Pure functions on a RawImage; no model needed.
 *
 * The statistics are measured on a regular grid of at most ~65k pixels (every `step`-th pixel in
 * both directions), so the cost is bounded whatever the image size (measured: about 1.4 ms for a
 * 2500x2000 RGB image on the 2-core development machine while a model was training). Thresholds carry wide margins over the range measured on all 5,216 images of
 * the Kermany et al. training split (`npm run bench:ood` prints that range again):
 *
 * | statistic    | training CXRs: min .. max (p99.9) | rejected when          |
 * |--------------|-----------------------------------|------------------------|
 * | saturation   | 0 .. 0                            | > 0.06                 |
 * | grayStd      | 19.9 (p0.1 24.9) .. 87.3          | < 6                    |
 * | grayRange    | 85 (p0.1 106) .. 255              | < 40                   |
 * | aspect       | 1 .. 1 (the split is stored 224x224) | outside 0.4 .. 2.5  |
 * | nearWhite    | 0 .. 0.082 (p99.9 0.021)          | > 0.35                 |
 * | modeFraction | 0.007 .. 0.29 (p99.9 0.23)        | > 0.6                  |
 * | neighbourCorrelation | 0.969 (p0.1 0.978) .. 0.998 | < 0.5                |
 *
 * The stored training split is resized to 224x224 and saved as (gray) RGB JPEG, so it cannot
 * calibrate the aspect check: its bounds come from the originals of that data set (about 0.8..2.0
 * width/height) and adult PA/AP films (about 0.8..1.3), with a wide margin on both sides. The
 * saturation bound leaves room for the chroma noise of colour-encoded JPEGs of gray films.
 */
import { grayOf, type RawImage } from '../image/raw.ts';

/** Mean chroma (max(R,G,B) - min(R,G,B)) / 255 above which the image is a colour picture. */
export const MAX_SATURATION = 0.06;
/** Population std of the gray levels (0..255) below which the image is (nearly) blank. */
export const MIN_GRAY_STD = 6;
/** p99 - p1 of the gray levels below which there is no usable contrast. */
export const MIN_GRAY_RANGE = 40;
/** Accepted width / height range (CXRs are about 0.6..1.7; lenient on purpose). */
export const ASPECT = { min: 0.4, max: 2.5 } as const;
/** Fraction of near-white pixels (gray >= 250) above which it is a document or a screenshot. */
export const MAX_NEAR_WHITE = 0.35;
/** Fraction of pixels sharing the single most frequent gray level above which it is a flat graphic. */
export const MAX_MODE_FRACTION = 0.6;

/** Neighbour correlation below which the image is pixel noise (radiographs are smooth: >= 0.97 in the training split). */
export const MIN_NEIGHBOUR_CORRELATION = 0.5;

/** Most pixels the statistics look at (a regular grid over the image). */
export const MAX_SAMPLES = 65_536;

export interface ImageStats {
  width: number;
  height: number;
  /** width / height. */
  aspect: number;
  /** Mean of (max(R,G,B) - min(R,G,B)) / 255 over the sampled pixels; 0 for gray images. */
  saturation: number;
  /** Population std of the gray levels (BT.601, alpha composited onto black), 0..255. */
  grayStd: number;
  /** 99th minus 1st percentile of the gray levels, 0..255. */
  grayRange: number;
  /** Fraction of sampled pixels with gray >= 250. */
  nearWhite: number;
  /** Fraction of sampled pixels in the most frequent (rounded) gray level. */
  modeFraction: number;
  /**
   * Correlation of each sampled pixel's gray level with its right and lower neighbours,
   * 1 - mean((g - g_right)^2 + (g - g_down)^2) / (4 var): about 1 for radiographs (smooth at their
   * own resolution), about 0 for pixel noise.
   */
  neighbourCorrelation: number;
  /** How many pixels were sampled. */
  samples: number;
}

/** The image checks, by name (the OpenAPI document lists them from here). */
export const CHECK_NAMES = ['colour', 'blank', 'low_contrast', 'aspect', 'document', 'noise'] as const;

export type CheckName = (typeof CHECK_NAMES)[number];

export interface CheckFailure {
  check: CheckName;
  /** The measured value and the threshold it crossed. */
  value: number;
  threshold: number;
  /** For people: why this is not a chest X-ray. */
  reason: string;
}

export interface ImageCheckResult {
  passed: boolean;
  stats: ImageStats;
  failures: CheckFailure[];
}

/**
 * Measures the gate statistics of an image (values 0..255, 1-4 channels). `gray`, when the caller
 * has it (the engine computes the image's gray_bt601 once for these checks, preprocessing and the
 * overlay), gives the gray levels; without it they are computed here (gray_bt601, src/image/raw.ts).
 * Tight loops over typed arrays: the engine runs this on every image (about 0.3 ms for 224x224).
 */
export function imageStats(image: RawImage, gray: Float32Array = grayOf(image)): ImageStats {
  const { data, width, height, channels } = image;
  if (gray.length !== width * height) {
    throw new Error(`imageStats: expected ${width * height} gray values, got ${gray.length}`);
  }
  const step = Math.max(1, Math.ceil(Math.sqrt((width * height) / MAX_SAMPLES)));
  const hist = new Uint32Array(256);
  let n = 0;
  let sum = 0;
  let sumSq = 0;
  let diffSq = 0;
  let pairs = 0;
  // Sample in the middle of each step x step cell; a sample's right and lower neighbours give the
  // neighbour correlation (where the image has them).
  const off = step >> 1;
  for (let y = off; y < height; y += step) {
    const below = y + 1 < height ? width : 0;
    for (let x = off, p = y * width + off; x < width; x += step, p += step) {
      const g = gray[p];
      if (below !== 0 && x + 1 < width) {
        const dr = g - gray[p + 1];
        const dd = g - gray[p + below];
        diffSq += dr * dr + dd * dd;
        pairs += 2;
      }
      sum += g;
      sumSq += g * g;
      const level = (g + 0.5) | 0; // Math.round for g >= 0; clamped below
      hist[level < 0 ? 0 : level > 255 ? 255 : level]++;
      n++;
    }
  }
  let chroma = 0;
  if (channels >= 3) {
    for (let y = off; y < height; y += step) {
      for (let x = off, i = (y * width + off) * channels; x < width; x += step, i += step * channels) {
        const r = data[i];
        const gr = data[i + 1];
        const b = data[i + 2];
        chroma += (r > gr ? (r > b ? r : b) : gr > b ? gr : b) - (r < gr ? (r < b ? r : b) : gr < b ? gr : b);
      }
    }
  }
  const mean = sum / n;
  const variance = Math.max(0, sumSq / n - mean * mean);
  const grayStd = Math.sqrt(variance);
  const neighbourCorrelation = variance > 0 && pairs > 0 ? 1 - diffSq / pairs / (2 * variance) : 1;
  let nearWhite = 0;
  for (let v = 250; v < 256; v++) nearWhite += hist[v];
  let mode = 0;
  for (let v = 0; v < 256; v++) if (hist[v] > mode) mode = hist[v];
  return {
    width,
    height,
    aspect: width / height,
    saturation: channels >= 3 ? chroma / n / 255 : 0,
    grayStd,
    grayRange: percentile(hist, n, 0.99) - percentile(hist, n, 0.01),
    nearWhite: nearWhite / n,
    modeFraction: mode / n,
    neighbourCorrelation,
    samples: n,
  };
}

/** The smallest level v with at least q of the n samples at or below it. */
function percentile(hist: Uint32Array, n: number, q: number): number {
  const target = Math.max(1, Math.ceil(q * n));
  let acc = 0;
  for (let v = 0; v < 256; v++) {
    acc += hist[v];
    if (acc >= target) return v;
  }
  return 255;
}

const pct = (v: number) => `${(v * 100).toFixed(0)}%`;

/** Applies the thresholds to measured statistics; every failure carries a reason for people. */
export function judgeStats(stats: ImageStats): ImageCheckResult {
  const failures: CheckFailure[] = [];
  if (stats.saturation > MAX_SATURATION) {
    failures.push({
      check: 'colour',
      value: stats.saturation,
      threshold: MAX_SATURATION,
      reason: `colour image (mean saturation ${stats.saturation.toFixed(2)}): chest X-rays are grayscale`,
    });
  }
  if (stats.grayStd < MIN_GRAY_STD) {
    failures.push({
      check: 'blank',
      value: stats.grayStd,
      threshold: MIN_GRAY_STD,
      reason: `blank or nearly uniform image (gray-level spread ${stats.grayStd.toFixed(1)} of 255)`,
    });
  } else if (stats.grayRange < MIN_GRAY_RANGE) {
    failures.push({
      check: 'low_contrast',
      value: stats.grayRange,
      threshold: MIN_GRAY_RANGE,
      reason: `almost no contrast (gray levels span only ${stats.grayRange} of 255)`,
    });
  }
  if (stats.grayStd >= MIN_GRAY_STD && stats.neighbourCorrelation < MIN_NEIGHBOUR_CORRELATION) {
    failures.push({
      check: 'noise',
      value: stats.neighbourCorrelation,
      threshold: MIN_NEIGHBOUR_CORRELATION,
      reason: `pixel noise (neighbouring pixels correlate only ${stats.neighbourCorrelation.toFixed(2)}; X-rays are smooth)`,
    });
  }
  if (stats.aspect < ASPECT.min || stats.aspect > ASPECT.max) {
    failures.push({
      check: 'aspect',
      value: stats.aspect,
      threshold: stats.aspect < ASPECT.min ? ASPECT.min : ASPECT.max,
      reason: `extreme shape ${stats.width}x${stats.height} (width/height ${stats.aspect.toFixed(2)}): chest X-rays are roughly square`,
    });
  }
  if (stats.nearWhite > MAX_NEAR_WHITE) {
    failures.push({
      check: 'document',
      value: stats.nearWhite,
      threshold: MAX_NEAR_WHITE,
      reason: `mostly white background (${pct(stats.nearWhite)} of the pixels): looks like a document or a screenshot`,
    });
  } else if (stats.modeFraction > MAX_MODE_FRACTION && stats.grayStd >= MIN_GRAY_STD) {
    failures.push({
      check: 'document',
      value: stats.modeFraction,
      threshold: MAX_MODE_FRACTION,
      reason: `large flat area (${pct(stats.modeFraction)} of the pixels share one gray level): looks like a graphic or a screenshot`,
    });
  }
  return { passed: failures.length === 0, stats, failures };
}

/** Measures and judges an image: the image half of the input gate (`gray`: see imageStats). */
export function checkImage(image: RawImage, gray?: Float32Array): ImageCheckResult {
  return judgeStats(imageStats(image, gray));
}
