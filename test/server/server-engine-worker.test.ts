/**
 * The engine of `npm start` in worker threads (src/server/engine-worker.ts): the same answers as the
 * in-process Engine, errors keep their status and code, and the server's event loop stays free
 * while analyses run (the reason it exists: ONNX Runtime's run is synchronous on its thread).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { isPneumoError } from '../../src/errors.ts';
import { REPO_ROOT } from '../../src/model/card.ts';
import { Engine } from '../../src/pipeline.ts';
import { WorkerEngine } from '../../src/server/engine-worker.ts';

const xray = readFileSync(join(REPO_ROOT, 'test', 'fixtures', 'golden', 'pneumonia_gray_224.png'));

describe('WorkerEngine', () => {
  let engine: WorkerEngine;
  beforeAll(async () => {
    engine = await WorkerEngine.load({ threads: 1, workers: 2 });
  }, 60_000);
  afterAll(() => engine?.dispose());

  it('answers like the in-process engine, Grad-CAM included', async () => {
    const local = await Engine.load({ threads: 1 });
    try {
      const [a, b] = await Promise.all([engine.analyse(xray, { cam: true }), local.analyse(xray, { cam: true })]);
      expect(engine.card.name).toBe(local.card.name);
      expect(a.label).toBe(b.label);
      expect(a.probability).toBeCloseTo(b.probability, 6);
      expect(a.cam?.overlayPng.length).toBeGreaterThan(0);
      expect(Array.from(a.cam!.map)).toEqual(Array.from(b.cam!.map));
    } finally {
      await local.dispose();
    }
  }, 60_000);

  it('keeps PneumoError status and code', async () => {
    const err = await engine.analyse(Buffer.from('not an image at all')).catch((e: unknown) => e);
    expect(isPneumoError(err)).toBe(true);
    expect((err as { status: number }).status).toBeGreaterThanOrEqual(400);
    expect((err as { status: number }).status).toBeLessThan(500);
  });

  it('runs analyses without blocking the event loop', async () => {
    const delay = monitorEventLoopDelay({ resolution: 5 });
    delay.enable();
    const results = await Promise.all(Array.from({ length: 8 }, () => engine.analyse(xray, { cam: true })));
    delay.disable();
    expect(results.every((r) => r.label === results[0].label)).toBe(true);
    // In process, each analysis blocks the loop for its whole inference (tens to hundreds of ms).
    expect(delay.max / 1e6).toBeLessThan(100);
  }, 60_000);
});
