/**
 * Who the model is for (issue 19 item 8), said on the first screen of every front end and derived
 * from the model card, so it stays true when the model changes: `intendedPopulation`, the
 * `population` of GET /api/model, and the first row after the name in `pneumolens info`.
 * (The page header: test/web/web-truth.test.ts; the README's first line: test/e2e/readme.test.ts.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/cli/main.ts';
import type { Io } from '../../src/cli/io.ts';
import { intendedPopulation, populationText, type CardInfo } from '../../src/eval/card.ts';
import { Engine } from '../../src/pipeline.ts';
import { buildApp } from '../../src/server/app.ts';
import { writeTinyModel } from '../fixtures/make-onnx.ts';

const base: CardInfo = { name: 'm', version: '1' };

describe('intendedPopulation: from the card, in its own words', () => {
  it('takes the intended-use head population first', () => {
    const card: CardInfo = {
      ...base,
      gate: { intended_use: { output: 'scope', threshold: 1, population: 'children aged 1-5 of hospital A' } },
      intended_use: 'Research. Validated population: something else.',
    };
    expect(intendedPopulation(card)).toBe('children aged 1-5 of hospital A');
  });

  it('without a head (a card without gate.intended_use): the "Validated population:" sentence, then a limitation', () => {
    expect(intendedPopulation({ ...base, intended_use: 'Research only. Validated population: adults of hospital B. More.' })).toBe(
      'adults of hospital B',
    );
    // the sentence ends at its first clause: a JSON path later in it ("metrics.by_source") does not cut it
    const open = 'Made for children. Validated population: children aged 1-5 at one hospital (Guangzhou); adults (metrics.by_source).';
    expect(intendedPopulation({ ...base, intended_use: open })).toBe('children aged 1-5 at one hospital (Guangzhou)');
    expect(
      intendedPopulation({
        ...base,
        intended_use: 'Research only.',
        limitations: ['Binary only.', 'Trained only on frontal (AP) pediatric chest X-rays (ages 1-5) from one hospital; adults are out.'],
      }),
    ).toBe('frontal (AP) pediatric chest X-rays (ages 1-5) from one hospital');
  });

  it('null when the card says nothing, and the words then say so instead of inventing one', () => {
    expect(intendedPopulation({ ...base, intended_use: 'Research only.', limitations: ['Binary only.'] })).toBeNull();
    expect(populationText(base)).toMatch(/does not say which population/);
    expect(populationText({ ...base, intended_use: 'Validated population: X-rays of Y.' })).toBe(
      'validated only for X-rays of Y; results on other patients are not validated',
    );
  });
});

describe('front ends say it first', () => {
  const POPULATION = 'frontal chest X-rays of test children aged 2-3';
  let engine: Engine;

  beforeAll(async () => {
    const { cardPath } = writeTinyModel({ size: 32, channels: 4, stride: 4, ood: true, scope: true }, (c) => {
      c.gate = { output: 'ood', threshold: 100, intended_use: { output: 'scope', threshold: 0.5, population: POPULATION } };
    });
    engine = await Engine.load({ card: cardPath, threads: 1 });
  }, 60_000);

  afterAll(async () => {
    await engine?.dispose();
  });

  it('GET /api/model carries `population`; null for a card without one', async () => {
    const app = buildApp({ engine, maxConcurrent: 1 });
    const card = (await app.inject('/api/model')).json();
    expect(card.population).toBe(POPULATION);
    expect(card.gate.intended_use.population).toBe(POPULATION);
    const doc = (await app.inject('/api/openapi.json')).json();
    expect(doc.paths['/api/model'].get.responses['200'].content['application/json'].schema.required).toContain('population');
    await app.close();
    const { cardPath } = writeTinyModel({ size: 32, channels: 4, stride: 4 }, (c) => {
      c.intended_use = 'Tests only.';
    });
    const bare = await Engine.load({ card: cardPath, threads: 1 });
    const app2 = buildApp({ engine: bare, maxConcurrent: 1 });
    expect((await app2.inject('/api/model')).json()).toMatchObject({ population: null });
    await app2.close();
    await bare.dispose();
  });

  it('pneumolens info: the row right after the model name', async () => {
    const out: string[] = [];
    const io: Io = { stdout: { write: (s: string) => out.push(s) }, stderr: { write: () => {} }, cwd: process.cwd(), env: {}, engine };
    expect(await run(['info'], io)).toBe(0);
    const lines = out.join('').split('\n');
    expect(lines[0]).toMatch(/^Model\s+tiny-test-model/);
    expect(lines[1]).toMatch(new RegExp(`^Intended for\\s+validated only for ${POPULATION}; results on other patients are not validated$`));
  });
});
