/**
 * The input gate and the uncertainty flag, measured (issue 5). Prints numbers; not a test.
 *
 *   npm run bench:ood -- [--data DIR] [--val-files FILE] [--per-category 30] [--val-limit N] [--threads T] [--skip-stats] [--json FILE]
 *
 * (0) Image statistics of the gate's image checks over every training image (DIR/{NORMAL,PNEUMONIA}):
 *     min / max / 0.1% / 99.9% of each, and how many real X-rays fail a check (target: none).
 * (a) False rejections on the validation split: the files named in models/val_files.json
 *     ({"files": [...]}, names under DIR/NORMAL or DIR/PNEUMONIA), or --val-files FILE (the same, or
 *     a training run's split.json with "val_files"); without either, all training images (said so
 *     in the output). Target <= 1%.
 * (b) Rejections on generated images that are not chest X-rays (test/fixtures/non-cxr.ts), per
 *     category and overall. Target >= 95%.
 * (c) Uncertainty on the validation split: fraction flagged, error rate flagged vs not flagged.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Progress } from '../src/cli/progress.ts';
import { PneumoError } from '../src/errors.ts';
import { checkImage, imageStats, type ImageStats } from '../src/gate/image-checks.ts';
import { decodeImage } from '../src/image/decode.ts';
import { REPO_ROOT } from '../src/model/card.ts';
import { collect, Engine, resultOrError } from '../src/pipeline.ts';
import type { AnalysisResult } from '../src/types.ts';
import {
  colourPhotoPng,
  constantPng,
  ctSlicePng,
  cxrVariant,
  handPng,
  noisePng,
  patternPng,
  rng,
  screenshotPng,
  textPng,
  texturedGrayPng,
} from '../test/fixtures/non-cxr.ts';

const { values } = parseArgs({
  options: {
    data: { type: 'string' },
    'val-files': { type: 'string' },
    'per-category': { type: 'string', default: '30' },
    'val-limit': { type: 'string' },
    threads: { type: 'string' },
    'skip-stats': { type: 'boolean', default: false },
    json: { type: 'string' },
    batch: { type: 'string', default: '16' },
  },
});
const DATA = resolve(values.data ?? resolve(REPO_ROOT, '..', 'shared', 'data', 'chest_xray_train'));
const PER = Number(values['per-category']);
const VAL_LIMIT = values['val-limit'] === undefined ? Infinity : Number(values['val-limit']);
const BATCH = Number(values.batch);
if (!(Number.isInteger(PER) && PER >= 1 && PER <= 500)) throw new Error('--per-category must be an integer in 1..500');
if (!(VAL_LIMIT >= 1)) throw new Error('--val-limit must be a positive integer');
const CLASSES = ['NORMAL', 'PNEUMONIA'] as const;

const log = (s = ''): void => void process.stdout.write(s + '\n');
const pct = (v: number, d = 1) => `${(100 * v).toFixed(d)}%`;
const isTty = process.stderr.isTTY === true;

interface Labelled {
  path: string;
  truth: 0 | 1;
}

function listClassFiles(): Labelled[] {
  const out: Labelled[] = [];
  for (const [truth, c] of CLASSES.entries()) {
    const dir = join(DATA, c);
    if (!existsSync(dir)) throw new Error(`${dir} does not exist (--data DIR must hold NORMAL/ and PNEUMONIA/)`);
    for (const f of readdirSorted(dir)) out.push({ path: join(dir, f), truth: truth as 0 | 1 });
  }
  return out;
}

function readdirSorted(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => /\.(jpe?g|png)$/i.test(f))
    .sort();
}

/** The validation files (models/val_files.json), or every training image when it is missing. */
function validationSet(all: Labelled[]): { files: Labelled[]; source: string } {
  const listPath = values['val-files'] ? resolve(values['val-files']) : resolve(REPO_ROOT, 'models', 'val_files.json');
  if (!existsSync(listPath)) {
    if (values['val-files']) throw new Error(`--val-files ${listPath} does not exist`);
    return {
      files: all,
      source: `models/val_files.json is MISSING: using all ${all.length} training images instead (the gate was fitted on most of them, so this understates false rejections)`,
    };
  }
  const json = JSON.parse(readFileSync(listPath, 'utf8')) as { files?: string[]; val_files?: string[] };
  const names = json.files ?? json.val_files;
  if (!Array.isArray(names)) throw new Error(`${listPath} has neither "files" nor "val_files"`);
  const byName = new Map(all.map((l) => [basename(l.path), l]));
  const byRel = new Map(all.map((l) => [l.path.slice(DATA.length + 1), l]));
  const files: Labelled[] = [];
  const missing: string[] = [];
  for (const n of names) {
    const hit = byRel.get(n) ?? byName.get(basename(n));
    if (hit) files.push(hit);
    else missing.push(n);
  }
  if (missing.length) log(`  warning: ${missing.length} validation file(s) not found under ${DATA}, e.g. ${missing[0]}`);
  const shown = listPath.startsWith(REPO_ROOT) ? listPath.slice(REPO_ROOT.length + 1) : listPath;
  return { files, source: `${shown} (${names.length} files)` };
}

