/**
 * Intended use, enforced, with the shipped model: real adult films of another hospital (NIH
 * ChestX-ray14, public, two committed 256x256 fixtures from the development validation patients)
 * are declined as `outside_intended_use`; the pediatric fixtures of the training hospital are not.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PneumoError } from '../src/errors.ts';
import { Engine } from '../src/pipeline.ts';
import { buildApp } from '../src/server/app.ts';
import { fileUpload } from './server-helpers.ts';

const FIX = resolve(import.meta.dirname, 'fixtures');
const ADULTS = ['nih/adult_normal_ap.jpeg', 'nih/adult_pneumonia_pa.jpeg'];
const CHILDREN = ['golden/normal_gray_200x240.png', 'golden/pneumonia_gray_224.png'];
const read = (f: string): Buffer => readFileSync(resolve(FIX, f));

let engine: Engine;
let app: FastifyInstance;

beforeAll(async () => {
  engine = await Engine.load();
  app = buildApp({ engine, maxConcurrent: 1 });
});

afterAll(async () => {
  await app?.close();
  await engine?.dispose();
});

describe('the shipped model declines films outside its intended use', () => {
  it('has an intended-use head in its card', () => {
    expect(engine.card.gate?.intended_use?.output).toBe('scope');
    expect(engine.card.gate?.intended_use?.threshold).toBe(1);
  });

  it.each(ADULTS)('%s: 422 outside_intended_use from analyse, with the score and the reason', async (f) => {
    const err = await engine.analyse(read(f), { cam: false }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PneumoError);
    const e = err as PneumoError;
    expect(e.status).toBe(422);
    expect(e.code).toBe('outside_intended_use');
    expect(e.message).toMatch(/children aged 1-5/);
    expect(e.details?.scope as number).toBeGreaterThan(1);
  });

  it('force analyses an adult film anyway, flagged and with a warning', async () => {
    const r = await engine.analyse(read(ADULTS[0]), { cam: false, force: true });
    expect(r).toMatchObject({ rejected: true, reason: 'outside_intended_use' });
    expect(r.warnings[0]).toMatch(/^Analysed anyway \(forced\)/);
  });

  it.each(CHILDREN)('%s (training hospital, pediatric) is not declined', async (f) => {
    const r = await engine.analyse(read(f), { cam: false });
    expect(r.rejected).toBe(false);
    expect(r.gate.scope).not.toBeNull();
    expect(r.gate.scope as number).toBeLessThanOrEqual(1);
  });

  it('the API answers 422 with code outside_intended_use, and 200 with force=true', async () => {
    const { payload, headers } = fileUpload(read(ADULTS[1]), 'adult.jpeg');
    const res = await app.inject({ method: 'POST', url: '/api/predict?cam=false', payload, headers });
    expect(res.statusCode).toBe(422);
    expect(res.json().error.code).toBe('outside_intended_use');
    const forced = await app.inject({ method: 'POST', url: '/api/predict?cam=false&force=true', payload, headers });
    expect(forced.statusCode).toBe(200);
    expect(forced.json()).toMatchObject({ rejected: true, reason: 'outside_intended_use' });
  });
});
