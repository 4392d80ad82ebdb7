/**
 * Cross-source evaluation harness (issue 8, item 1): the numbers every model decision is made on.
 *
 *   npm run eval:xsource -- --model models/pneumolens.json [--model out/models-1.0.0/pneumolens.json]
 *     [--split models/dev_split.json] [--data ../shared/data] [--out out/xsource] [--limit N]
 *     [--threads 1] [--no-shift] [--no-montage] [--resamples 1000]
 *
 * For each model card, on the validation patients of each source in the development split
 * (Kermany pediatric; NIH adults, also per view AP/PA):
 *  1. n, ROC-AUC with a 95% stratified bootstrap CI, sensitivity and specificity at the card's
 *     threshold, ECE, the NORMAL-AP false-positive rate, the gate's declines (by reason) and the AUC
 *     on accepted images only. Engine.analyseStream without force: rejected results still carry a
 *     probability, so every image counts in the AUC and "accepted" is a separate column.
 *  2. Shortcut audit: cross-validated linear probes (grouped by patient) on the pooled features
 *     predicting source and view; the share of Grad-CAM mass on the border band, burned-in
 *     markers and below the lung fields; montages of overlays per source.
 *  3. Acquisition-shift suite (bench/xsource/shifts.ts): per-source AUC under each shift.
 * Prints markdown and writes results.json, results.md and montage PNGs to --out.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { expectedCalibrationError } from '../src/eval/calibration.ts';
import { bootstrapAucCi, ratesAt, rocAuc } from '../src/eval/metrics.ts';
import { areaShare, borderMask, bottomMask, crossValidatedProbe, markerMask, massShare, type ProbeResult } from '../src/eval/shortcut.ts';
import { gradCam } from '../src/explain/gradcam.ts';
import { blendOverlay, overlayBase } from '../src/explain/overlay.ts';
import { decodeImage } from '../src/image/decode.ts';
import { upsampleBilinear } from '../src/image/resample.ts';
import { REPO_ROOT } from '../src/model/card.ts';
import { toGray } from '../src/image/raw.ts';
import { preprocess } from '../src/model/preprocess.ts';
import { ModelSession } from '../src/model/session.ts';
import { collect, Engine, resultOrError } from '../src/pipeline.ts';
import type { AnalysisResult, RawImage } from '../src/types.ts';
import { kermanyPatient, parseCsv, takeBalanced } from './xsource/items.ts';
import { montage, SHIFTS, type Gray, type Tile } from './xsource/shifts.ts';

// ---------------------------------------------------------------------------------------------
// Options and data

const { values: args } = parseArgs({
  options: {
    model: { type: 'string', multiple: true },
    split: { type: 'string', default: join(REPO_ROOT, 'models', 'dev_split.json') },
    data: { type: 'string', default: resolve(REPO_ROOT, '..', 'shared', 'data') },
    out: { type: 'string', default: join(REPO_ROOT, 'out', 'xsource') },
    limit: { type: 'string' },
    threads: { type: 'string', default: '1' },
    'no-shift': { type: 'boolean', default: false },
    'no-montage': { type: 'boolean', default: false },
    resamples: { type: 'string', default: '1000' },
    batch: { type: 'string', default: '32' },
  },
});

const cards = (args.model ?? [join(REPO_ROOT, 'models', 'pneumolens.json')]).map((p) => resolve(p));
const threads = Number(args.threads);
const limit = args.limit === undefined ? Infinity : Number(args.limit);
const resamples = Number(args.resamples);
const BATCH = Number(args.batch);
for (const [name, v] of Object.entries({ threads, resamples, batch: BATCH })) {
  if (!(Number.isInteger(v) && v >= 1)) throw new Error(`--${name} must be a positive integer`);
}
if (!(limit === Infinity || (Number.isInteger(limit) && limit >= 2))) throw new Error('--limit must be an integer >= 2');

type Source = 'kermany' | 'nih';
const SOURCE_DIRS: Record<Source, string> = { kermany: 'chest_xray_train', nih: 'nih_dev' };
const SOURCE_NAMES: Record<Source, string> = { kermany: 'Kermany val (pediatric)', nih: 'NIH val (adults)' };

interface Item {
  source: Source;
  file: string;
  label: 0 | 1;
  view: 'AP' | 'PA' | null;
  patient: string;
}

function loadItems(): Item[] {
  const split = JSON.parse(readFileSync(resolve(args.split!), 'utf8')) as { sources: Record<string, { files: string[] }> };
  const nihRows = new Map(parseCsv(readFileSync(join(args.data!, SOURCE_DIRS.nih, 'labels.csv'), 'utf8')).map((r) => [r.file, r]));
  const items: Item[] = [];
  for (const source of ['kermany', 'nih'] as Source[]) {
    const files = split.sources[SOURCE_DIRS[source]]?.files;
    if (!files) throw new Error(`${args.split}: no sources.${SOURCE_DIRS[source]}.files`);
    const list: Item[] = [...files].sort().map((file) => {
      const label = file.startsWith('PNEUMONIA/') ? 1 : file.startsWith('NORMAL/') ? 0 : null;
      if (label === null) throw new Error(`${file}: expected NORMAL/ or PNEUMONIA/`);
      if (source === 'kermany') return { source, file, label, view: null, patient: `k:${kermanyPatient(file)}` };
      const row = nihRows.get(file);
      if (!row) throw new Error(`${file} is not in nih_dev/labels.csv`);
      const view = row.view === 'AP' || row.view === 'PA' ? row.view : null;
      return { source, file, label, view, patient: `n:${row.patient_id}` };
    });
    items.push(...takeBalanced(list, limit));
  }
  return items;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

function progress(label: string, total: number) {
  const t0 = Date.now();
  let last = 0;
  let done = 0;
  const tty = process.stderr.isTTY === true;
  const line = () => {
    const s = (Date.now() - t0) / 1000;
    return `${label} ${done}/${total} ${(done / Math.max(s, 1e-3)).toFixed(1)} img/s ${s.toFixed(0)}s`;
  };
  return {
    tick(n: number) {
      done += n;
      const now = Date.now();
      if (done >= total || now - last > (tty ? 200 : 15000)) {
        last = now;
        process.stderr.write(tty ? `\r${line()}   ` : `${line()}\n`);
      }
    },
    end() {
      if (tty) process.stderr.write('\n'); // the last tick drew the final count
    },
  };
}

const chunks = <T>(xs: T[], n: number): T[][] => Array.from({ length: Math.ceil(xs.length / n) }, (_, i) => xs.slice(i * n, (i + 1) * n));
const fmt = (v: number | null | undefined, d = 3) => (v === null || v === undefined || Number.isNaN(v) ? '–' : v.toFixed(d));
const pct = (v: number | null | undefined, d = 1) => (v === null || v === undefined ? '–' : `${(100 * v).toFixed(d)}%`);
const asRaw = (g: Gray): RawImage => ({ data: g.data, width: g.width, height: g.height, channels: 1 });

interface Scored {
  probability: number;
  rejected: boolean;
  reason: string | null;
  failed: string | null;
}

function scoreOf(r: AnalysisResult | Error): Scored {
  if (r instanceof Error) return { probability: NaN, rejected: false, reason: null, failed: r.message };
  return { probability: r.probability, rejected: r.rejected, reason: r.rejected ? (r.reason ?? 'rejected') : null, failed: null };
}

async function scoreAll(engine: Engine, inputs: Array<() => Promise<Uint8Array>>, label: string): Promise<Scored[]> {
  const out: Scored[] = [];
  const bar = progress(label, inputs.length);
  for (const c of chunks(inputs, BATCH)) {
    const bytes = await Promise.all(c.map((f) => f()));
    const res = (await collect(engine.analyseStream(bytes, { cam: false }))).map(resultOrError);
    out.push(...res.map(scoreOf));
    bar.tick(c.length);
  }
  bar.end();
  return out;
}

// ---------------------------------------------------------------------------------------------
// Metrics

interface SubsetMetrics {
  n: number;
  positives: number;
  negatives: number;
  failed: number;
  auc: number | null;
  auc_ci95: [number, number] | null;
  threshold: number;
  sensitivity: number | null;
  specificity: number | null;
  accuracy: number | null;
  ece: number | null;
  /** NIH normals with view AP called PNEUMONIA / NIH normals with view AP (null without any). */
  normal_ap_fpr: number | null;
  normal_ap_n: number;
  declined: number;
  declined_by_reason: Record<string, number>;
  accepted_n: number;
  auc_accepted: number | null;
}

