/**
 * The CLI end to end on a temp folder of small synthetic chest-like images, with the shipped model.
 * Most cases call run(argv, io) in-process with one shared engine; two go through the real
 * launcher (bin/pneumolens.js) as a subprocess.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { Engine } from '../../src/pipeline.ts';
import { run } from '../../src/cli/main.ts';
import { memIo } from '../fixtures/mem-io.ts';
import { REPO as ROOT, testTmp } from '../fixtures/paths.ts';

/**
 * A 96x112 chest X-ray made from the shipped golden fixtures (real images, so the input gate accepts
 * them): the seed picks the source image and a small brightness change.
 */
async function chestPng(seed: number, pneumonia: boolean): Promise<Buffer> {
  const srcs = pneumonia ? ['pneumonia_gray_224.png', 'pneumonia_rgba_180.png'] : ['normal_gray_200x240.png', 'normal_rgb_300x256.png'];
  const src = join(ROOT, 'test/fixtures/golden', srcs[seed % 2]);
  return sharp(src)
    .flatten({ background: '#000000' })
    .grayscale()
    .resize(96, 112, { fit: 'fill' })
    .linear(1, (seed % 3) * 2)
    .png()
    .toBuffer();
}

let dir: string;
let engine: Engine;

beforeAll(async () => {
  dir = await mkdtemp(join(testTmp(), 'pneumolens-cli-'));
  await mkdir(join(dir, 'set/normal'), { recursive: true }); // lower case on purpose
  await mkdir(join(dir, 'set/Pneumonia/sub'), { recursive: true });
  for (let i = 0; i < 3; i++) {
    await writeFile(join(dir, `set/normal/n${i}.png`), await chestPng(10 + i, false));
    await writeFile(join(dir, `set/Pneumonia/sub/p${i}.png`), await chestPng(20 + i, true));
  }
  await writeFile(join(dir, 'set/normal/broken.png'), 'this is not a PNG at all');
  engine = await Engine.load({ threads: 1 });
});

afterAll(async () => {
  await engine?.dispose();
  await rm(dir, { recursive: true, force: true });
});

