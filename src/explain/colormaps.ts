/**
 * Colormaps as 256-entry RGB LUTs (Uint8Array, length 768), built once.
 * - jet: matplotlib's piecewise-linear definition, exact.
 * - viridis, inferno: 6th-degree polynomial fits of matplotlib's maps (Matt Zucker, CC0),
 *   within about 3/255 of the originals.
 */

/** The colour maps a caller may name: the one list (the server's schema and the page derive theirs from it). */
export const COLORMAPS = ['jet', 'viridis', 'inferno'] as const;
export type Colormap = (typeof COLORMAPS)[number];

type Rgb = [number, number, number];

/** Piecewise-linear channel through (x, y) points, matplotlib `LinearSegmentedColormap` style. */
function piecewise(points: [number, number][], x: number): number {
  for (let i = 1; i < points.length; i++) {
    const [x1, y1] = points[i];
    if (x <= x1) {
      const [x0, y0] = points[i - 1];
      return x1 === x0 ? y1 : y0 + ((y1 - y0) * (x - x0)) / (x1 - x0);
    }
  }
  return points[points.length - 1][1];
}

const JET = {
  r: [
    [0, 0],
    [0.35, 0],
    [0.66, 1],
    [0.89, 1],
    [1, 0.5],
  ] as [number, number][],
  g: [
    [0, 0],
    [0.125, 0],
    [0.375, 1],
    [0.64, 1],
    [0.91, 0],
    [1, 0],
  ] as [number, number][],
  b: [
    [0, 0.5],
    [0.11, 1],
    [0.34, 1],
    [0.65, 0],
    [1, 0],
  ] as [number, number][],
};

const jet = (t: number): Rgb => [piecewise(JET.r, t), piecewise(JET.g, t), piecewise(JET.b, t)];

/** c0 + t*c1 + ... + t^6*c6 per channel. */
function poly(coeffs: Rgb[]): (t: number) => Rgb {
  return (t) => {
    const out: Rgb = [0, 0, 0];
    for (let c = 0; c < 3; c++) {
      let v = 0;
      for (let k = coeffs.length - 1; k >= 0; k--) v = v * t + coeffs[k][c];
      out[c] = v;
    }
    return out;
  };
}

const viridis = poly([
  [0.2777273272234177, 0.005407344544966578, 0.3340998053353061],
  [0.1050930431085774, 1.404613529898575, 1.384590162594685],
  [-0.3308618287255563, 0.214847559468213, 0.09509516302823659],
  [-4.634230498983486, -5.799100973351585, -19.33244095627987],
  [6.228269936347081, 14.17993336680509, 56.69055260068105],
  [4.776384997670288, -13.74514537774601, -65.35303263337234],
  [-5.435455855934631, 4.645852612178535, 26.3124352495832],
]);

const inferno = poly([
  [0.0002189403691192265, 0.001651004631001012, -0.01948089843709184],
  [0.1065134194856116, 0.5639564367884091, 3.932712388889277],
  [11.60249308247187, -3.972853965665698, -15.9423941062914],
  [-41.70399613139459, 17.43639888205313, 44.35414519872813],
  [77.162935699427, -33.40235894210092, -81.80730925738993],
  [-71.31942824499214, 32.62606426397723, 73.20951985803202],
  [25.13112622477341, -12.24266895238567, -23.07032500287172],
]);

const FUNCTIONS: Record<Colormap, (t: number) => Rgb> = { jet, viridis, inferno };

function buildLut(f: (t: number) => Rgb): Uint8Array {
  const lut = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    const rgb = f(i / 255);
    for (let c = 0; c < 3; c++) lut[i * 3 + c] = Math.round(Math.min(1, Math.max(0, rgb[c])) * 255);
  }
  return lut;
}

const LUTS = new Map<Colormap, Uint8Array>();

/** The 256x3 LUT of a colormap (index = round(value * 255)). */
export function colormapLut(name: Colormap): Uint8Array {
  const f = FUNCTIONS[name];
  if (!f) throw new Error(`unknown colormap "${String(name)}" (expected ${COLORMAPS.join(', ')})`);
  let lut = LUTS.get(name);
  if (!lut) LUTS.set(name, (lut = buildLut(f)));
  return lut;
}