/** Runs the engine in batches (rejected images are results with rejected: true). */
async function scoreBatches(
  engine: Engine,
  inputs: Array<() => Promise<Uint8Array>>,
  label: string,
): Promise<Array<AnalysisResult | PneumoError>> {
  const out: Array<AnalysisResult | PneumoError> = [];
  const progress = new Progress(inputs.length, process.stderr, label, isTty ? undefined : false);
  for (let i = 0; i < inputs.length; i += BATCH) {
    const bytes = await Promise.all(inputs.slice(i, i + BATCH).map((f) => f()));
    const res = (await collect(engine.analyseStream(bytes, { cam: false }))).map(resultOrError);
    out.push(...res);
    progress.tick(bytes.length, res.filter((r) => r instanceof PneumoError).length);
  }
  progress.finish();
  return out;
}

// ---------------------------------------------------------------- (0) image statistics
async function imageStatistics(all: Labelled[]): Promise<Record<string, unknown>> {
  log(`(0) Image-check statistics over all ${all.length} training images (${DATA})`);
  const keys = ['saturation', 'grayStd', 'grayRange', 'aspect', 'nearWhite', 'modeFraction', 'neighbourCorrelation'] as const;
  const vals = Object.fromEntries(keys.map((k) => [k, [] as number[]])) as Record<(typeof keys)[number], number[]>;
  const failing: Array<{ file: string; reasons: string[] }> = [];
  const progress = new Progress(all.length, process.stderr, 'stats ', isTty ? undefined : false);
  for (const l of all) {
    const image = (await decodeImage(await readFile(l.path))).image;
    const s: ImageStats = imageStats(image);
    for (const k of keys) vals[k].push(s[k]);
    const c = checkImage(image);
    if (!c.passed) failing.push({ file: l.path.slice(DATA.length + 1), reasons: c.failures.map((f) => f.reason) });
    progress.tick();
  }
  progress.finish();
  const summary: Record<string, Record<string, number>> = {};
  log(`    ${'statistic'.padEnd(20)} ${'min'.padStart(8)} ${'p0.1'.padStart(8)} ${'p99.9'.padStart(8)} ${'max'.padStart(8)}`);
  for (const k of keys) {
    const v = vals[k].sort((a, b) => a - b);
    const q = (p: number) => v[Math.min(v.length - 1, Math.max(0, Math.round(p * (v.length - 1))))];
    summary[k] = { min: v[0], p0_1: q(0.001), p99_9: q(0.999), max: v[v.length - 1] };
    const f = (x: number) => (Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(4)).padStart(8);
    log(`    ${k.padEnd(20)} ${f(v[0])} ${f(q(0.001))} ${f(q(0.999))} ${f(v[v.length - 1])}`);
  }
  log(
    `    real X-rays failing an image check: ${failing.length} of ${all.length}${failing.length ? `, e.g. ${failing[0].file}: ${failing[0].reasons.join('; ')}` : ''}`,
  );
  log();
  return { n: all.length, statistics: summary, failing };
}

// ---------------------------------------------------------------- (b) the non-X-ray set
type Maker = (i: number) => Promise<Uint8Array>;

function categories(cxrs: Labelled[]): Array<{ name: string; make: Maker }> {
  const sizes = (i: number): [number, number] => {
    const r = rng(1000 + i);
    return [160 + Math.floor(r() * 320), 160 + Math.floor(r() * 320)];
  };
  const cxr = (i: number) => readFile(cxrs[(i * 7919) % cxrs.length].path);
  return [
    { name: 'noise (gray and colour)', make: (i) => noisePng(...sizes(i), i, i % 2 === 1) },
    {
      name: 'patterns (gradient, checker, stripes, rings)',
      make: (i) => patternPng(...sizes(i), (['gradient', 'checker', 'stripes', 'rings'] as const)[i % 4], i),
    },
    { name: 'colour photo-like fields', make: (i) => colourPhotoPng(...sizes(i), i) },
    { name: 'gray smooth textures', make: async (i) => texturedGrayPng(...sizes(i), i) },
    { name: 'documents (rendered text)', make: (i) => textPng(...sizes(i), i) },
    { name: 'screenshots (light and dark UI)', make: (i) => screenshotPng(...sizes(i), i, i % 2 === 1) },
    { name: 'blank / constant', make: async (i) => constantPng(...sizes(i), [0, 255, 128, 30, 220][i % 5]) },
    { name: 'CT-like slices', make: (i) => ctSlicePng(200 + (i % 5) * 60, i) },
    { name: 'hand / bone-like', make: (i) => handPng(...sizes(i), i) },
    { name: 'cropped CXR fragments', make: async (i) => cxrVariant(await cxr(i), 'crop', i) },
    { name: 'CXR rotated 90 degrees', make: async (i) => cxrVariant(await cxr(i), 'rot90', i) },
    { name: 'CXR upside down', make: async (i) => cxrVariant(await cxr(i), 'rot180', i) },
    { name: 'CXR inverted (negative)', make: async (i) => cxrVariant(await cxr(i), 'invert', i) },
  ];
}