function subsetMetrics(items: Item[], scored: Scored[], idx: number[], threshold: number): SubsetMetrics {
  const ok = idx.filter((i) => scored[i].failed === null);
  const y = ok.map((i) => items[i].label);
  const p = ok.map((i) => scored[i].probability);
  const rates = y.length > 0 ? ratesAt(y, p, threshold) : null;
  const ci = y.length > 0 ? bootstrapAucCi(y, p, { resamples }) : null;
  const nap = ok.filter((i) => items[i].label === 0 && items[i].view === 'AP');
  const byReason: Record<string, number> = {};
  for (const i of ok) if (scored[i].rejected) byReason[scored[i].reason!] = (byReason[scored[i].reason!] ?? 0) + 1;
  const acc = ok.filter((i) => !scored[i].rejected);
  return {
    n: ok.length,
    positives: y.filter((v) => v === 1).length,
    negatives: y.filter((v) => v === 0).length,
    failed: idx.length - ok.length,
    auc: y.length > 0 ? rocAuc(y, p) : null,
    auc_ci95: ci ? [ci.lower, ci.upper] : null,
    threshold,
    sensitivity: rates?.sensitivity ?? null,
    specificity: rates?.specificity ?? null,
    accuracy: rates?.accuracy ?? null,
    ece: y.length > 0 ? expectedCalibrationError(y, p) : null,
    normal_ap_fpr: nap.length > 0 ? nap.filter((i) => scored[i].probability >= threshold).length / nap.length : null,
    normal_ap_n: nap.length,
    declined: ok.length > 0 ? ok.filter((i) => scored[i].rejected).length / ok.length : 0,
    declined_by_reason: Object.fromEntries(Object.entries(byReason).map(([k, v]) => [k, v / ok.length])),
    accepted_n: acc.length,
    auc_accepted:
      acc.length > 0
        ? rocAuc(
            acc.map((i) => items[i].label),
            acc.map((i) => scored[i].probability),
          )
        : null,
  };
}

