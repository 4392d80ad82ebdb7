/**
 * Parity with the Python side: golden fixtures written by training/ (test/fixtures/golden/).
 * For each case: our decode+preprocess vs the Python tensor, our probability (real ONNX session)
 * and our Grad-CAM vs the Python values. Fails, not skips, when the fixtures are missing.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeImage } from '../../src/image/decode.ts';
import { REPO_ROOT } from '../../src/model/card.ts';
import { preprocess } from '../../src/model/preprocess.ts';
import { Engine } from '../../src/pipeline.ts';

interface GoldenCase {
  image: string;
  tensor: string;
  logit: number;
  probability: number;
  cam: number[];
  cam_shape: [number, number];
}
interface Manifest {
  card: string;
  cases: GoldenCase[];
}

const MANIFEST = join(REPO_ROOT, 'test', 'fixtures', 'golden', 'manifest.json');
const GOLDEN_DIR = dirname(MANIFEST);
const manifest: Manifest | null = existsSync(MANIFEST) ? (JSON.parse(readFileSync(MANIFEST, 'utf8')) as Manifest) : null;

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

function readF32(path: string): Float32Array {
  const buf = readFileSync(path);
  const out = new Float32Array(buf.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = buf.readFloatLE(i * 4);
  return out;
}

describe('parity with the Python golden fixtures', () => {
  it('has a golden manifest with cases', () => {
    expect(manifest, `missing ${MANIFEST} (written by the training side's export)`).not.toBeNull();
    expect(manifest!.cases.length).toBeGreaterThan(0);
  });
  if (!manifest) return;

  let engine: Engine;
  beforeAll(async () => {
    engine = await Engine.load({ card: resolve(REPO_ROOT, manifest.card) });
  });
  afterAll(async () => engine?.dispose());

  describe.each(manifest.cases.map((c) => [c.image, c] as const))('%s', (_name, c) => {
    const bytes = () => readFileSync(join(GOLDEN_DIR, c.image));

    it('preprocessed tensor matches (max abs diff < 1e-4)', async () => {
      const { image } = await decodeImage(bytes());
      const mine = preprocess(image, engine.card);
      const theirs = readF32(join(GOLDEN_DIR, c.tensor));
      expect(mine.length).toBe(theirs.length);
      expect(maxAbsDiff(mine, theirs)).toBeLessThan(1e-4);
    });

    it('probability matches (|diff| < 1e-4) and Grad-CAM matches (max |diff| < 1e-3)', async () => {
      const r = await engine.analyse(bytes());
      expect(Math.abs(r.probability - c.probability), `logit ours ${r.logit} vs theirs ${c.logit}`).toBeLessThan(1e-4);
      expect([r.cam!.mapHeight, r.cam!.mapWidth]).toEqual(c.cam_shape);
      expect(maxAbsDiff(r.cam!.map, c.cam)).toBeLessThan(1e-3);
    });
  });
});