describe('predict', () => {
  it('--json gives one calibrated result per file, and one reported error for the bad file', async () => {
    const io = memIo(dir, engine);
    const code = await run(['predict', '--json', 'set'], io);
    expect(code).toBe(1); // the broken file fails, the batch goes on
    const out = JSON.parse(io.out());
    expect(out.model).toEqual({ name: engine.card.name, version: engine.card.version });
    expect(out.results).toHaveLength(7);
    const bad = out.results.filter((r: { error?: unknown }) => r.error);
    expect(bad).toEqual([
      {
        file: join('set/normal/broken.png'),
        error: { code: expect.stringMatching(/unsupported_media_type|undecodable_image/), message: expect.any(String) },
      },
    ]);
    const T = engine.card.postprocessing.temperature;
    const B = engine.card.postprocessing.bias ?? 0;
    for (const r of out.results.filter((r: { error?: unknown }) => !r.error)) {
      expect(Object.keys(r)).toEqual(
        expect.arrayContaining(['file', 'label', 'probability', 'logit', 'threshold', 'model', 'image', 'warnings']),
      );
      expect(r).not.toHaveProperty('cam');
      expect(r.probability).toBeGreaterThanOrEqual(0);
      expect(r.probability).toBeLessThanOrEqual(1);
      expect(r.probability).toBeCloseTo(1 / (1 + Math.exp(-(r.logit / T + B))), 5);
      expect(r.threshold).toBe(engine.card.postprocessing.threshold);
      expect(r.label).toBe(r.probability >= r.threshold ? engine.card.labels[1] : engine.card.labels[0]);
      expect(r.image).toMatchObject({ width: 96, height: 112, format: 'png' });
    }
    expect(io.err()).toMatch(/broken\.png: (unsupported_media_type|undecodable_image): /);
    expect(io.err()).toMatch(/1 input\(s\) failed, 6 analysed/);
  });

  it('--csv writes a header and a row per file; --threshold 0 calls everything positive', async () => {
    const io = memIo(dir, engine);
    expect(await run(['predict', '--csv', '--threshold', '0', 'set/**/*.png'], io)).toBe(1);
    const lines = io.out().trimEnd().split('\n');
    expect(lines[0]).toBe(
      'file,label,probability,threshold,uncertainty,uncertain,rejected,reason,logit,width,height,format,warnings,cam_file,error_code,error_message',
    );
    expect(lines).toHaveLength(1 + 7);
    const ok = lines.slice(1).filter((l) => !l.includes('broken'));
    expect(ok).toHaveLength(6);
    for (const l of ok) expect(l.split(',').slice(1, 4)).toEqual([engine.card.labels[1], expect.any(String), '0']);
  });

  it('exits 0 with a table when every file works, and writes overlays with --cam', async () => {
    const io = memIo(dir, engine);
    expect(await run(['predict', '--cam', 'cams', '--colormap', 'viridis', 'set/normal/n0.png', 'set/Pneumonia'], io)).toBe(0);
    const lines = io.out().trimEnd().split('\n');
    expect(lines[0]).toMatch(/^FILE\s+LABEL\s+PROBABILITY\s+THRESHOLD\s+UNCERTAINTY$/); // the shipped ensemble estimates it
    expect(lines).toHaveLength(5);
    expect(io.err()).toBe('');
    const cams = (await readdir(join(dir, 'cams'))).sort();
    expect(cams).toEqual(['n0.cam.png', 'p0.cam.png', 'p1.cam.png', 'p2.cam.png']); // <name>.cam.png, as the help says
    const meta = await sharp(await readFile(join(dir, 'cams', cams[0]))).metadata();
    expect(meta.format).toBe('png');
    expect([meta.width, meta.height]).toEqual([96, 112]);
  });

  it('--cam: two inputs with the same name get two overlays, and the CSV says whose is whose', async () => {
    await mkdir(join(dir, 'dup'), { recursive: true });
    await writeFile(join(dir, 'dup', 'n0.png'), await readFile(join(dir, 'set/normal/n0.png')));
    const io = memIo(dir, engine);
    expect(await run(['predict', '--quiet', '--csv', '--cam', 'cams-dup', 'set/normal/n0.png', 'dup/n0.png'], io)).toBe(0);
    expect((await readdir(join(dir, 'cams-dup'))).sort()).toEqual(['n0-2.cam.png', 'n0.cam.png']);
    const [header, ...rows] = io.out().trimEnd().split('\n');
    const col = header.split(',').indexOf('cam_file');
    expect(rows.map((r) => `${r.split(',')[0]} ${r.split(',')[col]}`)).toEqual([
      `set/normal/n0.png ${join('cams-dup', 'n0.cam.png')}`,
      `dup/n0.png ${join('cams-dup', 'n0-2.cam.png')}`,
    ]);
  });

  it('draws the progress bar on a terminal stderr while stdout stays pure JSON', async () => {
    const io = memIo(dir, engine);
    io.stderr.isTTY = true;
    expect(await run(['predict', '--json', 'set/Pneumonia'], io)).toBe(0);
    expect(JSON.parse(io.out()).results).toHaveLength(3);
    expect(io.err()).toMatch(/\rpredict \[#+\] 3\/3 /);
  });

  it('reports a missing input and still analyses the rest', async () => {
    const io = memIo(dir, engine);
    expect(await run(['predict', '--json', 'set/normal/n1.png', 'nowhere.png'], io)).toBe(1);
    expect(JSON.parse(io.out()).results).toHaveLength(1);
    expect(io.err()).toContain('nowhere.png: no such file');
  });
});

describe('evaluate', () => {
  it('writes the metrics JSON with the contract keys, counts the bad file and writes the report', async () => {
    const io = memIo(dir, engine);
    const code = await run(['evaluate', '--json', 'm.json', '--report', 'r.html', '--bootstrap', '200', '--gallery', '2', 'set'], io);
    expect(code).toBe(0);
    const m = JSON.parse(await readFile(join(dir, 'm.json'), 'utf8'));
    for (const k of [
      'accuracy',
      'sensitivity',
      'specificity',
      'precision',
      'npv',
      'f1',
      'auc',
      'confusion',
      'threshold',
      'n',
      'auc_ci95',
      'pr_auc',
      'brier',
      'ece',
      'sweep',
      'errors',
      'model',
    ]) {
      expect(m, k).toHaveProperty(k);
    }
    expect(m.n).toBe(6);
    expect(m.threshold).toBe(engine.card.postprocessing.threshold);
    expect(m.errors).toEqual([{ file: join('normal/broken.png'), code: expect.any(String), message: expect.any(String) }]);
    // the headline numbers agree with the per-image predictions in the same file
    const preds: Array<{ truth: number; probability: number }> = m.predictions;
    expect(preds.map((p) => p.truth).sort()).toEqual([0, 0, 0, 1, 1, 1]);
    const tp = preds.filter((p) => p.truth === 1 && p.probability >= m.threshold).length;
    const tn = preds.filter((p) => p.truth === 0 && p.probability < m.threshold).length;
    expect(m.confusion).toEqual({ tp, fp: 3 - tn, tn, fn: 3 - tp });
    expect(m.accuracy).toBeCloseTo((tp + tn) / 6, 12);
    expect(m.sweep).toHaveLength(21);
    expect(io.out()).toMatch(/Accuracy\s+\d/);
    expect(io.out()).toContain('ROC-AUC');
    const html = await readFile(join(dir, 'r.html'), 'utf8');
    expect(html).toContain('Research and education tool, not a medical device.');
    expect(html.match(/<svg /g)?.length).toBe(4);
    expect(html).toContain('normal/broken.png');
  });

  it('with --json - prints only JSON on stdout; --limit takes N per class', async () => {
    const io = memIo(dir, engine);
    expect(await run(['evaluate', '--json', '-', '--limit', '2', '--bootstrap', '50', 'set'], io)).toBe(0);
    const m = JSON.parse(io.out());
    // normal/: broken.png (fails, still counted against the limit) and n0.png; Pneumonia/: p0, p1
    expect(m.n).toBe(3);
    expect(m.positives).toBe(2);
    expect(m.errors).toHaveLength(1);
  });

  it('is a usage error when a class folder is missing', async () => {
    const io = memIo(dir, engine);
    expect(await run(['evaluate', 'set/normal'], io)).toBe(2);
    expect(io.err()).toMatch(/has no NORMAL folder/);
  });
});

describe('info', () => {
  it('describes the model card in words', async () => {
    const io = memIo(dir, engine);
    expect(await run(['info'], io)).toBe(0);
    const text = io.out();
    for (const k of ['Model', 'Input', 'Preprocessing', 'Threshold', 'Calibration']) expect(text).toMatch(new RegExp(`^${k}\\s`, 'm'));
    expect(text).toContain(`${engine.card.name} ${engine.card.version}`);
    expect(text).toContain('not a medical device');
  });
});

describe('subprocess through bin/pneumolens.js', () => {
  const cli = (args: string[]) => spawnSync(process.execPath, [join(ROOT, 'bin/pneumolens.js'), ...args], { cwd: dir, encoding: 'utf8' });

  it('predict --json: clean JSON on stdout, exit 0', () => {
    const r = cli(['predict', '--json', '--threads', '1', 'set/normal/n2.png']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout).results[0]).toMatchObject({ file: 'set/normal/n2.png', image: { width: 96, height: 112 } });
  });

  it('exit 1 and the error on stderr for a bad file; exit 2 on a usage error', () => {
    const bad = cli(['predict', '--threads', '1', 'set/normal/broken.png']);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/broken\.png: \w+: /);
    const usage = cli(['predict', '--alpha', '3', 'x.png']);
    expect(usage.status).toBe(2);
    expect(usage.stderr).toContain('--alpha must be a number in [0, 1]');
  });
});
