/**
 * The input gate and uncertainty with the shipped model (models/MODEL -> card -> onnx). Fails, not
 * skips, when the model is missing: real chest X-rays (the golden fixtures) are accepted; a colour
 * photo, rendered text and a constant image are refused with 422 through the API, and analysed
 * with a warning when forced; uncertainty is a number in [0, 0.5] (null with a warning for a model
 * without an ensemble).
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaultCardPath } from '../../src/model/card.ts';
import { Engine } from '../../src/pipeline.ts';
import { colourPhotoPng, constantPng, ctSlicePng, handPng, textPng } from '../fixtures/non-cxr.ts';
import { useApp } from '../fixtures/app.ts';
import { GOLDEN } from '../fixtures/paths.ts';

const golden = ['normal_gray_200x240.png', 'normal_rgb_300x256.png', 'pneumonia_gray_224.png', 'pneumonia_rgba_180.png'];

const t = useApp(() => Engine.load({ card: defaultCardPath() }));
const { predict } = t;

describe('shipped model: input gate and uncertainty', () => {
  it.each(golden)('accepts the real chest X-ray %s, with an uncertainty in [0, 0.5] (or null and a warning)', async (name) => {
    const r = await t.engine.analyse(readFileSync(resolve(GOLDEN, name)), { cam: false });
    expect(r.rejected).toBe(false);
    expect(r.gate.reasons).toEqual([]);
    expect(t.engine.card.gate, 'the shipped model must have its out-of-distribution gate').toBeDefined();
    expect(r.gate.score).toEqual(expect.any(Number));
    expect(r.gate.score!).toBeLessThanOrEqual(t.engine.card.gate!.threshold);
    if (t.engine.card.uncertainty) {
      expect(r.uncertainty).toEqual(expect.any(Number));
      expect(r.uncertainty!).toBeGreaterThanOrEqual(0);
      expect(r.uncertainty!).toBeLessThanOrEqual(0.5);
      expect(r.uncertain).toBe(r.uncertainty! > t.engine.card.uncertainty.cutoff);
    } else {
      expect(r.uncertainty).toBeNull();
      expect(r.warnings).toContain('This model provides no uncertainty estimate.');
    }
  });

  it('the model gate alone declines a CT-like slice and a hand-like radiograph, which pass the image checks, as outside the intended use', async () => {
    // Issue 19 item 3: the gate score measures likeness to the training films, which an adult PA chest of
    // another hospital lacks as much as a hand does: it declines (outside_intended_use), it does not call
    // the image "not a chest X-ray"; the words name both possibilities.
    for (const bytes of [await ctSlicePng(256, 1), await handPng(240, 300, 2)]) {
      const err = await t.engine.analyse(bytes, { cam: false }).catch((e: unknown) => e);
      expect(err).toMatchObject({ status: 422, code: 'outside_intended_use' });
      const { details, message } = err as { message: string; details: { basis: string; score: number; reasons: string[] } };
      expect(details.basis).toBe('gate_score');
      expect(details.score).toBeGreaterThan(t.engine.card.gate!.threshold);
      expect(details.reasons).toEqual([
        expect.stringMatching(/^unlike the chest X-rays the model was trained and validated on \(gate score .* its limit\)$/),
      ]);
      expect(message).toMatch(/another body part/);
    }
  });

  it('refuses a colour photo, rendered text and a constant image with 422 not_a_chest_xray', async () => {
    for (const bytes of [await colourPhotoPng(320, 240, 11), await textPng(300, 400, 3), constantPng(256, 256, 0)]) {
      const res = await predict(bytes);
      expect(res.statusCode).toBe(422);
      const { error } = res.json();
      expect(error.code).toBe('not_a_chest_xray');
      expect(error.reasons.length).toBeGreaterThan(0);
      expect('score' in error).toBe(true);
    }
  });

  it('force=true analyses a refused image with the warning; the accepted golden image answers 200 with the gate', async () => {
    const forced = await predict(await colourPhotoPng(320, 240, 11), '?force=true&cam=false');
    expect(forced.statusCode).toBe(200);
    expect(forced.json()).toMatchObject({ rejected: true, reason: 'not_a_chest_xray' });
    expect(forced.json().warnings[0]).toMatch(/^Analysed anyway \(forced\)/);
    const ok = await predict(readFileSync(resolve(GOLDEN, 'pneumonia_gray_224.png')), '?cam=false');
    expect(ok.statusCode).toBe(200);
    expect(ok.json()).toMatchObject({ rejected: false, gate: { rejected: false } });
    expect(ok.json()).toHaveProperty('uncertainty');
    expect(ok.json()).toHaveProperty('uncertain');
  });
});