async function main(): Promise<void> {
  const t0 = Date.now();
  const all = listClassFiles();
  const report: Record<string, unknown> = { data: DATA };
  if (!values['skip-stats']) report.image_statistics = await imageStatistics(all);

  const engine = await Engine.load(values.threads ? { threads: Number(values.threads) } : {});
  const card = engine.card;
  log(
    `Model ${card.name} ${card.version}: gate ${card.gate ? `output "${card.gate.output}", threshold ${card.gate.threshold}` : 'NONE in the card (image checks only)'}; uncertainty ${card.uncertainty ? `output "${card.uncertainty.output}", cutoff ${card.uncertainty.cutoff}` : 'NONE in the card'}`,
  );
  report.model = { name: card.name, version: card.version, gate: card.gate ?? null, uncertainty: card.uncertainty ?? null };
  log();

  // (a) + (c) validation
  const val = validationSet(all);
  const valFiles = val.files.slice(0, VAL_LIMIT);
  log(
    `(a) False rejections on the validation split: ${val.source}${valFiles.length < val.files.length ? `, first ${valFiles.length}` : ''}`,
  );
  const vres = await scoreBatches(
    engine,
    valFiles.map((l) => () => readFile(l.path)),
    'validation ',
  );
  const ok = vres
    .map((r, i) => ({ r, l: valFiles[i] }))
    .filter((x): x is { r: AnalysisResult; l: Labelled } => !(x.r instanceof PneumoError));
  const failed = vres.length - ok.length;
  const rejected = ok.filter((x) => x.r.rejected);
  const byChecks = rejected.filter((x) => !x.r.gate.checks.passed).length;
  const byScore = rejected.filter(
    (x) => x.r.gate.threshold !== null && x.r.gate.score !== null && !(x.r.gate.score <= x.r.gate.threshold),
  ).length;
  const frr = rejected.length / Math.max(1, ok.length);
  log(
    `    ${rejected.length} of ${ok.length} rejected = ${pct(frr, 2)} (target <= 1%: ${frr <= 0.01 ? 'met' : 'NOT met'}); by image checks ${byChecks}, by the model gate score ${byScore}${failed ? `; ${failed} failed to decode` : ''}`,
  );
  for (const x of rejected.slice(0, 8)) log(`      ${x.l.path.slice(DATA.length + 1)}: ${x.r.gate.reasons.join('; ')}`);
  const scores = ok
    .map((x) => x.r.gate.score)
    .filter((s): s is number => s !== null)
    .sort((a, b) => a - b);
  if (scores.length) {
    const q = (p: number) => scores[Math.min(scores.length - 1, Math.round(p * (scores.length - 1)))];
    log(`    gate score on validation: median ${q(0.5).toFixed(3)}, p99 ${q(0.99).toFixed(3)}, max ${q(1).toFixed(3)}`);
  }
  report.validation = {
    source: val.source,
    n: ok.length,
    failed,
    rejected: rejected.length,
    false_rejection_rate: frr,
    by_image_checks: byChecks,
    by_model_score: byScore,
    rejected_files: rejected.map((x) => ({ file: x.l.path.slice(DATA.length + 1), reasons: x.r.gate.reasons })),
  };
  log();

  log('(c) Uncertainty on the validation split (accepted images)');
  const acc = ok.filter((x) => !x.r.rejected);
  if (!card.uncertainty || acc.length === 0 || acc[0].r.uncertainty === null) {
    log('    the model provides no uncertainty estimate (no "uncertainty" block / "members" output)');
    report.uncertainty = null;
  } else {
    const wrong = (x: { r: AnalysisResult; l: Labelled }) => (x.r.label === card.labels[1] ? 1 : 0) !== x.l.truth;
    const flagged = acc.filter((x) => x.r.uncertain);
    const unflagged = acc.filter((x) => !x.r.uncertain);
    const err = (xs: typeof acc) => (xs.length ? xs.filter(wrong).length / xs.length : NaN);
    const u = acc.map((x) => x.r.uncertainty as number).sort((a, b) => a - b);
    const errors = acc.filter(wrong);
    const caught = errors.filter((x) => x.r.uncertain).length;
    log(
      `    flagged ${flagged.length} of ${acc.length} = ${pct(flagged.length / acc.length)} (cutoff ${card.uncertainty.cutoff}); uncertainty median ${u[Math.floor(u.length / 2)].toFixed(4)}, max ${u[u.length - 1].toFixed(4)}, all in [0, 0.5]: ${u[0] >= 0 && u[u.length - 1] <= 0.5}`,
    );
    log(
      `    error rate: flagged ${pct(err(flagged))} (${flagged.filter(wrong).length}/${flagged.length}), not flagged ${pct(err(unflagged))} (${unflagged.filter(wrong).length}/${unflagged.length}); ${caught} of ${errors.length} errors flagged`,
    );
    report.uncertainty = {
      n: acc.length,
      cutoff: card.uncertainty.cutoff,
      flagged: flagged.length,
      flagged_fraction: flagged.length / acc.length,
      error_rate_flagged: err(flagged),
      error_rate_unflagged: err(unflagged),
      errors: errors.length,
      errors_flagged: caught,
    };
  }
  log();

  // (b) non-X-rays
  const cats = categories(val.files.length ? val.files : all);
  log(`(b) Rejections on ${cats.length} categories x ${PER} generated images that are not chest X-rays`);
  const rows: Array<{ category: string; n: number; rejected: number; by_image_checks: number; by_model_score: number }> = [];
  const progress = new Progress(cats.length * PER, process.stderr, 'non-CXR ', isTty ? undefined : false);
  for (const c of cats) {
    const res: Array<AnalysisResult | PneumoError> = [];
    for (let i = 0; i < PER; i += BATCH) {
      const bytes = await Promise.all(Array.from({ length: Math.min(BATCH, PER - i) }, (_, k) => c.make(i + k)));
      res.push(...(await collect(engine.analyseStream(bytes, { cam: false }))).map(resultOrError));
      progress.tick(bytes.length);
    }
    // A generated image the decoder refuses (e.g. unusable) counts as rejected too: it is not analysed.
    const results = res.filter((r): r is AnalysisResult => !(r instanceof PneumoError));
    const refusedByDecoder = res.length - results.length;
    const rej = results.filter((r) => r.rejected);
    rows.push({
      category: c.name,
      n: res.length,
      rejected: rej.length + refusedByDecoder,
      by_image_checks: rej.filter((r) => !r.gate.checks.passed).length,
      by_model_score: rej.filter((r) => r.gate.threshold !== null && r.gate.score !== null && !(r.gate.score <= r.gate.threshold)).length,
    });
  }
  progress.finish();
  const w = Math.max(...rows.map((r) => r.category.length));
  log(`    ${'category'.padEnd(w)}  ${'rejected'.padStart(9)}  ${'rate'.padStart(7)}  ${'checks'.padStart(6)}  ${'score'.padStart(6)}`);
  for (const r of rows) {
    log(
      `    ${r.category.padEnd(w)}  ${`${r.rejected}/${r.n}`.padStart(9)}  ${pct(r.rejected / r.n).padStart(7)}  ${String(r.by_image_checks).padStart(6)}  ${String(r.by_model_score).padStart(6)}`,
    );
  }
  const tot = rows.reduce((a, r) => a + r.n, 0);
  const totRej = rows.reduce((a, r) => a + r.rejected, 0);
  const overall = totRej / tot;
  const macro = rows.reduce((a, r) => a + r.rejected / r.n, 0) / rows.length;
  log(
    `    overall ${totRej}/${tot} = ${pct(overall)} (target >= 95%: ${overall >= 0.95 ? 'met' : 'NOT met'}); mean over categories ${pct(macro)}`,
  );
  log('    (checks = rejected by the image checks, score = by the model gate score; an image can count in both)');
  report.non_cxr = { per_category: PER, categories: rows, n: tot, rejected: totRej, rejection_rate: overall, mean_category_rate: macro };
  log();
  log(
    `Summary: false rejections ${pct(frr, 2)} on ${ok.length} validation images; non-chest-X-ray rejection ${pct(overall)} on ${tot}; ${((Date.now() - t0) / 1000).toFixed(0)} s.`,
  );
  if (values.json) writeFileSync(values.json, JSON.stringify(report, null, 2) + '\n');
  await engine.dispose();
}

await main();
