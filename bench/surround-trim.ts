/**
 * Probe for issue 17 (not a product step yet): would trimming a film's flat surround before the
 * model recover the films that the surround shifts of the cross-source harness break (a chest inside
 * an unexposed 25% frame: 80% declined, AUC 0.832 on Kermany validation), without changing what the
 * model reads on films that have no such surround? A row (column) is "flat" when the standard
 * deviation of its gray levels is below --flat (0..255 scale); flat rows are trimmed from the top and
 * the bottom, then flat columns (over the kept rows) from the left and the right, each side at most
 * --max-share of the side. The trimmed film goes through the full engine path as a lossless PNG.
 *
 *   npx tsx bench/surround-trim.ts [--flat 4] [--max-share 0.4] [--split models/dev_split.json] [--data ../shared/data]
 *
 * Prints, per set (Kermany and NIH validation patients, the 9 NIH children) and per shift (none,
 * black and near-white frames of 25%), the AUC and the share declined, without and with the trim,
 * and how many films the trim changed at all.
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { decodeImage } from '../src/image/decode.ts';
import { grayOf } from '../src/image/raw.ts';
import { REPO_ROOT } from '../src/model/card.ts';
import { rocAuc } from '../src/eval/metrics.ts';
import { collect, Engine } from '../src/pipeline.ts';
import { parseCsv } from '../src/site/groups.ts';
import { frame, encodeGrayPng, type Gray } from './xsource/shifts.ts';

const { values } = parseArgs({
  options: {
    flat: { type: 'string', default: '4' },
    'max-share': { type: 'string', default: '0.4' },
    split: { type: 'string', default: resolve(REPO_ROOT, 'models', 'dev_split.json') },
    data: { type: 'string', default: resolve(REPO_ROOT, '..', 'shared', 'data') },
  },
});
const FLAT = Number(values.flat);
const MAX_SHARE = Number(values['max-share']);

function std(get: (i: number) => number, n: number): number {
  let s = 0;
  let s2 = 0;
  for (let i = 0; i < n; i++) {
    const v = get(i);
    s += v;
    s2 += v * v;
  }
  const m = s / n;
  return Math.sqrt(Math.max(0, s2 / n - m * m));
}

/** The film without its flat surround (see the header), and whether anything was cut. */
function trimFlat(g: Gray, flat = FLAT, maxShare = MAX_SHARE): { gray: Gray; trimmed: boolean } {
  const { data, width: w, height: h } = g;
  const rowFlat = (y: number) => std((x) => data[y * w + x], w) < flat;
  const maxY = Math.floor(h * maxShare);
  let top = 0;
  while (top < maxY && rowFlat(top)) top++;
  let bottom = h;
  while (h - bottom < maxY && rowFlat(bottom - 1)) bottom--;
  const rows = bottom - top;
  const colFlat = (x: number) => std((i) => data[(top + i) * w + x], rows) < flat;
  const maxX = Math.floor(w * maxShare);
  let left = 0;
  while (left < maxX && colFlat(left)) left++;
  let right = w;
  while (w - right < maxX && colFlat(right - 1)) right--;
  if (top === 0 && bottom === h && left === 0 && right === w) return { gray: g, trimmed: false };
  const width = right - left;
  const out = new Float32Array(width * rows);
  for (let y = 0; y < rows; y++) out.set(data.subarray((top + y) * w + left, (top + y) * w + right), y * width);
  return { gray: { data: out, width, height: rows }, trimmed: true };
}

interface Item {
  file: string;
  truth: number;
}

const split = JSON.parse(await readFile(resolve(values.split!), 'utf8')) as { sources: Record<string, { files: string[] }> };
const truthOf = (f: string) => (f.startsWith('PNEUMONIA/') ? 1 : 0);
const fromSplit = (dir: string): Item[] => split.sources[dir].files.map((f) => ({ file: join(values.data!, dir, f), truth: truthOf(f) }));
const [head, ...rows] = parseCsv(await readFile(join(values.data!, 'nih_extra', 'labels.csv'), 'utf8'));
const children: Item[] = rows
  .filter((r) => r[head.indexOf('age_group')] === 'pediatric')
  .map((r) => ({ file: join(values.data!, 'nih_extra', r[head.indexOf('file')]), truth: truthOf(r[head.indexOf('file')]) }));
const sets: Array<[string, Item[]]> = [
  ['Kermany val', fromSplit('chest_xray_train')],
  ['NIH val', fromSplit('nih_dev')],
  ['NIH children', children],
];
const shifts: Array<[string, (g: Gray) => Gray]> = [
  ['none', (g) => g],
  ['black frame 25%', (g) => frame(g, 0.25)],
  ['white frame 25%', (g) => frame(g, 0.25, 240)],
];

const engine = await Engine.load({});
const f3 = (v: number | null) => (v === null ? 'n/a' : v.toFixed(3));
const pct = (v: number) => `${(v * 100).toFixed(1)}%`;
process.stdout.write(
  `surround trim probe: flat < ${FLAT} (std of a row or column, 0..255), at most ${MAX_SHARE} of a side; model ${engine.card.name} ${engine.card.version}\n\n`,
);
process.stdout.write('| set | shift | n | AUC, declined (no trim) | AUC, declined (trim) | films trimmed |\n|---|---|---|---|---|---|\n');
for (const [name, items] of sets) {
  const grays: Gray[] = [];
  for (const it of items) {
    const d = await decodeImage(await readFile(it.file));
    grays.push({ data: grayOf(d.image), width: d.image.width, height: d.image.height });
  }
  for (const [shiftName, shift] of shifts) {
    const cells: string[] = [];
    let trimmedCount = 0;
    for (const trim of [false, true]) {
      const bytes: Buffer[] = [];
      for (const g of grays) {
        const s = shift(g);
        const t = trim ? trimFlat(s) : { gray: s, trimmed: false };
        if (t.trimmed) trimmedCount++;
        bytes.push(await encodeGrayPng(t.gray));
      }
      const outcomes = await collect(engine.analyseStream(bytes, {}));
      const probs: number[] = [];
      const truths: number[] = [];
      let declined = 0;
      outcomes.forEach((o, i) => {
        if (o.status !== 'analysed') declined++;
        if (o.status !== 'failed') {
          probs.push(o.result.probability);
          truths.push(items[i].truth);
        }
      });
      cells.push(`${f3(rocAuc(truths, probs))}, ${pct(declined / items.length)}`);
    }
    process.stdout.write(`| ${name} | ${shiftName} | ${items.length} | ${cells[0]} | ${cells[1]} | ${trimmedCount} |\n`);
  }
}
await engine.dispose();