interface Subset {
  key: string;
  name: string;
  idx: number[];
}

function subsets(items: Item[]): Subset[] {
  const all = items.map((_, i) => i);
  return [
    { key: 'kermany', name: 'Kermany val', idx: all.filter((i) => items[i].source === 'kermany') },
    { key: 'nih', name: 'NIH val', idx: all.filter((i) => items[i].source === 'nih') },
    { key: 'nih_ap', name: 'NIH val, AP', idx: all.filter((i) => items[i].source === 'nih' && items[i].view === 'AP') },
    { key: 'nih_pa', name: 'NIH val, PA', idx: all.filter((i) => items[i].source === 'nih' && items[i].view === 'PA') },
  ];
}

// ---------------------------------------------------------------------------------------------
// Shortcut audit: features, CAM mass, montage tiles

const BORDER_FRAC = 0.1;
const BOTTOM_FRAC = 0.25;
const REGIONS = ['border_10', 'markers', 'bottom_25'] as const;
type Region = (typeof REGIONS)[number];

interface AuditOut {
  pooled: Float32Array[];
  mass: Array<Record<Region, number | null>>;
  area: Array<Record<Region, number>>;
  tiles: Map<number, Tile>;
  maxLogitDiff: number;
}

/** Items shown in the montages: per source 6 NORMAL + 6 PNEUMONIA (NIH: 3 AP + 3 PA of each), evenly spaced. */
function montageSelection(items: Item[]): Map<Source, number[]> {
  const pick = (idx: number[], k: number) =>
    Array.from({ length: Math.min(k, idx.length) }, (_, i) => idx[Math.floor((i * idx.length) / Math.min(k, idx.length))]);
  const all = items.map((_, i) => i);
  const sel = new Map<Source, number[]>();
  const k = all.filter((i) => items[i].source === 'kermany');
  sel.set('kermany', [
    ...pick(
      k.filter((i) => items[i].label === 0),
      6,
    ),
    ...pick(
      k.filter((i) => items[i].label === 1),
      6,
    ),
  ]);
  const n = all.filter((i) => items[i].source === 'nih');
  const nv = (label: number, view: string) => n.filter((i) => items[i].label === label && items[i].view === view);
  sel.set('nih', [...pick(nv(0, 'AP'), 3), ...pick(nv(0, 'PA'), 3), ...pick(nv(1, 'AP'), 3), ...pick(nv(1, 'PA'), 3)]);
  return sel;
}

