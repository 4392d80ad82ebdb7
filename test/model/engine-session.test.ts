/** Session checks and the Engine pipeline, on a tiny contract-conforming ONNX model written by the test. */
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PneumoError } from '../../src/errors.ts';
import { defaultCardPath, loadCard, validateCard } from '../../src/model/card.ts';
import { headLogit, ModelSession } from '../../src/model/session.ts';
import { collect, Engine, resultOrError } from '../../src/pipeline.ts';
import { makePng } from '../fixtures/make-png.ts';
import { writeTinyModel } from '../fixtures/make-onnx.ts';
import { grayDicom } from '../fixtures/make-dicom.ts';

const SPEC = { size: 32, channels: 4, stride: 4, ood: true };
const png = (w: number, h: number, f: (i: number) => number) =>
  makePng({ width: w, height: h, channels: 1, bitDepth: 8, samples: Array.from({ length: w * h }, (_, i) => f(i)) });

describe('model card', () => {
  it('names the file and the field of a bad card', () => {
    const { cardPath } = writeTinyModel(SPEC, (c) => {
      c.postprocessing.temperature = 0;
    });
    expect(() => loadCard(cardPath)).toThrow(/tiny\.json.*"postprocessing\.temperature" must be a positive number/);
    expect(() => validateCard({ schema_version: 1 }, 'x.json')).toThrow(/x\.json: "name"/);
    const { cardPath: p2 } = writeTinyModel(SPEC, (c) => {
      delete c.gradcam.weights;
    });
    expect(() => loadCard(p2)).toThrow(/"gradcam\.weights"/);
  });

  it('resolves the default card from PNEUMOLENS_MODEL or models/MODEL', () => {
    expect(defaultCardPath({ PNEUMOLENS_MODEL: '/x/y.json' })).toBe('/x/y.json');
    expect(() => defaultCardPath({}, '/nonexistent-root')).toThrow(/models\/MODEL does not exist/);
  });
});

describe('ModelSession', () => {
  it('runs batches and returns logit, features [C,h,w] and ood consistent with the head', async () => {
    const card = loadCard(writeTinyModel(SPEC).cardPath);
    const s = await ModelSession.create(card.modelPath, card, { threads: 1 });
    const batch = new Float32Array(3 * 32 * 32);
    batch.forEach((_, i) => (batch[i] = Math.sin(i) * 2));
    const out = await s.run(batch, 3);
    expect(out.featureShape).toEqual([4, 8, 8]);
    expect(out.logit.length).toBe(3);
    expect(out.ood?.length).toBe(3);
    for (let k = 0; k < 3; k++) {
      const f = out.features.subarray(k * 256, (k + 1) * 256);
      expect(Math.abs(headLogit(f, out.featureShape, card.gradcam.weights, card.gradcam.bias) - out.logit[k])).toBeLessThan(1e-5);
    }
    await expect(s.run(batch, 2)).rejects.toThrow(/expected 2 x 1 x 32 x 32/);
    await s.dispose();
    expect(s.disposed).toBe(true);
    await expect(s.run(batch, 3)).rejects.toThrow(/disposed/);
  });

  it.each([
    ['wrong head weights', (c: any) => (c.gradcam.weights = c.gradcam.weights.map((w: number) => w + 0.5)), /Grad-CAM head gives/],
    ['too few head weights', (c: any) => c.gradcam.weights.pop(), /3 entries but "features_relu" has 4 channels/],
    ['an output name the graph lacks', (c: any) => (c.outputs.logit = 'prob'), /output logit="prob" is not a graph output/],
    ['an input name the graph lacks', (c: any) => (c.input.name = 'image'), /input "image" is not a graph input/],
    ['an input size the graph disagrees with', (c: any) => (c.input.height = 64), /disagrees with the card/],
  ])('refuses a card with %s', async (_name, patch, message) => {
    const card = loadCard(writeTinyModel(SPEC, patch).cardPath);
    await expect(ModelSession.create(card.modelPath, card, { threads: 1 })).rejects.toThrow(message);
  });
});

