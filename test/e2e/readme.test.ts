/**
 * The README tells the truth (issue 19 items 8, 10 and the CI item): its first line says who the
 * shipped model is for, in the card's words; its commands work from the checkout; the shipped
 * model's rows of its results table are the model card's numbers (one source of truth with the
 * page and `pneumolens info`). Reads models/ at test time: no number of the shipped model is
 * written here.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { intendedPopulation, type CardInfo } from '../../src/eval/card.ts';
import { defaultCardPath } from '../../src/model/card.ts';
import { REPO as ROOT } from '../fixtures/paths.ts';

const README = readFileSync(resolve(ROOT, 'README.md'), 'utf8');
const CARD = JSON.parse(readFileSync(defaultCardPath({}), 'utf8')) as CardInfo;
interface SourceRow {
  source: string;
  n: number;
  auc: number;
  auc_ci?: [number, number];
  sensitivity?: number;
  specificity?: number;
  ece?: number;
}

/** The lines inside ```bash blocks. */
const commandLines = (): string[] =>
  [...README.matchAll(/```bash\n([\s\S]*?)```/g)].flatMap((m) => m[1].split('\n')).filter((l) => l.trim() !== '');

describe('README', () => {
  it("its first line says who the shipped model is for, in the model card's words", () => {
    const first = README.split(/\n\n/)[1]; // the paragraph after the title
    const population = intendedPopulation(CARD);
    expect(population, 'the shipped card states its population').not.toBeNull();
    expect(first.replace(/\s+/g, ' ')).toContain(`For ${population} only`);
  });

  it('shows commands that work from the checkout: node bin/pneumolens.js, never npx pneumolens', () => {
    const lines = commandLines();
    expect(lines.filter((l) => /\bnpx\s+pneumolens\b/.test(l))).toEqual([]);
    const pkg = JSON.parse(readFileSync(resolve(ROOT, 'package.json'), 'utf8'));
    expect(pkg.bin).toEqual({ pneumolens: 'bin/pneumolens.js' }); // what `npm link` installs, as the README says
    const commands = new Set(lines.flatMap((l) => [...l.matchAll(/node bin\/pneumolens\.js (\w+)/g)].map((m) => m[1])));
    expect([...commands].sort()).toEqual(expect.arrayContaining(['evaluate', 'info', 'pacs', 'predict', 'serve']));
    for (const c of commands) {
      const r = spawnSync(process.execPath, [resolve(ROOT, 'bin/pneumolens.js'), c, '--help'], {
        cwd: ROOT,
        encoding: 'utf8',
        timeout: 60_000,
      });
      expect(r.status, `${c} --help: ${r.stderr}`).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^Usage: pneumolens ${c}\\b`));
    }
  }, 120_000);

  it("the shipped model's rows of the results table are the card's metrics.by_source numbers", () => {
    const bySource = (CARD.metrics?.by_source ?? []) as SourceRow[];
    const f3 = (x: number) => x.toFixed(3);
    const rows = README.split('\n').filter((l) => l.startsWith('|') && l.includes(`**${CARD.version}**`));
    expect(
      rows.length,
      `README's "The shipped model" table has no rows for the shipped model ${CARD.version}: copy them from its card`,
    ).toBeGreaterThan(0);
    let checked = 0;
    for (const row of rows) {
      const cells = row.split('|').map((c) => c.trim());
      const ci = /\*\*(\d\.\d{3})\*\* \[(\d\.\d{3}), (\d\.\d{3})\]/.exec(cells[4] ?? '');
      if (!ci) continue; // rows without an interval (views side by side) are checked by hand
      const n = Number(cells[3]);
      const match = bySource.find((s) => s.n === n && f3(s.auc) === ci[1]);
      expect(match, `README row "${row}" matches no metrics.by_source row of the card (n ${n}, AUC ${ci[1]})`).toBeDefined();
      expect([ci[2], ci[3]], `README row "${row}": the card's interval`).toEqual(match!.auc_ci!.map(f3));
      const [sens, spec, ece] = [cells[5], cells[6], cells[7]];
      if (sens) expect(sens).toBe(f3(match!.sensitivity!));
      if (spec) expect(spec).toBe(f3(match!.specificity!));
      if (ece) expect(ece).toBe(f3(match!.ece!));
      checked++;
    }
    expect(checked).toBeGreaterThan(0);
  });
});