async function audit(
  engine: Engine,
  session: ModelSession,
  items: Item[],
  grays: Gray[],
  baseline: Scored[],
  baselineLogits: Float64Array,
  showTiles: Set<number>,
): Promise<AuditOut> {
  const card = engine.card;
  const { height: H, width: W } = card.input;
  const out: AuditOut = { pooled: [], mass: [], area: [], tiles: new Map(), maxLogitDiff: 0 };
  const bar = progress('  features + Grad-CAM', items.length);
  const all = items.map((_, i) => i);
  for (const c of chunks(all, BATCH)) {
    const batch = new Float32Array(c.length * H * W);
    c.forEach((i, k) => batch.set(preprocess(asRaw(grays[i]), card), k * H * W));
    const inf = await session.run(batch, c.length);
    const [C, h, w] = inf.featureShape;
    for (let k = 0; k < c.length; k++) {
      const i = c[k];
      const f = inf.features.subarray(k * C * h * w, (k + 1) * C * h * w);
      const pooled = new Float32Array(C);
      for (let ch = 0; ch < C; ch++) {
        let s = 0;
        for (let q = ch * h * w; q < (ch + 1) * h * w; q++) s += f[q];
        pooled[ch] = s / (h * w);
      }
      out.pooled.push(pooled);
      if (Number.isFinite(baselineLogits[i])) out.maxLogitDiff = Math.max(out.maxLogitDiff, Math.abs(inf.logit[k] - baselineLogits[i]));
      // CAM upsampled onto the image (as the overlay does: the stretch resize maps image to input).
      const cam = gradCam(f, inf.featureShape, card.gradcam.weights);
      const g = grays[i];
      const heat = upsampleBilinear(cam.map, cam.width, cam.height, g.width, g.height);
      const masks: Record<Region, Uint8Array> = {
        border_10: borderMask(g.width, g.height, BORDER_FRAC),
        markers: markerMask(g.data, g.width, g.height),
        bottom_25: bottomMask(g.width, g.height, BOTTOM_FRAC),
      };
      out.mass.push(Object.fromEntries(REGIONS.map((r) => [r, massShare(heat, masks[r])])) as Record<Region, number | null>);
      out.area.push(Object.fromEntries(REGIONS.map((r) => [r, areaShare(masks[r])])) as Record<Region, number>);
      if (showTiles.has(i)) {
        const { rgb, width, height } = blendOverlay(await overlayBase(asRaw(g), 256), cam, { alpha: 0.45 });
        const it = items[i];
        const s = baseline[i];
        const called = s.probability >= card.postprocessing.threshold ? 1 : 0;
        const truth = it.label === 1 ? 'PNEU' : 'NORMAL';
        out.tiles.set(i, {
          rgb: new Uint8Array(rgb.buffer),
          width,
          height,
          caption: `${truth}${it.view ? ` ${it.view}` : ''} p=${s.probability.toFixed(2)}${s.rejected ? ' declined' : ''}\n${basename(it.file).slice(0, 30)}`,
          color: s.rejected ? '#f0a030' : called === it.label ? '#60e060' : '#ff5050',
        });
      }
    }
    bar.tick(c.length);
  }
  bar.end();
  return out;
}