describe('Engine (tiny model)', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await Engine.load({ card: writeTinyModel(SPEC).cardPath, threads: 1 });
  });
  afterAll(async () => engine?.dispose());

  it('analyses an image end to end', async () => {
    const r = await engine.analyse(png(40, 40, (i) => (i * 7) % 256));
    expect(r.model).toEqual({ name: 'tiny-test-model', version: '0.0.1' });
    expect(r.image).toEqual({ width: 40, height: 40, format: 'png' });
    expect(r.probability).toBeCloseTo(1 / (1 + Math.exp(-r.logit / 1.5)), 12);
    expect(r.label).toBe(r.probability >= 0.5 ? 'PNEUMONIA' : 'NORMAL');
    expect(r.threshold).toBe(0.5);
    expect(Object.keys(r.timings_ms).sort()).toEqual(['decode', 'explain', 'infer', 'preprocess', 'total']);
    expect(r.cam).toMatchObject({ mapWidth: 8, mapHeight: 8 });
    expect(Math.max(...r.cam!.map)).toBeLessThanOrEqual(1);
    const meta = await sharp(r.cam!.overlayPng).metadata();
    expect([meta.width, meta.height]).toEqual([40, 40]);
    expect(typeof r.gate.score).toBe('number'); // the ood output, reported (the card has no gate block)
    expect(r.gate.threshold).toBeNull();
    expect(r.rejected).toBe(false);
    expect(r.uncertainty).toBeNull();
    expect(r.warnings).toContain('This model provides no uncertainty estimate.');
  });

  it('gives the same answer alone and in a batch, and returns per-item errors in place', async () => {
    const a = png(40, 30, (i) => i % 256);
    const b = png(50, 50, (i) => (i * 13) % 256);
    const results = (
      await collect(engine.analyseStream([a, Buffer.from('not an image'), b, png(1, 1, () => 0), grayDicom(16, 16, [0, 90, 255])]))
    ).map(resultOrError);
    expect(results.map((r) => (r instanceof PneumoError ? r.status : 'ok'))).toEqual(['ok', 415, 'ok', 422, 'ok']);
    const alone = await engine.analyse(b, { force: true }); // a sawtooth: the input gate refuses it unless forced
    expect((results[2] as { logit: number }).logit).toBeCloseTo(alone.logit, 5);
  });

  it('honours cam=false, a threshold override and rejects bad options with 400', async () => {
    const img = png(32, 32, (i) => i % 200);
    const r = await engine.analyse(img, { cam: false, threshold: 0 });
    expect(r.cam).toBeUndefined();
    expect(r.label).toBe('PNEUMONIA');
    for (const bad of [{ threshold: 2 }, { alpha: -1 }, { colormap: 'gray' as never }]) {
      await expect(engine.analyse(img, bad)).rejects.toMatchObject({ status: 400, code: 'bad_request' });
    }
  });

  it('warns about transparency, small and elongated images', async () => {
    const rgba = makePng({ width: 20, height: 60, channels: 4, bitDepth: 8, samples: Array.from({ length: 20 * 60 * 4 }, () => 200) });
    // A blank 1:3 strip is no chest X-ray: refused, unless forced (then a warning says so).
    await expect(engine.analyse(rgba)).rejects.toMatchObject({ status: 422, code: 'not_a_chest_xray' });
    const r = await engine.analyse(rgba, { force: true });
    expect(r.rejected).toBe(true);
    expect(r.warnings[0]).toMatch(/^Analysed anyway \(forced\).*blank.*extreme shape/);
    expect(r.warnings.join(' ')).toMatch(/transparency/);
    expect(r.warnings.join(' ')).toMatch(/smaller than the model input/);
    expect(r.warnings.join(' ')).toMatch(/aspect ratio/);
  });
});

describe('Engine.load', () => {
  it('analyseStream splits the input into batches of maxBatch with identical results', async () => {
    const e = await Engine.load({ card: writeTinyModel(SPEC).cardPath, threads: 1, maxBatch: 2 });
    const imgs = [1, 2, 3, 4, 5].map((k) => png(32, 32, (i) => (i * k) % 256));
    const many = (await collect(e.analyseStream([...imgs.slice(0, 2), Buffer.from('x'), ...imgs.slice(2)], { cam: false }))).map(
      resultOrError,
    );
    expect(many).toHaveLength(6);
    expect(many[2]).toBeInstanceOf(PneumoError);
    const logits = many.filter((r) => !(r instanceof PneumoError)).map((r) => (r as { logit: number }).logit);
    for (const [k, img] of imgs.entries()) expect(logits[k]).toBeCloseTo((await e.analyse(img, { cam: false, force: true })).logit, 5);
    await e.dispose();
  });

  it('refuses an ONNX file whose sha256 differs from the card', async () => {
    const { cardPath } = writeTinyModel(SPEC, (c) => (c.sha256 = '0'.repeat(64)));
    await expect(Engine.load({ card: cardPath, threads: 1 })).rejects.toThrow(/does not match its card/);
  });

  it('dispose() releases the session; analyse afterwards fails', async () => {
    const e = await Engine.load({ card: writeTinyModel(SPEC).cardPath, threads: 1 });
    const ramp = png(32, 32, (i) => (i % 32) * 6 + (i >> 5) * 2);
    await e.analyse(ramp);
    await e.dispose();
    expect(e.disposed).toBe(true);
    await expect(e.analyse(ramp)).rejects.toThrow(/disposed/);
  });
});
