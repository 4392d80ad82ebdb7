/**
 * The shipped model (models/MODEL -> card -> onnx). These tests fail, not skip, when it is missing:
 * the model is part of the repository.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultCardPath } from '../../src/model/card.ts';
import { Engine } from '../../src/pipeline.ts';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { makePng } from '../fixtures/make-png.ts';
import { GOLDEN } from '../fixtures/paths.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const MB = 2 ** 20;
/** A real 224x224 chest X-ray (the golden fixture): accepted by the input gate. */
const xray = readFileSync(resolve(GOLDEN, 'pneumonia_gray_224.png'));
const image = (size: number) =>
  makePng({
    width: size,
    height: size,
    channels: 1,
    bitDepth: 8,
    samples: Array.from({ length: size * size }, (_, i) => (i * 31 + (i >> 5)) % 256),
  });

describe('shipped model', () => {
  let engine: Engine;
  beforeAll(async () => {
    // Throws with a message naming models/MODEL or the card when the model is not there.
    engine = await Engine.load({ card: defaultCardPath() });
  });
  afterAll(async () => engine?.dispose());

  it('loads (card valid, sha256 matches, head check passes) and analyses an image', async () => {
    const r = await engine.analyse(xray);
    expect(r.probability).toBeGreaterThanOrEqual(0);
    expect(r.probability).toBeLessThanOrEqual(1);
    expect(engine.card.labels).toContain(r.label);
    expect(r.cam!.map.length).toBe(r.cam!.mapWidth * r.cam!.mapHeight);
    const times: number[] = [];
    for (let i = 0; i < 5; i++) times.push((await engine.analyse(xray)).timings_ms.total);
    times.sort((a, b) => a - b);
    console.log(
      `analyse a 224x224 chest X-ray PNG with CAM, median total ${times[2].toFixed(1)} ms over 5 runs (threads ${engine.threads})`,
    );
  });

  it('does not grow memory over 50 analyses of the same image', async () => {
    const bytes = image(128); // a synthetic pattern: the input gate refuses it, forced to run the whole pipeline
    for (let i = 0; i < 5; i++) await engine.analyse(bytes, { force: true });
    gc();
    const before = process.memoryUsage();
    for (let i = 0; i < 50; i++) await engine.analyse(bytes, { force: true });
    gc();
    const after = process.memoryUsage();
    const heap = (after.heapUsed - before.heapUsed) / MB;
    const rss = (after.rss - before.rss) / MB;
    console.log(`memory over 50 analyses: heap ${heap.toFixed(1)} MB, rss ${rss.toFixed(1)} MB`);
    expect(heap).toBeLessThan(30);
    expect(rss).toBeLessThan(150);
  });

  it('dispose() releases the session', async () => {
    const e = await Engine.load({ card: defaultCardPath(), threads: 1 });
    await e.dispose();
    expect(e.disposed).toBe(true);
    await expect(e.analyse(image(64))).rejects.toThrow(/disposed/);
  });
});