function meanOf(xs: Array<number | null>): number | null {
  const v = xs.filter((x): x is number => x !== null);
  return v.length === 0 ? null : v.reduce((a, b) => a + b, 0) / v.length;
}

// ---------------------------------------------------------------------------------------------
// Main

interface ModelReport {
  tag: string;
  card: string;
  name: string;
  version: string;
  threshold: number;
  gate: { output: string | null; intended_use: unknown };
  metrics: Record<string, SubsetMetrics>;
  worst_source_auc: number | null;
  probes: Record<string, ProbeResult>;
  cam_mass: Record<Source, { n: number; area: Record<Region, number>; mass: Record<Region, number | null> }>;
  shifts: Record<string, Record<Source, { auc: number | null; declined: number; failed: number }>> | null;
  montages: string[];
  max_logit_diff_engine_vs_session: number;
  seconds: number;
}

async function main(): Promise<void> {
  const outDir = resolve(args.out!);
  mkdirSync(outDir, { recursive: true });
  const items = loadItems();
  const subs = subsets(items);
  console.error(
    `xsource: ${items.length} images (${subs.map((s) => `${s.name} ${s.idx.length}`).join(', ')}); ${cards.length} model(s); threads ${threads}`,
  );

  // Decode once; keep the original bytes (the baseline goes through the engine from them) and gray pixels.
  const files = items.map((it) => join(args.data!, SOURCE_DIRS[it.source], it.file));
  for (const f of files) if (!existsSync(f)) throw new Error(`missing image ${f}`);
  const bytes: Uint8Array[] = [];
  const grays: Gray[] = [];
  const bar = progress('decode', items.length);
  for (const c of chunks(files, BATCH)) {
    const bs = await Promise.all(c.map((f) => readFile(f)));
    const decoded = await Promise.all(bs.map((b) => decodeImage(b)));
    bytes.push(...bs);
    for (const d of decoded) {
      const im = d.image;
      grays.push({ data: im.channels === 1 ? im.data : toGray(im), width: im.width, height: im.height });
    }
    bar.tick(c.length);
  }
  bar.end();

  const selection = montageSelection(items);
  const showTiles = new Set([...selection.values()].flat());
  const reports: ModelReport[] = [];
  const tags = new Set<string>();
  for (const cardPath of cards) {
    const t0 = performance.now();
    const engine = await Engine.load({ card: cardPath, threads });
    const card = engine.card;
    let tag = `${card.name}-${card.version}`;
    if (tags.has(tag)) tag = `${tag}-${basename(dirname(cardPath))}`;
    tags.add(tag);
    console.error(`\n== ${tag} (${cardPath})`);
    const session = await ModelSession.create(card.modelPath, card, { threads });
    try {
      // 1. Baseline through the engine, from the original bytes.
      const raw: Array<AnalysisResult | Error> = [];
      const bbar = progress('  baseline (original bytes)', bytes.length);
      for (const c of chunks(bytes, BATCH)) {
        raw.push(...(await collect(engine.analyseStream(c, { cam: false }))).map(resultOrError));
        bbar.tick(c.length);
      }
      bbar.end();
      const baseline = raw.map(scoreOf);
      const baselineLogits = Float64Array.from(raw, (r) => (r instanceof Error ? NaN : r.logit));
      const threshold = card.postprocessing.threshold;
      const metrics = Object.fromEntries(subs.map((s) => [s.key, subsetMetrics(items, baseline, s.idx, threshold)]));
      const srcAucs = [metrics.kermany.auc, metrics.nih.auc];
      const worst = srcAucs.some((a) => a === null) ? null : Math.min(...(srcAucs as number[]));

      // 2. Shortcut audit.
      const au = await audit(engine, session, items, grays, baseline, baselineLogits, args['no-montage'] ? new Set() : showTiles);
      const all = items.map((_, i) => i);
      const nih = all.filter((i) => items[i].source === 'nih');
      const nihView = nih.filter((i) => items[i].view !== null);
      const kerm = all.filter((i) => items[i].source === 'kermany');
      const probe = (idx: number[], y: (i: number) => number) =>
        crossValidatedProbe(
          idx.map((i) => au.pooled[i]),
          idx.map(y),
          idx.map((i) => items[i].patient),
          { folds: 5, l2: 1, seed: 0 },
        );
      const probes: Record<string, ProbeResult> = {
        'source (NIH vs Kermany), all val': probe(all, (i) => (items[i].source === 'nih' ? 1 : 0)),
        'view (AP vs PA), NIH val': probe(nihView, (i) => (items[i].view === 'AP' ? 1 : 0)),
        'view (AP vs PA), NIH val NORMAL only': probe(
          nihView.filter((i) => items[i].label === 0),
          (i) => (items[i].view === 'AP' ? 1 : 0),
        ),
        'label (control), Kermany val': probe(kerm, (i) => items[i].label),
        'label (control), NIH val': probe(nih, (i) => items[i].label),
      };
      const camMass = {} as ModelReport['cam_mass'];
      for (const src of ['kermany', 'nih'] as Source[]) {
        const idx = all.filter((i) => items[i].source === src);
        camMass[src] = {
          n: idx.length,
          area: Object.fromEntries(REGIONS.map((r) => [r, meanOf(idx.map((i) => au.area[i][r]))])) as Record<Region, number>,
          mass: Object.fromEntries(REGIONS.map((r) => [r, meanOf(idx.map((i) => au.mass[i][r]))])) as Record<Region, number | null>,
        };
      }
      const montages: string[] = [];
      if (!args['no-montage']) {
        for (const [src, idx] of selection) {
          const file = join(outDir, `montage_${tag}_${src}.png`);
          const png = await montage(
            idx.map((i) => au.tiles.get(i)!),
            {
              columns: 6,
              cell: 200,
              title: `${tag} · ${SOURCE_NAMES[src]} · Grad-CAM (jet, 0.45) · green right, red wrong, orange declined`,
            },
          );
          writeFileSync(file, png);
          montages.push(file);
        }
      }

      // 3. Acquisition-shift suite.
      let shifts: ModelReport['shifts'] = null;
      if (!args['no-shift']) {
        shifts = {};
        for (const shift of SHIFTS) {
          const scored = await scoreAll(
            engine,
            grays.map((g) => () => shift.apply(g)),
            `  shift ${shift.name}`,
          );
          shifts[shift.name] = {} as Record<Source, { auc: number | null; declined: number; failed: number }>;
          for (const src of ['kermany', 'nih'] as Source[]) {
            const m = subsetMetrics(items, scored, subs.find((s) => s.key === src)!.idx, threshold);
            shifts[shift.name][src] = { auc: m.auc, declined: m.declined, failed: m.failed };
          }
        }
      }

      reports.push({
        tag,
        card: cardPath,
        name: card.name,
        version: card.version,
        threshold,
        gate: { output: card.gate?.output ?? null, intended_use: (card.gate as Record<string, unknown> | undefined)?.intended_use ?? null },
        metrics,
        worst_source_auc: worst,
        probes,
        cam_mass: camMass,
        shifts,
        montages,
        max_logit_diff_engine_vs_session: au.maxLogitDiff,
        seconds: (performance.now() - t0) / 1000,
      });
    } finally {
      await session.dispose();
      await engine.dispose();
    }
  }

  const md = renderMarkdown(reports, items, subs);
  process.stdout.write(`\n${md}\n`);
  writeFileSync(join(outDir, 'results.md'), md);
  writeFileSync(
    join(outDir, 'results.json'),
    `${JSON.stringify(
      {
        generated: new Date().toISOString(),
        split: resolve(args.split!),
        data: resolve(args.data!),
        limit: Number.isFinite(limit) ? limit : null,
        threads,
        bootstrap_resamples: resamples,
        n: Object.fromEntries(subs.map((s) => [s.key, s.idx.length])),
        shifts: SHIFTS.map((s) => ({ name: s.name, description: s.description })),
        cam_regions: CAM_REGION_TEXT,
        models: reports,
      },
      null,
      2,
    )}\n`,
  );
  console.error(`wrote ${join(outDir, 'results.json')} and results.md`);
}

