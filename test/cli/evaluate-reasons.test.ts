/**
 * `pneumolens evaluate` tells each rejection reason apart and says when its AUC interval is not
 * informative (issue 19 items 7 and 9): in the terminal, the JSON and the HTML report. A tiny
 * gated model: bright films are outside its intended use, a colour photo is not a chest X-ray.
 */
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/cli/main.ts';
import { outsideRows } from '../../src/eval/card.ts';
import { bootstrapAucCi, ciInformative, MIN_PER_CLASS_FOR_CI, mulberry32 } from '../../src/eval/metrics.ts';
import { Engine } from '../../src/pipeline.ts';
import { writeTinyModel } from '../fixtures/make-onnx.ts';
import { colourPhotoPng, texturedGrayPng } from '../fixtures/non-cxr.ts';
import { memIo as memIoAt, type MemIo } from '../fixtures/mem-io.ts';
import { testTmp } from '../fixtures/paths.ts';

let engine: Engine;
let dir: string;

beforeAll(async () => {
  const { cardPath } = writeTinyModel({ size: 32, channels: 4, stride: 4, ood: true, scope: true }, (c) => {
    c.gate = { output: 'ood', threshold: 100, intended_use: { output: 'scope', threshold: 0.5 } };
  });
  engine = await Engine.load({ card: cardPath, threads: 1 });
  dir = await mkdtemp(join(testTmp(), 'pneumolens-reasons-'));
  await mkdir(join(dir, 'set/NORMAL'), { recursive: true });
  await mkdir(join(dir, 'set/PNEUMONIA'), { recursive: true });
  await writeFile(join(dir, 'set/NORMAL/a.png'), texturedGrayPng(40, 48, 3, 0, 120));
  await writeFile(join(dir, 'set/NORMAL/b.png'), texturedGrayPng(40, 48, 4, 0, 110));
  await writeFile(join(dir, 'set/NORMAL/photo.png'), await colourPhotoPng(64, 48, 4));
  await writeFile(join(dir, 'set/PNEUMONIA/c.png'), texturedGrayPng(40, 48, 5, 0, 120));
  await writeFile(join(dir, 'set/PNEUMONIA/d.png'), texturedGrayPng(40, 48, 7, 10, 120));
  for (const k of [1, 2, 3]) await writeFile(join(dir, `set/PNEUMONIA/adult${k}.png`), texturedGrayPng(40, 48, 10 + k, 140, 250));
}, 60_000);

afterAll(async () => {
  await engine?.dispose();
});

const memIo = (): MemIo => memIoAt(dir, engine);

