/**
 * Input gate and uncertainty (issue 5), without the shipped model: image checks on generated
 * inputs and real X-ray fixtures, the gate decision, the ensemble spread, card validation, and
 * the engine on a tiny ONNX model with `ood` and `members` outputs and the card blocks.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PneumoError } from '../../src/errors.ts';
import { describeCard } from '../../src/eval/card.ts';
import { gateDecision, timesThreshold, UNLIKE_TRAINING_FILMS } from '../../src/gate/gate.ts';
import { checkImage, imageStats, MAX_SATURATION } from '../../src/gate/image-checks.ts';
import { ensembleStd, uncertaintyOf } from '../../src/gate/uncertainty.ts';
import { decodeImage } from '../../src/image/decode.ts';
import { loadCard } from '../../src/model/card.ts';
import { ModelSession } from '../../src/model/session.ts';
import { preprocess } from '../../src/model/preprocess.ts';
import { collect, Engine, resultOrError } from '../../src/pipeline.ts';
import type { RawImage } from '../../src/types.ts';
import { writeTinyModel } from '../fixtures/make-onnx.ts';
import { colourPhotoPng, constantPng, texturedGrayPng, textPng } from '../fixtures/non-cxr.ts';
import { crand } from '../fixtures/synthetic.ts';
import { GOLDEN } from '../fixtures/paths.ts';

const goldenPngs = ['normal_gray_200x240.png', 'normal_rgb_300x256.png', 'pneumonia_gray_224.png', 'pneumonia_rgba_180.png'];

const decode = async (bytes: Uint8Array) => (await decodeImage(bytes)).image;

describe('image statistics', () => {
  it('measures saturation, spread, range, white and flat fractions', () => {
    // 2x2 RGB: pure red, pure green, gray 100, gray 200
    const img: RawImage = {
      data: Float32Array.from([255, 0, 0, 0, 255, 0, 100, 100, 100, 200, 200, 200]),
      width: 2,
      height: 2,
      channels: 3,
    };
    const s = imageStats(img);
    expect(s.saturation).toBeCloseTo(0.5, 6); // (1 + 1 + 0 + 0) / 4
    expect(s.samples).toBe(4);
    expect(s.aspect).toBe(1);
    const gray = [0.299 * 255, 0.587 * 255, 100, 200];
    const mean = gray.reduce((a, b) => a + b) / 4;
    expect(s.grayStd).toBeCloseTo(Math.sqrt(gray.reduce((a, g) => a + (g - mean) ** 2, 0) / 4), 3);
    expect(s.nearWhite).toBe(0);
    const white: RawImage = { data: Float32Array.from([255, 255, 255, 0]), width: 4, height: 1, channels: 1 };
    const w = imageStats(white);
    expect(w.nearWhite).toBe(0.75);
    expect(w.modeFraction).toBe(0.75);
    expect(w.grayRange).toBe(255);
    expect(w.saturation).toBe(0);
  });

  it('composites alpha onto black like the preprocessing', () => {
    const s = imageStats({ data: Float32Array.from([200, 0, 200, 255]), width: 2, height: 1, channels: 2 });
    expect(s.grayStd).toBeCloseTo(100, 6); // values 0 and 200
  });

  it('samples at most ~65k pixels of a large image', () => {
    const s = imageStats({ data: new Float32Array(2000 * 1500), width: 2000, height: 1500, channels: 1 });
    expect(s.samples).toBeLessThanOrEqual(65_536);
    expect(s.samples).toBeGreaterThan(30_000);
  });
});

describe('image checks', () => {
  it.each(goldenPngs)('accept the real chest X-ray fixture %s', async (name) => {
    const r = checkImage(await decode(readFileSync(resolve(GOLDEN, name))));
    expect(r.failures).toEqual([]);
    expect(r.passed).toBe(true);
  });

  it('reject a colour photo-like image as colour', async () => {
    const r = checkImage(await decode(await colourPhotoPng(160, 120, 3)));
    expect(r.passed).toBe(false);
    expect(r.failures.map((f) => f.check)).toContain('colour');
    expect(r.stats.saturation).toBeGreaterThan(MAX_SATURATION);
    expect(r.failures[0].reason).toMatch(/colour image .*chest X-rays are grayscale/);
  });

  it('reject rendered text as a document', async () => {
    const r = checkImage(await decode(await textPng(400, 300)));
    expect(r.passed).toBe(false);
    expect(r.failures.map((f) => f.check)).toContain('document');
    expect(r.failures.find((f) => f.check === 'document')!.reason).toMatch(/document or a screenshot/);
  });

  it('reject a constant image as blank, and a 5:1 strip as an extreme shape', async () => {
    const blank = checkImage(await decode(constantPng(64, 64, 128)));
    expect(blank.failures.map((f) => f.check)).toEqual(['blank']);
    const strip = checkImage(await decode(texturedGrayPng(500, 100, 1)));
    expect(strip.failures.map((f) => f.check)).toEqual(['aspect']);
    expect(strip.failures[0].reason).toMatch(/extreme shape 500x100/);
  });

  it('reject pixel noise (uncorrelated neighbours) but not a smooth image', () => {
    let x = 99;
    const noise = Float32Array.from({ length: 128 * 128 }, () => (x = (x * 1103515245 + 12345) >>> 0) >>> 24);
    const r = checkImage({ data: noise, width: 128, height: 128, channels: 1 });
    expect(r.stats.neighbourCorrelation).toBeLessThan(0.2);
    expect(r.failures.map((f) => f.check)).toEqual(['noise']);
    expect(r.failures[0].reason).toMatch(/^pixel noise/);
    const ramp = checkImage({
      data: Float32Array.from({ length: 128 * 128 }, (_, i) => (i % 128) * 2),
      width: 128,
      height: 128,
      channels: 1,
    });
    expect(ramp.stats.neighbourCorrelation).toBeGreaterThan(0.99);
    expect(ramp.passed).toBe(true);
  });

  it('reject a faint image with almost no contrast', () => {
    const data = Float32Array.from({ length: 64 * 64 }, (_, i) => 120 + ((i * 7919) % 13) + (i % 64 < 32 ? 0 : 10));
    const r = checkImage({ data, width: 64, height: 64, channels: 1 });
    expect(r.stats.grayStd).toBeGreaterThan(6);
    expect(r.failures.map((f) => f.check)).toEqual(['low_contrast']);
  });

  it('accept a textured gray image of a normal shape (the model gate judges the rest)', async () => {
    expect(checkImage(await decode(texturedGrayPng(200, 240, 2))).passed).toBe(true);
  });
});

describe('gate decision', () => {
  const ok = checkImage({ data: Float32Array.from({ length: 256 }, (_, i) => i), width: 16, height: 16, channels: 1 });
  const blank = checkImage({ data: new Float32Array(256).fill(9), width: 16, height: 16, channels: 1 });
  const spec = { output: 'ood', threshold: 1 };

  it('accepts when the checks pass and the score is at or below the threshold', () => {
    for (const score of [0.2, 1]) {
      const g = gateDecision(ok, score, spec);
      expect(g).toMatchObject({ rejected: false, score, threshold: 1, reasons: [] });
      expect(g.reason).toBeUndefined();
      expect(g.message).toBeUndefined();
    }
  });

  it('declines an image that passes the image checks but scores above the gate threshold as outside_intended_use, not "not a chest X-ray" (issue 19 item 3)', () => {
    const g = gateDecision(ok, 1.7, spec);
    expect(g).toMatchObject({ rejected: true, reason: 'outside_intended_use', basis: 'gate_score', score: 1.7 });
    expect(g.reasons).toEqual(['unlike the chest X-rays the model was trained and validated on (gate score 1.7 times its limit)']);
    expect(g.message).toBe(UNLIKE_TRAINING_FILMS);
    expect(g.message).not.toMatch(/does not look like a chest X-ray|This chest X-ray/);
    expect(g.message).toMatch(/another body part.*population, hospital or device/);
  });

  it('a card without gate.intended_use: the same rule (the gate score alone declines as outside_intended_use)', () => {
    expect(spec).not.toHaveProperty('intended_use');
    expect(gateDecision(ok, 5e15, spec)).toMatchObject({ reason: 'outside_intended_use', basis: 'gate_score', scope: null });
    expect(gateDecision(blank, 5e15, spec)).toMatchObject({ reason: 'not_a_chest_xray', basis: 'image_checks' });
  });

  it('huge scores are words for people, never raw numbers (the JSON keeps them)', () => {
    for (const score of [488211644416, 1e16, Number.POSITIVE_INFINITY]) {
      const g = gateDecision(ok, score, spec);
      expect(g.score).toBe(score);
      expect(g.reasons[0]).toBe(
        'unlike the chest X-rays the model was trained and validated on (gate score more than 1,000 times its limit)',
      );
      expect(`${g.reasons} ${g.message}`).not.toMatch(/\d{5,}|e\+/);
    }
    expect(timesThreshold(1.05, 1)).toBe('just above its limit');
    expect(timesThreshold(42.4, 1)).toBe('42 times its limit');
    expect(timesThreshold(3, 0.5)).toBe('6.0 times its limit');
  });

  it('rejects a NaN score (a broken gate must not let everything through)', () => {
    expect(gateDecision(ok, Number.NaN, spec)).toMatchObject({ rejected: true, reason: 'outside_intended_use', basis: 'gate_score' });
  });

  it('rejects on failed image checks even without a model score, as not_a_chest_xray; reports both reasons', () => {
    expect(gateDecision(blank, null, undefined)).toMatchObject({
      rejected: true,
      reason: 'not_a_chest_xray',
      basis: 'image_checks',
      score: null,
      threshold: null,
    });
    const both = gateDecision(blank, 3, spec);
    expect(both.reasons).toHaveLength(2);
    expect(both).toMatchObject({ reason: 'not_a_chest_xray', basis: 'image_checks' });
    expect(both.message).toMatch(/^This does not look like a chest X-ray: /);
  });

  it('reports but does not use a score when the card has no gate block (older cards)', () => {
    expect(gateDecision(ok, 50, undefined)).toMatchObject({ rejected: false, score: 50, threshold: null });
  });

  describe('intended use', () => {
    const withScope = { ...spec, intended_use: { output: 'scope', threshold: 1 } };

    it('declines a chest X-ray whose intended-use score is above its threshold, with its own reason and message', () => {
      const g = gateDecision(ok, 0.3, withScope, 4.2);
      expect(g).toMatchObject({
        rejected: true,
        reason: 'outside_intended_use',
        basis: 'intended_use_score',
        scope: 4.2,
        scopeThreshold: 1,
      });
      expect(g.reasons).toEqual(['unlike the population the model is validated for (intended-use score 4.2 times its limit)']);
      expect(g.message).toMatch(/children aged 1-5/);
      expect(g.message).not.toMatch(/does not look like a chest X-ray/);
    });

    it('accepts at or below the threshold, and declines a NaN score', () => {
      for (const s of [0, 0.5, 1]) expect(gateDecision(ok, 0.3, withScope, s)).toMatchObject({ rejected: false, scope: s });
      expect(gateDecision(ok, 0.3, withScope, Number.NaN)).toMatchObject({ rejected: true, reason: 'outside_intended_use' });
    });

    it('says not_a_chest_xray when the image checks fail, whatever the scores; the gate score before the intended-use score', () => {
      const g = gateDecision(blank, 3, withScope, 9);
      expect(g).toMatchObject({ reason: 'not_a_chest_xray', basis: 'image_checks' });
      expect(g.reasons).toHaveLength(2); // the check and the gate score; the intended-use score is not asked
      const h = gateDecision(ok, 3, withScope, 9);
      expect(h).toMatchObject({ reason: 'outside_intended_use', basis: 'gate_score' });
      expect(h.reasons).toHaveLength(1);
    });

    it('ignores an intended-use score when the card has no intended-use head', () => {
      expect(gateDecision(ok, 0.3, spec, 9)).toMatchObject({ rejected: false, scope: 9, scopeThreshold: null });
    });
  });
});

describe('ensemble uncertainty', () => {
  it('is the population std of sigmoid(logit / T)', () => {
    const p = [0.2, 0.5, 0.9];
    const logits = p.map((q) => 2 * Math.log(q / (1 - q)));
    const mean = (0.2 + 0.5 + 0.9) / 3;
    const std = Math.sqrt(p.reduce((a, q) => a + (q - mean) ** 2, 0) / 3);
    expect(ensembleStd(logits, 2)).toBeCloseTo(std, 10);
    expect(ensembleStd([1.3, 1.3, 1.3], 1)).toBeCloseTo(0, 12);
  });

  it('stays within [0, 0.5], even for extreme and infinite logits', () => {
    expect(ensembleStd([-1e6, 1e6], 1)).toBeCloseTo(0.5, 12);
    expect(ensembleStd([-Infinity, Infinity], 0.5)).toBeLessThanOrEqual(0.5);
    const rnd = crand(3);
    for (let k = 0; k < 200; k++) {
      const logits = Array.from({ length: 1 + (k % 7) }, () => (rnd() - 0.5) * 40);
      const v = ensembleStd(logits, 0.7);
      expect(v).toBeGreaterThanOrEqual(0);
      expect(v).toBeLessThanOrEqual(0.5);
    }
    expect(() => ensembleStd([], 1)).toThrow(/no members/);
    expect(() => ensembleStd([Number.NaN], 1)).toThrow(/NaN/);
  });

  it('flags values above the cutoff, and is null without an uncertainty block', () => {
    const spec = { output: 'members', cutoff: 0.1 };
    expect(uncertaintyOf([-3, 3], spec, 1)).toMatchObject({ uncertain: true, cutoff: 0.1 });
    expect(uncertaintyOf([0.1, 0.12], spec, 1)).toMatchObject({ uncertain: false });
    expect(uncertaintyOf(undefined, undefined, 1)).toEqual({ value: null, uncertain: false, cutoff: null, nearThreshold: false });
  });

  it("with the card's margin_logit, is also uncertain near the threshold (calibrated logits), however the members agree", () => {
    const spec = { output: 'members', cutoff: 0.1 };
    const s = { ...spec, margin_logit: 1 };
    const near = { probability: 0.75, threshold: 0.8 }; // |logit(0.75) - logit(0.8)| = 0.288
    const far = { probability: 0.2, threshold: 0.8 }; // 2.77
    expect(uncertaintyOf([0.1, 0.1], s, 1, 0, near)).toMatchObject({ uncertain: true, nearThreshold: true });
    expect(uncertaintyOf([0.1, 0.1], s, 1, 0, far)).toMatchObject({ uncertain: false, nearThreshold: false });
    expect(uncertaintyOf([0.1, 0.1], spec, 1, 0, near)).toMatchObject({ uncertain: false, nearThreshold: false });
    expect(uncertaintyOf([0.1, 0.1], s, 1, 0, { probability: 1, threshold: 0.8 }).nearThreshold).toBe(false);
  });
});

describe('card blocks', () => {
  it('are described in words by `info` (and their absence too)', () => {
    const rows = new Map(
      describeCard({
        name: 'm',
        version: '1',
        gate: {
          output: 'ood',
          threshold: 1,
          components: [{ name: 'feature_mahalanobis' }, { name: 'pixel_pca_residual' }],
          validation: { false_rejection_rate: 0.006, n: 786 },
        },
        uncertainty: {
          output: 'members',
          method: 'ensemble_disagreement',
          cutoff: 0.08,
          validation: { flagged_fraction: 0.05, error_rate_flagged: 0.2, error_rate_unflagged: 0.01 },
        },
      }),
    );
    expect(rows.get('Input gate')).toBe(
      'image checks + the model\'s score "ood" (refused above 1; feature_mahalanobis, pixel_pca_residual); refuses 0.6% of validation X-rays (n 786)',
    );
    expect(rows.get('Uncertainty')).toBe(
      'ensemble_disagreement, "uncertain: refer to a clinician" above 0.08; flags 5% of validation images; error rate 20% flagged vs 1% not',
    );
    const old = new Map(describeCard({ name: 'm', version: '1' }));
    expect(old.get('Input gate')).toMatch(/^image checks only/);
    expect(old.get('Uncertainty')).toBe('none (this model gives no uncertainty estimate)');
  });

  it.each([
    [
      'a gate whose output is not outputs.ood',
      (c: any) => (c.gate = { output: 'other', threshold: 1 }),
      /"gate\.output" must be equal to outputs\.ood/,
    ],
    ['a gate without a threshold', (c: any) => (c.gate = { output: 'ood' }), /"gate\.threshold" must be a positive number/],
    [
      'an uncertainty cutoff above 0.5',
      (c: any) => (c.uncertainty = { output: 'members', cutoff: 0.7 }),
      /"uncertainty\.cutoff" must be a number in \(0, 0\.5\]/,
    ],
  ])('refuses %s', (_name, patch, message) => {
    const { cardPath } = writeTinyModel({ size: 32, channels: 4, stride: 4, ood: true, members: 3 }, patch);
    expect(() => loadCard(cardPath)).toThrow(message);
  });

  it('refuses a card whose uncertainty output the graph lacks', async () => {
    const card = loadCard(
      writeTinyModel({ size: 32, channels: 4, stride: 4 }, (c) => (c.uncertainty = { output: 'members', cutoff: 0.1 })).cardPath,
    );
    await expect(ModelSession.create(card.modelPath, card, { threads: 1 })).rejects.toThrow(
      /output members="members" is not a graph output/,
    );
  });
});

describe('engine with a gated tiny model', () => {
  // ood = mean of the normalised input (v/255 - 0.5) / 0.25, so threshold 0.5 refuses images of mean gray above ~160.
  const SPEC = { size: 32, channels: 4, stride: 4, ood: true, members: 5 };
  const patch = (c: any) => {
    c.gate = { output: 'ood', threshold: 0.5 };
    c.uncertainty = { output: 'members', method: 'ensemble_disagreement', cutoff: 0.05 };
  };
  let engine: Engine;
  let cardPath: string;
  const dark = texturedGrayPng(40, 48, 5, 0, 120); // passes the image checks, mean < 128
  const bright = texturedGrayPng(40, 48, 6, 140, 250); // passes the image checks, mean > 128

  beforeAll(async () => {
    cardPath = writeTinyModel(SPEC, patch).cardPath;
    engine = await Engine.load({ card: cardPath, threads: 1 });
  });
  afterAll(async () => engine?.dispose());

  it('accepts an image under the gate threshold; uncertainty is the members spread, in [0, 0.5]', async () => {
    const r = await engine.analyse(dark);
    expect(r.rejected).toBe(false);
    expect(r.gate.score).toBeLessThan(0.5);
    expect(r.gate.threshold).toBe(0.5);
    // the members logits straight from the session, on the same preprocessed input
    const card = loadCard(cardPath);
    const s = await ModelSession.create(card.modelPath, card, { threads: 1 });
    const out = await s.run(preprocess(await decode(dark), card), 1);
    await s.dispose();
    expect(out.memberCount).toBe(5);
    const expected = ensembleStd(out.members!, card.postprocessing.temperature);
    expect(r.uncertainty).toBeCloseTo(expected, 6);
    expect(r.uncertainty!).toBeGreaterThanOrEqual(0);
    expect(r.uncertainty!).toBeLessThanOrEqual(0.5);
    expect(r.uncertain).toBe(expected > 0.05);
    expect(r.warnings.some((w) => w.startsWith('uncertain: refer to a clinician'))).toBe(r.uncertain);
    expect(r.warnings).not.toContain('This model provides no uncertainty estimate.');
  });

  it('declines an image that passes the image checks but scores above the gate threshold: 422 outside_intended_use, basis gate_score, score and reasons', async () => {
    const err = await engine.analyse(bright).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PneumoError);
    const e = err as PneumoError;
    expect([e.status, e.code]).toEqual([422, 'outside_intended_use']);
    expect(e.details!.basis).toBe('gate_score');
    expect(e.details!.score).toBeGreaterThan(0.5);
    expect(e.details!.threshold).toBe(0.5);
    expect(e.details!.reasons).toEqual([
      expect.stringMatching(/^unlike the chest X-rays the model was trained and validated on \(gate score .* its limit\)$/),
    ]);
    expect(e.toJSON().error).toMatchObject({
      code: 'outside_intended_use',
      basis: 'gate_score',
      score: e.details!.score,
      reasons: e.details!.reasons,
    });
  });

  it('with force: returns the result, rejected, with a warning first and the Grad-CAM', async () => {
    const r = await engine.analyse(bright, { force: true });
    expect(r).toMatchObject({ rejected: true, reason: 'outside_intended_use', gate: { basis: 'gate_score' } });
    expect(r.warnings[0]).toMatch(
      /^Analysed anyway \(forced\), but this radiograph is unlike the chest X-rays the model was trained and validated on/,
    );
    expect(r.cam).toBeDefined();
  });

  it('a batch flags rejected images in place (no Grad-CAM) next to accepted ones', async () => {
    const many = (await collect(engine.analyseStream([dark, bright, await colourPhotoPng(48, 40, 9)]))).map(resultOrError);
    const [a, b, c] = many as Array<Exclude<(typeof many)[number], PneumoError>>;
    expect([a.rejected, b.rejected, c.rejected]).toEqual([false, true, true]);
    expect(a.cam).toBeDefined();
    expect(b.cam).toBeUndefined();
    expect(c.gate.checks.failures.map((f) => f.check)).toContain('colour');
    expect(b.gate.checks.passed).toBe(true);
  });
});

describe('generated fixtures', () => {
  it('render as described (colour, text, sizes)', async () => {
    const meta = await sharp(await textPng(400, 300)).metadata();
    expect([meta.width, meta.height]).toEqual([400, 300]);
    expect((await decode(await colourPhotoPng(64, 48, 1))).channels).toBe(3);
  });
});