const CAM_REGION_TEXT: Record<Region, string> = {
  border_10: 'outer band of 10% of each side (36% of the area)',
  markers:
    'burned-in markers: 4-connected components of very bright pixels (>= max(230, the image 99.5th percentile)) within the outer 25% band, each at most 0.5% of the image area, dilated by 3 px',
  bottom_25: 'bottom 25% of the rows: below the lung fields on a typical frontal film (diaphragm, upper abdomen)',
};

function renderMarkdown(reports: ModelReport[], items: Item[], subs: Subset[]): string {
  const L: string[] = [];
  const nk = subs.find((s) => s.key === 'kermany')!.idx.length;
  const nn = subs.find((s) => s.key === 'nih')!.idx.length;
  L.push(
    `## Cross-source evaluation (${nk} Kermany + ${nn} NIH validation images${Number.isFinite(limit) ? `, --limit ${limit}` : ''})`,
    '',
  );
  L.push(
    'Models: ' +
      reports.map((r) => `\`${r.tag}\` (${r.card.replace(REPO_ROOT + '/', '')}, threshold ${r.threshold.toFixed(3)})`).join(', '),
    '',
  );
  L.push(
    '| set | model | n (pos/neg) | ROC-AUC [95% CI] | sens | spec | ECE | NORMAL-AP FP rate | declined (by reason) | AUC accepted (n) |',
  );
  L.push('|---|---|---|---|---|---|---|---|---|---|');
  for (const s of subs) {
    for (const r of reports) {
      const m = r.metrics[s.key];
      const ci = m.auc_ci95 ? ` [${fmt(m.auc_ci95[0])}, ${fmt(m.auc_ci95[1])}]` : '';
      const reasons = Object.entries(m.declined_by_reason)
        .map(([k, v]) => `${k} ${pct(v)}`)
        .join(', ');
      L.push(
        `| ${s.name} | ${r.tag} | ${m.n} (${m.positives}/${m.negatives})${m.failed ? `, ${m.failed} failed` : ''} | ${fmt(m.auc)}${ci} | ${fmt(m.sensitivity)} | ${fmt(m.specificity)} | ${fmt(m.ece)} | ${m.normal_ap_fpr === null ? '–' : `${pct(m.normal_ap_fpr)} (${m.normal_ap_n})`} | ${pct(m.declined)}${reasons ? ` (${reasons})` : ''} | ${fmt(m.auc_accepted)} (${m.accepted_n}) |`,
      );
    }
  }
  L.push(
    '',
    '**Worst-source AUC** (min of Kermany val, NIH val): ' + reports.map((r) => `${r.tag} **${fmt(r.worst_source_auc)}**`).join(', '),
    '',
  );

  L.push('### Shortcut audit: linear probes on pooled features', '');
  L.push(
    'L2 logistic regression (C = 1) on standardised global-average-pooled `features`, 5-fold CV grouped by patient; out-of-fold ROC-AUC (0.5 = the features do not encode it, 1 = perfectly).',
    '',
  );
  L.push(`| probe | n (pos) | ${reports.map((r) => r.tag).join(' | ')} |`);
  L.push(`|---|---|${reports.map(() => '---|').join('')}`);
  for (const key of Object.keys(reports[0]?.probes ?? {})) {
    const p0 = reports[0].probes[key];
    L.push(`| ${key} | ${p0.n} (${p0.positives}) | ${reports.map((r) => fmt(r.probes[key].auc)).join(' | ')} |`);
  }
  L.push('', '### Shortcut audit: Grad-CAM mass', '');
  L.push(
    'Mean share of the upsampled Grad-CAM (ReLU, max-normalised) inside each region; "area" is the share a uniform map would give.',
    '',
  );
  for (const [reg, text] of Object.entries(CAM_REGION_TEXT)) L.push(`- \`${reg}\`: ${text}`);
  L.push('', `| source | region | area | ${reports.map((r) => r.tag).join(' | ')} |`);
  L.push(`|---|---|---|${reports.map(() => '---|').join('')}`);
  for (const src of ['kermany', 'nih'] as Source[]) {
    for (const reg of REGIONS) {
      const a = reports[0]?.cam_mass[src].area[reg];
      L.push(`| ${SOURCE_NAMES[src]} | ${reg} | ${pct(a)} | ${reports.map((r) => pct(r.cam_mass[src].mass[reg])).join(' | ')} |`);
    }
  }
  const mont = reports.flatMap((r) => r.montages);
  if (mont.length > 0) L.push('', 'Montages: ' + mont.map((m) => `\`${m.replace(REPO_ROOT + '/', '')}\``).join(', '));

  if (reports.some((r) => r.shifts)) {
    L.push('', '### Acquisition-shift suite: ROC-AUC per source', '');
    L.push(
      'Each shift is applied to the decoded image, re-encoded (lossless PNG unless stated) and run through the full engine path. `identity` is the re-encoded original; "Δ" is against it.',
      '',
    );
    L.push(`| shift | ${reports.flatMap((r) => [`${r.tag} Kermany`, `${r.tag} NIH`]).join(' | ')} |`);
    L.push(`|---|${reports.flatMap(() => ['---|', '---|']).join('')}`);
    for (const s of SHIFTS) {
      const cells = reports.flatMap((r) =>
        (['kermany', 'nih'] as Source[]).map((src) => {
          const v = r.shifts?.[s.name]?.[src];
          const ref = r.shifts?.identity?.[src]?.auc;
          if (!v) return '–';
          const d =
            s.name !== 'identity' && v.auc !== null && ref != null ? ` (${v.auc - ref >= 0 ? '+' : ''}${(v.auc - ref).toFixed(3)})` : '';
          return `${fmt(v.auc)}${d}${v.declined > 0 ? `, ${pct(v.declined, 0)} declined` : ''}`;
        }),
      );
      L.push(`| ${s.name} | ${cells.join(' | ')} |`);
    }
    L.push(
      '',
      'Worst-case AUC over the shifts: ' +
        reports
          .map((r) => {
            const per = (['kermany', 'nih'] as Source[]).map((src) => {
              const vals = SHIFTS.map((s) => r.shifts?.[s.name]?.[src]?.auc).filter((v): v is number => typeof v === 'number');
              return `${src} ${fmt(Math.min(...vals))}`;
            });
            return `${r.tag}: ${per.join(', ')}`;
          })
          .join('; '),
    );
  }
  L.push(
    '',
    `Engine vs direct-session logit check (max |diff|): ${reports.map((r) => `${r.tag} ${r.max_logit_diff_engine_vs_session.toExponential(1)}`).join(', ')}. Time: ${reports.map((r) => `${r.tag} ${r.seconds.toFixed(0)} s`).join(', ')}.`,
  );
  L.push(`Images: ${items.length}.`);
  return `${L.join('\n')}\n`;
}

await main();
