/**
 * The input gate and uncertainty through the front ends (issue 5): HTTP API (422 not_a_chest_xray,
 * force=true) and CLI (predict --json/--csv/table fields, --force, evaluate counts), on the real
 * engine with a tiny gated model (ood and members outputs, gate and uncertainty card blocks).
 */
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/cli/main.ts';
import { colourPhotoPng, texturedGrayPng, textPng } from '../fixtures/non-cxr.ts';
import { useApp } from '../fixtures/app.ts';
import { gated, tinyEngine } from '../fixtures/tiny-model.ts';
import { memIo as memIoAt, type MemIo } from '../fixtures/mem-io.ts';
import { testTmp } from '../fixtures/paths.ts';

const t = useApp(() => tinyEngine({ ood: true, members: 5 }, gated(0.05)));
const { predict } = t;
let dir: string;
// ood = mean normalised input: threshold 0.5 refuses images of mean gray above ~160.
const dark = (seed: number) => texturedGrayPng(40, 48, seed, 0, 120);
const bright = texturedGrayPng(40, 48, 6, 140, 250);
let colour: Buffer;

beforeAll(async () => {
  colour = await colourPhotoPng(64, 48, 4);
  dir = await mkdtemp(join(testTmp(), 'pneumolens-gate-'));
  await mkdir(join(dir, 'set/NORMAL'), { recursive: true });
  await mkdir(join(dir, 'set/PNEUMONIA'), { recursive: true });
  for (let i = 0; i < 3; i++) await writeFile(join(dir, `set/NORMAL/n${i}.png`), dark(10 + i));
  await writeFile(join(dir, 'set/PNEUMONIA/p0.png'), dark(20));
  await writeFile(join(dir, 'set/PNEUMONIA/photo.png'), colour);
  await writeFile(join(dir, 'set/NORMAL/letter.png'), await textPng(200, 240));
  await writeFile(join(dir, 'bright.png'), bright);
});

describe('API', () => {
  it('422 not_a_chest_xray for a colour photo (image checks); 422 outside_intended_use for a high gate score on an image that passes them (issue 19 item 3)', async () => {
    for (const [bytes, code, basis, message, reason] of [
      [colour, 'not_a_chest_xray', 'image_checks', /^This does not look like a chest X-ray/, /colour image/],
      [bright, 'outside_intended_use', 'gate_score', /^This radiograph is unlike the chest X-rays/, /gate score .* times its limit/],
    ] as const) {
      const res = await predict(bytes);
      expect(res.statusCode).toBe(422);
      const { error } = res.json();
      expect(error.code).toBe(code);
      expect(error.basis).toBe(basis);
      expect(error.message).toMatch(message);
      expect(typeof error.score).toBe('number');
      expect(error.threshold).toBe(0.5);
      expect(error.reasons.join(' ')).toMatch(reason);
    }
  });

  it('force=true: 200 with the warning, rejected, gate and uncertainty', async () => {
    const res = await predict(colour, '?force=true&cam=false');
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(body.rejected).toBe(true);
    expect(body.reason).toBe('not_a_chest_xray');
    expect(body.warnings[0]).toMatch(/^Analysed anyway \(forced\)/);
    expect(body.gate).toMatchObject({ rejected: true, threshold: 0.5, checks: { passed: false } });
    expect(body.uncertainty).toBeGreaterThanOrEqual(0);
    expect(body.uncertainty).toBeLessThanOrEqual(0.5);
    expect(typeof body.uncertain).toBe('boolean');
  });

  it('an accepted image: 200 with rejected false, the gate score and the uncertainty', async () => {
    const res = await predict(dark(1));
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(body).toMatchObject({ rejected: false, gate: { rejected: false, reasons: [] } });
    expect(body).not.toHaveProperty('reason');
    expect(body.gate.score).toBeLessThanOrEqual(0.5);
    expect(body.uncertainty).toBeGreaterThanOrEqual(0);
    expect(body.uncertainty).toBeLessThanOrEqual(0.5);
    expect(body.uncertain).toBe(body.uncertainty > 0.05);
  });

  it('force must be a boolean', async () => {
    expect((await predict(dark(1), '?force=maybe')).statusCode).toBe(400);
  });
});

const memIo = (): MemIo => memIoAt(dir, t.engine);