describe('evaluate: each rejection reason on its own', () => {
  it('terminal, stderr, JSON and HTML count and name "not a chest X-ray" and "outside the intended use" apart', async () => {
    const io = memIo();
    expect(await run(['evaluate', '--quiet', '--bootstrap', '50', '--json', 'm.json', '--report', 'r.html', 'set'], io)).toBe(0);
    const text = io.out();
    expect(text).toMatch(/^Rejected\s+1 image\(s\) judged not chest X-rays by the input gate \(not_a_chest_xray\)$/m);
    expect(text).toMatch(/^Declined\s+3 image\(s\) declined as outside the model's intended use .*\(outside_intended_use\)$/m);
    expect(text).not.toMatch(/4 image\(s\) judged not chest X-rays/);
    expect(io.err()).toMatch(/PNEUMONIA\/adult1\.png: declined, outside the intended use: /);
    expect(io.err()).toMatch(/NORMAL\/photo\.png: rejected, not a chest X-ray: /);
    expect(io.err()).not.toMatch(/adult\d\.png: rejected, not a chest X-ray/);

    const json = JSON.parse(await readFile(join(dir, 'm.json'), 'utf8'));
    expect(json.n).toBe(4);
    expect(json.rejected_by_reason).toEqual({ not_a_chest_xray: 1, outside_intended_use: 3 });
    expect(json.forced_by_reason).toEqual({ not_a_chest_xray: 0, outside_intended_use: 0 });

    const html = await readFile(join(dir, 'r.html'), 'utf8');
    expect(html).toMatch(/<b>1<\/b> image\(s\) judged not chest X-rays by the input gate \(<code>not_a_chest_xray<\/code>\)/);
    expect(html).toMatch(/<b>3<\/b> image\(s\) declined as outside the model&#39;s intended use/);
    expect(html).toMatch(/Images declined as outside the model&#39;s intended use \(3\)/);
    expect(html).toMatch(/Images rejected as not chest X-rays \(1\)/);
  });

  it('--force: the forced images are counted per reason too', async () => {
    const io = memIo();
    expect(await run(['evaluate', '--quiet', '--force', '--bootstrap', '20', '--json', '-', 'set'], io)).toBe(0);
    const json = JSON.parse(io.out());
    expect(json.n).toBe(8);
    expect(json.forced_by_reason).toEqual({ not_a_chest_xray: 1, outside_intended_use: 3 });
    expect(json.forced_rejected).toBe(4);
  });

  it('a 4-image evaluation says its AUC interval is not informative instead of printing it', async () => {
    const io = memIo();
    expect(await run(['evaluate', '--quiet', '--bootstrap', '50', '--json', 'm.json', '--report', 'r.html', 'set'], io)).toBe(0);
    expect(io.out()).toMatch(
      /^ROC-AUC\s+\S+ \(95% CI not informative: only 2 NORMAL and 2 PNEUMONIA image\(s\); it needs at least 30 of each class/m,
    );
    const json = JSON.parse(await readFile(join(dir, 'm.json'), 'utf8'));
    expect(json.auc_ci95).toMatchObject({ informative: false, not_informative_because: expect.stringMatching(/at least 30/) });
    expect(typeof json.auc_ci95.lower).toBe('number'); // the numbers stay in the JSON
    const html = await readFile(join(dir, 'r.html'), 'utf8');
    expect(html).toMatch(/95% CI not informative: only 2 NORMAL and 2 PNEUMONIA/);
    expect(html).not.toMatch(/ROC-AUC<\/td><td>[\d.]+ \(95% CI \d/);
  });
});

describe('bootstrap AUC interval: informative or not', () => {
  const separated = (n: number) => ({
    labels: [...Array(n).fill(0), ...Array(n).fill(1)],
    scores: [...Array.from({ length: n }, (_, i) => i / (4 * n)), ...Array.from({ length: n }, (_, i) => 0.5 + i / (4 * n))],
  });

  it('a 40-image perfect ranking (the 1.000-1.000 of the issue): too few and degenerate', () => {
    const { labels, scores } = separated(20);
    const ci = bootstrapAucCi(labels, scores, { resamples: 200 })!;
    expect([ci.lower, ci.upper]).toEqual([1, 1]);
    expect(ci.informative).toBe(false);
    expect(ci.not_informative_because).toMatch(/only 20 NORMAL and 20 PNEUMONIA image\(s\)/);
    expect(ci.not_informative_because).toMatch(/every bootstrap resample gave the same AUC \(1\.000\)/);
  });

  it('enough images but a perfect ranking: degenerate; enough overlapping images: informative', () => {
    const big = separated(200);
    const ci = bootstrapAucCi(big.labels, big.scores, { resamples: 200 })!;
    expect(ci.informative).toBe(false);
    expect(ci.not_informative_because).not.toMatch(/only/);
    const rand = mulberry32(3);
    const labels = Array.from({ length: 120 }, (_, i) => (i % 2) as 0 | 1);
    const scores = labels.map((y) => rand() + 0.3 * y);
    const ok = bootstrapAucCi(labels, scores, { resamples: 200 })!;
    expect(ok).toMatchObject({ informative: true, not_informative_because: null });
    expect(ok.upper).toBeGreaterThan(ok.lower);
  });

  it("the model card's per-source intervals follow the same rule (pneumolens info, the report's card table)", () => {
    const row = (n_normal: number, n_pneumonia: number, auc_ci: [number, number]) => ({
      source: `S ${n_normal}/${n_pneumonia}`,
      n: n_normal + n_pneumonia,
      n_normal,
      n_pneumonia,
      auc: 0.9,
      auc_ci,
      sensitivity: 0.8,
      specificity: 0.8,
      ece: 0.1,
    });
    const rows = outsideRows({
      name: 'm',
      version: '1',
      metrics: { by_source: [row(44, 50, [0.791, 0.947]), row(32, 11, [0.704, 0.954]), row(40, 40, [1, 1])] },
    }).map(([, v]) => v);
    expect(rows[0]).toMatch(/auc 0\.9 \(95% CI 0\.791-0\.947\)/);
    expect(rows[1]).toMatch(/auc 0\.9 \(95% CI not informative: only 11 PNEUMONIA image\(s\); it needs at least 30 of each class\)/);
    expect(rows[2]).toMatch(/95% CI not informative: every bootstrap resample gave the same AUC/);
  });

  it('the stated sample size is the rule, class by class', () => {
    expect(ciInformative(0.7, 0.9, MIN_PER_CLASS_FOR_CI, MIN_PER_CLASS_FOR_CI).informative).toBe(true);
    expect(ciInformative(0.7, 0.9, MIN_PER_CLASS_FOR_CI - 1, 500).not_informative_because).toMatch(/^only 29 PNEUMONIA image\(s\)/);
  });
});
