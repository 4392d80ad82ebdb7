/**
 * One layer owns batching (issue 12 item 5): Engine.analyseStream chunks the inputs and reads and
 * decodes the next chunk while the model runs the current one; the CLI hands it every file at
 * once (with its batch size) instead of awaiting chunks of its own, so it overlaps them too.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { analyseFiles } from '../../src/cli/batch.ts';
import { Engine, type Source } from '../../src/pipeline.ts';
import { tinyEngine } from '../fixtures/tiny-model.ts';
import { texturedGrayPng } from '../fixtures/non-cxr.ts';
import { testTmp } from '../fixtures/paths.ts';

let engine: Engine;
let png: Buffer;

beforeAll(async () => {
  engine = await tinyEngine();
  png = texturedGrayPng(40, 48, 3, 0, 120);
});

afterAll(() => engine?.dispose());

describe('batching', () => {
  it('the engine reads the next chunk before it hands out the current one, never further ahead', async () => {
    const read: number[] = [];
    const sources: Source[] = Array.from({ length: 7 }, (_, i) => async () => {
      read.push(i);
      return png;
    });
    const seen: number[][] = [];
    for await (const chunk of engine.analyseStream(sources, { cam: false }, 3)) {
      seen.push([...read].sort((a, b) => a - b));
      expect(chunk.every((o) => o.status === 'analysed')).toBe(true);
    }
    // when chunk k (3 images) arrives, chunk k+1 is already being read; chunk k+2 is not
    expect(seen.map((r) => r.length)).toEqual([6, 7, 7]);
  });

  it('the CLI gives the engine every file in one stream, with its batch size', async () => {
    const dir = await mkdtemp(join(testTmp(), 'pneumolens-batch-'));
    const files = Array.from({ length: 5 }, (_, i) => `f${i}.png`);
    for (const f of files) await writeFile(join(dir, f), png);
    const calls: Array<{ n: number; batch: number | undefined }> = [];
    const spy = new Proxy(engine, {
      get(target, prop, receiver) {
        if (prop === 'analyseStream') {
          return (items: Source[], opts: object, batch?: number) => {
            calls.push({ n: items.length, batch });
            return target.analyseStream(items, opts, batch);
          };
        }
        return Reflect.get(target, prop, receiver);
      },
    });
    const outcomes = [];
    for await (const chunk of analyseFiles(spy, files, dir, { cam: false }, 2)) outcomes.push(...chunk);
    expect(calls).toEqual([{ n: 5, batch: 2 }]);
    expect(outcomes.map((o) => [o.file, o.status])).toEqual(files.map((f) => [f, 'analysed']));
  });
});