describe('CLI', () => {
  it('predict --json: rejected and reason on every result; no label or probability for refused images; exit 1', async () => {
    const io = memIo();
    expect(await run(['predict', '--json', 'set', 'bright.png'], io)).toBe(1);
    const results = JSON.parse(io.out()).results as Array<Record<string, any>>;
    expect(results).toHaveLength(7);
    const byFile = Object.fromEntries(results.map((r) => [r.file, r]));
    for (const [f, reason, message] of [
      ['set/PNEUMONIA/photo.png', 'not_a_chest_xray', /not look like a chest X-ray/],
      ['set/NORMAL/letter.png', 'not_a_chest_xray', /not look like a chest X-ray/],
      ['bright.png', 'outside_intended_use', /unlike the chest X-rays the model was trained and validated on/],
    ] as const) {
      expect(byFile[f]).toMatchObject({ rejected: true, reason, message: expect.stringMatching(message) });
      expect(byFile[f]).not.toHaveProperty('label');
      expect(byFile[f]).not.toHaveProperty('probability');
    }
    for (const f of ['set/NORMAL/n0.png', 'set/PNEUMONIA/p0.png']) {
      expect(byFile[f].rejected).toBe(false);
      expect(byFile[f]).not.toHaveProperty('reason');
      expect(byFile[f].uncertainty).toBeGreaterThanOrEqual(0);
      expect(byFile[f].uncertainty).toBeLessThanOrEqual(0.5);
    }
    expect(io.err()).toMatch(/3 input\(s\) rejected as not chest X-rays/);
    expect(io.err()).toMatch(/letter\.png: not_a_chest_xray: mostly white background/);
  });

  it('predict table says REJECTED plainly; --force shows the label with a mark and exits 0', async () => {
    const io = memIo();
    expect(await run(['predict', 'set/PNEUMONIA'], io)).toBe(1);
    const lines = io.out().trimEnd().split('\n');
    expect(lines.find((l) => l.includes('photo.png'))).toMatch(/photo\.png\s+REJECTED: not a chest X-ray$/);
    expect(lines.find((l) => l.includes('p0.png'))).toMatch(/p0\.png\s+(NORMAL|PNEUMONIA)\b.*\d\.\d{4}/);

    const forced = memIo();
    expect(await run(['predict', '--force', '--csv', 'set/PNEUMONIA/photo.png'], forced)).toBe(0);
    const [header, row] = forced.out().trimEnd().split('\n');
    const cells = Object.fromEntries(header.split(',').map((h, i) => [h, row.split(',')[i]]));
    expect(cells).toMatchObject({ rejected: 'true', reason: 'not_a_chest_xray' });
    expect(cells.label).toMatch(/^(NORMAL|PNEUMONIA)$/);
    const table = memIo();
    await run(['predict', '--force', 'set/PNEUMONIA/photo.png'], table);
    expect(table.out()).toMatch(/(NORMAL|PNEUMONIA) \(forced: not a chest X-ray\?/);
  });

  it('evaluate counts rejected images and computes the metrics on the accepted ones', async () => {
    const io = memIo();
    expect(await run(['evaluate', '--json', '-', '--bootstrap', '10', 'set'], io)).toBe(0);
    const e = JSON.parse(io.out());
    expect(e.n).toBe(4);
    expect(e.rejected.map((r: { file: string }) => r.file).sort()).toEqual(['NORMAL/letter.png', 'PNEUMONIA/photo.png']);
    expect(e.rejected[0].code).toBe('not_a_chest_xray');
    expect(e.forced_rejected).toBe(0);
    const text = memIo();
    expect(await run(['evaluate', '--bootstrap', '10', '--report', 'r.html', 'set'], text)).toBe(0);
    expect(text.out()).toMatch(
      /Rejected\s+2 image\(s\) judged not chest X-rays by the input gate \(not_a_chest_xray\)\n\s+metrics on the 4 accepted/,
    );
    const html = await import('node:fs/promises').then((fs) => fs.readFile(join(dir, 'r.html'), 'utf8'));
    expect(html).toMatch(
      /<b>2<\/b> image\(s\) judged not chest X-rays by the input gate \(<code>not_a_chest_xray<\/code>\): not counted in the metrics, which are computed on the 4 accepted images/,
    );
    const forced = memIo();
    expect(await run(['evaluate', '--force', '--json', '-', '--bootstrap', '10', 'set'], forced)).toBe(0);
    const f = JSON.parse(forced.out());
    expect([f.n, f.rejected.length, f.forced_rejected]).toEqual([6, 0, 2]);
  });
});
