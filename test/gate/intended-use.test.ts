/**
 * Intended use with the shipped model, decided by what the film is, never by which hospital made it:
 * real films of another hospital (NIH ChestX-ray14, public, two committed 256x256 adult fixtures from
 * the development validation patients) and the pediatric fixtures of the training hospital are all
 * chest X-rays. Model 3.0.0 has no intended-use head (2.0.0's learnt "not this hospital"): every one of
 * them is analysed, with the adults' lower accuracy stated in the card; a model whose card has a head
 * declines what the head declines (the rule itself: test/gate/gate.test.ts, test/gate/outcome.test.ts).
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fileUpload } from '../fixtures/server-helpers.ts';
import { useApp } from '../fixtures/app.ts';
import { FIXTURES } from '../fixtures/paths.ts';

const ADULTS = ['nih/adult_normal_ap.jpeg', 'nih/adult_pneumonia_pa.jpeg'];
const CHILDREN = ['golden/normal_gray_200x240.png', 'golden/pneumonia_gray_224.png'];
const read = (f: string): Buffer => readFileSync(resolve(FIXTURES, f));

const t = useApp();

describe('the shipped model decides intended use by what a film is, not by its hospital', () => {
  it('its card measures other hospitals instead of declining them: by-source rows for another hospital and its children', () => {
    const rows = (t.engine.card.metrics as { by_source?: Array<{ source: string; n: number }> }).by_source ?? [];
    expect(rows.some((r) => /NIH/.test(r.source) && r.n > 0)).toBe(true);
    if (!t.engine.card.gate?.intended_use) {
      expect(rows.some((r) => /children/i.test(r.source))).toBe(true);
      expect(t.engine.card.intended_use).toMatch(/children/);
    }
  });

  it.each([...ADULTS, ...CHILDREN])('%s is a chest X-ray: never refused as "not a chest X-ray"', async (f) => {
    const r = await t.engine.analyse(read(f), { cam: false, force: true });
    expect(r.reason).not.toBe('not_a_chest_xray');
    expect(r.gate.checks.passed).toBe(true);
  });

  it.each(ADULTS)('%s (another hospital): analysed when the card has no intended-use head, declined only by a head', async (f) => {
    const r = await t.engine.analyse(read(f), { cam: false, force: true });
    if (t.engine.card.gate?.intended_use) {
      expect(r.rejected && r.reason === 'outside_intended_use').toBe(true);
    } else {
      expect(r.gate.scope).toBeNull();
      expect(r.rejected).toBe(false);
      expect(r.warnings.join(' ')).not.toMatch(/Analysed anyway/);
    }
  });

  it.each(CHILDREN)('%s (training hospital, pediatric) is analysed', async (f) => {
    const r = await t.engine.analyse(read(f), { cam: false });
    expect(r.rejected).toBe(false);
  });

  it('the API answers 200 for an adult film of another hospital without force when the card has no head', async () => {
    const { payload, headers } = fileUpload(read(ADULTS[1]), 'adult.jpeg');
    const res = await t.app.inject({ method: 'POST', url: '/api/predict?cam=false', payload, headers });
    if (t.engine.card.gate?.intended_use) {
      expect(res.statusCode).toBe(422);
      expect(res.json().error.code).toBe('outside_intended_use');
    } else {
      expect(res.statusCode).toBe(200);
      expect(res.json()).toMatchObject({ rejected: false });
    }
  });
});
