/**
 * Grad-CAM on a scale comparable across films (issue 17 item 4): with the card's
 * gradcam.display_scale the map is clamp(acc / display_scale, 0, 1), one scale for every film;
 * without it, acc / max(acc) of each film (the old behaviour). Real tiny ONNX models, real PNGs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gradCam } from '../../src/explain/gradcam.ts';
import { loadCard } from '../../src/model/card.ts';
import { collect, Engine, resultOrError } from '../../src/pipeline.ts';
import { writeTinyModel } from '../fixtures/make-onnx.ts';
import { texturedGrayPng } from '../fixtures/non-cxr.ts';

const SPEC = { size: 32, channels: 4, stride: 4 } as const;
// Two films of different brightness: the model's features (and acc) differ in size.
const dark = texturedGrayPng(40, 48, 3, 0, 120);
const bright = texturedGrayPng(40, 48, 5, 60, 255);

describe('weightedCam normalisation', () => {
  // acc = .25*A0 - .125*A1 = [-.25, .125, .5, .875]
  const A = Float32Array.from([1, 2, 3, 4, 4, 3, 2, 1]);
  const SHAPE = [2, 2, 2] as const;

  it('without a display scale: divided by the film maximum', () => {
    const cam = gradCam(A, SHAPE, [1, -0.5]);
    expect(cam).toMatchObject({ fixed: false, scale: 0.875 });
    [0, 1 / 7, 4 / 7, 1].forEach((v, i) => expect(cam.map[i]).toBeCloseTo(v, 6));
  });

  it('with a display scale: clamp(acc / scale, 0, 1)', () => {
    const cam = gradCam(A, SHAPE, [1, -0.5], 0.5);
    expect(cam).toMatchObject({ fixed: true, scale: 0.5 });
    [0, 0.25, 1, 1].forEach((v, i) => expect(cam.map[i]).toBeCloseTo(v, 6));
    const wide = gradCam(A, SHAPE, [1, -0.5], 2);
    [0, 0.0625, 0.25, 0.4375].forEach((v, i) => expect(wide.map[i]).toBeCloseTo(v, 6));
  });

  it('refuses a display scale that is not a positive number', () => {
    for (const bad of [0, -1, NaN, Infinity]) expect(() => gradCam(A, SHAPE, [1, -0.5], bad)).toThrow(/displayScale/);
  });
});

describe('the card field gradcam.display_scale', () => {
  it('is optional and validated', () => {
    expect(loadCard(writeTinyModel(SPEC).cardPath).gradcam.display_scale).toBeUndefined();
    expect(loadCard(writeTinyModel(SPEC, (c) => (c.gradcam.display_scale = 0.25)).cardPath).gradcam.display_scale).toBe(0.25);
    for (const bad of [0, -2, 'big', null, [1]]) {
      const { cardPath } = writeTinyModel(SPEC, (c) => (c.gradcam.display_scale = bad));
      expect(() => loadCard(cardPath)).toThrow(/"gradcam.display_scale" must be a positive number/);
    }
  });
});

describe('the engine with and without a display scale (tiny model)', () => {
  let perFilm: Engine;
  const fixed: Engine[] = [];
  // acc of each film, read from the per-film run: map * scale.
  let accDark: number[];
  let accBright: number[];
  let maxDark: number;
  let maxBright: number;

  beforeAll(async () => {
    perFilm = await Engine.load({ card: writeTinyModel(SPEC).cardPath, threads: 1 });
    const [d, b] = (await collect(perFilm.analyseStream([dark, bright]))).map(resultOrError);
    if (d instanceof Error) throw d;
    if (b instanceof Error) throw b;
    maxDark = d.cam!.scale!.value;
    maxBright = b.cam!.scale!.value;
    accDark = Array.from(d.cam!.map, (v) => v * maxDark);
    accBright = Array.from(b.cam!.map, (v) => v * maxBright);
  });

  afterAll(async () => {
    await perFilm?.dispose();
    for (const e of fixed) await e.dispose();
  });

  const withScale = async (s: number): Promise<Engine> => {
    const e = await Engine.load({ card: writeTinyModel(SPEC, (c) => (c.gradcam.display_scale = s)).cardPath, threads: 1 });
    fixed.push(e);
    return e;
  };

  it('without it, each film peaks at 1 (its own maximum)', async () => {
    expect(maxDark).toBeGreaterThan(0);
    expect(maxBright).toBeGreaterThan(0);
    expect(Math.abs(maxDark - maxBright) / Math.max(maxDark, maxBright)).toBeGreaterThan(0.05); // the films differ
    const [d, b] = (await collect(perFilm.analyseStream([dark, bright]))).map(resultOrError);
    for (const r of [d, b]) {
      if (r instanceof Error) throw r;
      expect(r.cam!.scale!.fixed).toBe(false);
      expect(Math.max(...r.cam!.map)).toBeCloseTo(1, 6);
    }
  });

  it('with it, the map is clamp(acc / display_scale, 0, 1): the same acc gives the same colour on every film', async () => {
    const S = 1.5 * Math.max(maxDark, maxBright); // nothing clamps
    const engine = await withScale(S);
    const [d, b] = (await collect(engine.analyseStream([dark, bright]))).map(resultOrError);
    if (d instanceof Error) throw d;
    if (b instanceof Error) throw b;
    expect(d.cam!.scale).toEqual({ value: S, fixed: true });
    d.cam!.map.forEach((v, i) => expect(v).toBeCloseTo(accDark[i] / S, 5));
    b.cam!.map.forEach((v, i) => expect(v).toBeCloseTo(accBright[i] / S, 5));
    // The weaker film's peak stays below the stronger one's, instead of both reading 1.
    const [peakD, peakB] = [Math.max(...d.cam!.map), Math.max(...b.cam!.map)];
    expect(peakD / peakB).toBeCloseTo(maxDark / maxBright, 4);
    expect(Math.min(peakD, peakB)).toBeLessThan(0.95 * Math.max(peakD, peakB));
    // The heatmap PNG is rendered from this map, so it differs from the per-film one.
    const [p] = (await collect(perFilm.analyseStream([dark]))).map(resultOrError);
    expect(Buffer.compare(d.cam!.heatmapPng!, (p as typeof d).cam!.heatmapPng!)).not.toBe(0);
  });

  it('with a small display scale, values above it clamp to 1 and the rest scale linearly', async () => {
    const S = maxDark / 2;
    const engine = await withScale(S);
    const r = await engine.analyse(dark);
    r.cam!.map.forEach((v, i) => expect(v).toBeCloseTo(Math.min(1, Math.max(0, accDark[i] / S)), 5));
    expect(r.cam!.map.filter((v) => v === 1).length).toBeGreaterThan(0);
    expect(r.cam!.map.some((v) => v > 0 && v < 1)).toBe(true);
  });
});
