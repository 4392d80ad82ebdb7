/** `pneumolens evaluate`: metrics, JSON and HTML report on a labelled folder DIR/{NORMAL,PNEUMONIA}. */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import {
  ciText,
  countByReason,
  REJECTION_CODES,
  REJECTION_REASONS,
  rejectionCode,
  renderReport,
  thr,
  worstErrors,
  type FailedItem,
  type GalleryItem,
  type RejectionCode,
  type ReportItem,
} from '../eval/report.ts';
import { curves, summarize, type MetricsSummary } from '../eval/summary.ts';
import type { Engine } from '../pipeline.ts';
import type { SiteSummary } from '../site/profile.ts';
import { command, ENGINE_HELP, engineOptions, flag, num, str } from './args.ts';
import { analyseFiles } from './batch.ts';
import { withEngine } from './engine.ts';
import { listImages } from './files.ts';
import { EXIT_OK, UsageError, type Io } from './io.ts';
import { checkShardFile, mergeShards, type ShardEvaluation, type ShardRecord } from './merge.ts';
import { Progress } from './progress.ts';
import { resolveShard, shardKey, shardLine, shardPositions } from './shard.ts';

export const help = `Usage: pneumolens evaluate [options] <dir>
       pneumolens evaluate --merge [--json FILE] <shard.json>...

Evaluates the model on a labelled folder: <dir>/NORMAL and <dir>/PNEUMONIA (folder names
matched case-insensitively against the model's labels), searched recursively for images.
Files that cannot be analysed are counted and listed, not fatal. Images the input gate rejects
are counted and listed by reason (not a chest X-ray; outside the model's intended use), and the
metrics are computed on the accepted images only (--force counts them all). The AUC's bootstrap
interval is reported as not informative below 30 images of either class or when it degenerates.

Options:
  --json FILE        write every metric as JSON to FILE ('-' for stdout, which then carries only JSON)
  --report FILE      write a self-contained HTML report (plots, sweep, worst errors with Grad-CAM)
  --threshold X      decision threshold in [0, 1] (default: the model card's)
  --limit N          use at most the first N images of each class
  --gallery K        false positives and false negatives to show in the report (default 6 each)
  --bootstrap N      bootstrap resamples for the AUC confidence interval (default 1000)
  --seed S           bootstrap seed (default 42)
  --force            count the images the input gate rejects (either reason) in the metrics
  --batch N          images per inference batch (default 8)
  --shard K/N        evaluate only shard K (0-based) of N (by a hash of each image's path under
                     <dir>; in a Kubernetes Indexed Job from JOB_COMPLETION_INDEX and
                     JOB_COMPLETIONS); with --json, the file carries what --merge needs
  --merge            combine the --json files of every shard of one run into the evaluation of
                     the whole (exact: the metrics are recomputed from the per-image scores);
                     no model is loaded, --json and the summary as for a whole run
  --quiet            no progress bar
${ENGINE_HELP}
  -h, --help         this help

Exit status: 0 on success (even when some files fail to decode), 1 when nothing could be
evaluated or the model failed, 2 on a usage error. Research and education tool, not a medical device.
`;

/** The class folders under dir, matched case-insensitively to the labels. */
export async function classFolders(dir: string, labels: readonly string[]): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => {
    throw new UsageError(`${dir}: not a readable directory`);
  });
  return labels.map((label) => {
    const hits = entries.filter((e) => e.isDirectory() && e.name.toLowerCase() === label.toLowerCase());
    if (hits.length === 0)
      throw new UsageError(`${dir} has no ${label} folder (expected ${labels.map((l) => `${dir}/${l}`).join(' and ')})`);
    if (hits.length > 1) throw new UsageError(`${dir} has several folders named like ${label}: ${hits.map((h) => h.name).join(', ')}`);
    return join(dir, hits[0].name);
  });
}

export interface EvaluationJson extends MetricsSummary {
  model: { name: string; version: string };
  /** The site profile the evaluation was decided with (--site). */
  site?: SiteSummary;
  dataset: string;
  errors: FailedItem[];
  /** Images rejected by the input gate (not counted in the metrics unless forced); `code` is the reason. */
  rejected: FailedItem[];
  /** How many of `rejected` for each reason (every reason listed, 0 when none). */
  rejected_by_reason: Record<RejectionCode, number>;
  /** With --force: how many gate-rejected images were counted anyway. */
  forced_rejected: number;
  /** With --force: the same, for each reason. */
  forced_by_reason: Record<RejectionCode, number>;
  predictions: ReportItem[];
  /** With --shard: what `--merge` needs (src/cli/merge.ts). */
  shard?: ShardRecord;
}

/** The evaluation JSON from the per-image outcomes: the one builder of a whole run, a shard and a merge. */
export function evaluationJson(e: {
  model: { name: string; version: string };
  site?: SiteSummary;
  dataset: string;
  threshold: number;
  labels: readonly [string, string];
  bootstrap: { resamples: number; seed: number };
  items: ReportItem[];
  failures: FailedItem[];
  rejected: FailedItem[];
  forcedCount: number;
  forcedByReason: Record<RejectionCode, number>;
}): EvaluationJson {
  const summary = summarize(
    e.items.map((i) => i.truth),
    e.items.map((i) => i.probability),
    e.threshold,
    { bootstrap: e.bootstrap, labels: e.labels },
  );
  return {
    model: e.model,
    ...(e.site ? { site: e.site } : {}),
    dataset: e.dataset,
    ...summary,
    errors: e.failures,
    rejected: e.rejected,
    rejected_by_reason: countByReason(e.rejected),
    forced_rejected: e.forcedCount,
    forced_by_reason: e.forcedByReason,
    predictions: e.items,
  };
}

/** `evaluate --merge`: no model, no images; the shards' JSON files in, the whole's summary and JSON out. */
async function runMerge(files: string[], jsonOut: string | undefined, io: Io): Promise<number> {
  if (files.length === 0) throw new UsageError('--merge needs the JSON files of the shards');
  const docs: Array<{ name: string; json: ShardEvaluation }> = [];
  for (const name of files) {
    let json: unknown;
    try {
      json = JSON.parse(await readFile(resolve(io.cwd, name), 'utf8'));
    } catch (e) {
      throw new UsageError(`${name}: ${(e as Error).message}`);
    }
    docs.push({ name, json: checkShardFile(json, name) });
  }
  const m = mergeShards(docs);
  if (m.items.length === 0) {
    io.stderr.write(`pneumolens: none of the ${m.of} images of the ${m.count} shards was analysed\n`);
    return 1;
  }
  const result = evaluationJson({
    ...m,
    site: m.site as SiteSummary | undefined,
    forcedByReason: { ...countByReason([]), ...m.forcedByReason } as Record<RejectionCode, number>,
  });
  if (jsonOut !== undefined) {
    const text = JSON.stringify(result, null, 2) + '\n';
    if (jsonOut === '-') io.stdout.write(text);
    else await writeFile(resolve(io.cwd, jsonOut), text);
  }
  if (jsonOut !== '-') io.stdout.write(`Merged       ${m.count} shards, ${m.of} images\n` + summaryText(result, m.labels));
  return EXIT_OK;
}

function fmtPct(v: number | null): string {
  return v === null ? 'n/a' : `${(v * 100).toFixed(1)}%`;
}

function fmt(v: number | null, d = 4): string {
  return v === null ? 'n/a' : v.toFixed(d);
}

export function summaryText(e: EvaluationJson, labels: readonly string[]): string {
  const c = e.confusion;
  const ci = ciText(e.auc_ci95, 4);
  const lines = [
    `Model        ${e.model.name} ${e.model.version}`,
    ...(e.site ? [`Site         ${e.site.statement}`] : []),
    `Data         ${e.dataset}: ${e.n} images (${e.negatives} ${labels[0]}, ${e.positives} ${labels[1]})${e.errors.length ? `, ${e.errors.length} failed` : ''}`,
    ...REJECTION_CODES.filter((r) => e.rejected_by_reason[r] > 0).map(
      (r) => `${REJECTION_REASONS[r].title.padEnd(13)}${e.rejected_by_reason[r]} image(s) ${REJECTION_REASONS[r].counted} (${r})`,
    ),
    ...(e.rejected.length ? [`             metrics on the ${e.n} accepted`] : []),
    ...REJECTION_CODES.filter((r) => e.forced_by_reason[r] > 0).map(
      (r) => `Forced       ${e.forced_by_reason[r]} image(s) the input gate rejected as ${r} are counted (--force)`,
    ),
    `Threshold    ${thr(e.threshold)}`,
    `Accuracy     ${fmtPct(e.accuracy)}`,
    `Sensitivity  ${fmtPct(e.sensitivity)}`,
    `Specificity  ${fmtPct(e.specificity)}`,
    `Precision    ${fmtPct(e.precision)}`,
    `NPV          ${fmtPct(e.npv)}`,
    `F1           ${fmt(e.f1)}`,
    `ROC-AUC      ${fmt(e.auc)}${ci}`,
    `PR-AUC       ${fmt(e.pr_auc)}`,
    `Brier        ${fmt(e.brier)}`,
    `ECE          ${fmt(e.ece)}${e.ece_chance ? ` (by chance alone a perfectly calibrated model reads ${fmt(e.ece_chance.mean)} on ${e.n} films, 90% of the time <= ${fmt(e.ece_chance.p90)})` : ''}`,
    `Youden       ${e.youden ? `threshold ${fmt(e.youden.threshold)}, J ${fmt(e.youden.youden)}` : 'n/a'}`,
    `Confusion    TP ${c.tp}  FP ${c.fp}  TN ${c.tn}  FN ${c.fn}`,
  ];
  return lines.join('\n') + '\n';
}

async function galleryWithOverlays(
  engine: Engine,
  gallery: GalleryItem[],
  root: string,
  io: Io,
  threshold: number,
  force: boolean,
): Promise<GalleryItem[]> {
  const files = gallery.map((g) => join(root, g.file));
  const out: GalleryItem[] = [];
  let k = 0;
  for await (const outcomes of analyseFiles(engine, files, io.cwd, { cam: true, heatmap: false, threshold, force }, 4)) {
    for (const o of outcomes) {
      const g = gallery[k++];
      out.push(o.result?.cam ? { ...g, overlayPng: o.result.cam.overlayPng } : g);
    }
  }
  return out;
}

export async function run(args: string[], io: Io): Promise<number> {
  const p = command(args, io, help, {
    engine: true,
    string: ['json', 'report', 'threshold', 'limit', 'gallery', 'bootstrap', 'seed', 'batch', 'shard'],
    boolean: ['force', 'quiet', 'merge'],
  });
  if (!p) return EXIT_OK;
  if (flag(p, 'merge')) {
    const alone = ['report', 'threshold', 'limit', 'gallery', 'bootstrap', 'seed', 'batch', 'force', 'shard'].filter(
      (k) => p.values[k] !== undefined,
    );
    if (alone.length > 0) {
      throw new UsageError(`--merge takes the shards' settings; it cannot be combined with ${alone.map((k) => `--${k}`).join(', ')}`);
    }
    const jsonOut = str(p, 'json');
    if (jsonOut === '') throw new UsageError('--json needs a file name');
    return runMerge(p.positionals, jsonOut, io);
  }
  if (p.positionals.length !== 1)
    throw new UsageError(p.positionals.length === 0 ? 'no data directory given' : 'give exactly one data directory');
  const jsonOut = str(p, 'json');
  const reportOut = str(p, 'report');
  if (jsonOut === '' || reportOut === '') throw new UsageError('--json and --report need a file name');
  const thresholdArg = num(p, 'threshold', 0, 1);
  const limit = num(p, 'limit', 1, Number.MAX_SAFE_INTEGER, true);
  const galleryK = num(p, 'gallery', 0, 100, true) ?? 6;
  const resamples = num(p, 'bootstrap', 1, 100_000, true) ?? 1000;
  const seed = num(p, 'seed', 0, 2 ** 32 - 1, true) ?? 42;
  const batch = num(p, 'batch', 1, 256, true) ?? 8;
  const force = flag(p, 'force');
  const engineOpts = engineOptions(p);
  const shard = resolveShard(str(p, 'shard'), io.env);
  const dataDir = p.positionals[0];
  const root = resolve(io.cwd, dataDir);

  return withEngine(io, engineOpts, async (engine) => {
    const labels = engine.card.labels;
    const threshold = thresholdArg ?? engine.applied.postprocessing.threshold; // a site profile's when --site
    const folders = await classFolders(root, labels);
    const listed: string[] = [];
    const listedTruths: Array<0 | 1> = [];
    for (const [cls, folder] of folders.entries()) {
      let found = await listImages(folder);
      if (limit !== undefined) found = found.slice(0, limit);
      for (const f of found) {
        listed.push(f);
        listedTruths.push(cls as 0 | 1);
      }
    }
    if (listed.length === 0) {
      io.stderr.write(`pneumolens: no images found under ${dataDir}\n`);
      return 1;
    }
    // --shard: this machine's part, by the path under <dir>; `at` = each file's position in the whole listing
    const at = shardPositions(listed, (f) => shardKey(relative(root, f)), shard);
    const files = at.map((i) => listed[i]);
    const truths = at.map((i) => listedTruths[i]);
    if (shard) io.stderr.write(`pneumolens: ${shardLine(shard, files.length, listed.length)}\n`);
    const positions = { predictions: [] as number[], errors: [] as number[], rejected: [] as number[] };

    const progress = new Progress(files.length, io.stderr, 'evaluate ', flag(p, 'quiet') ? false : undefined);
    const items: ReportItem[] = [];
    const failures: FailedItem[] = [];
    const rejected: FailedItem[] = [];
    const forced: FailedItem[] = [];
    let k = 0;
    for await (const outcomes of analyseFiles(engine, files, io.cwd, { cam: false, threshold, ...(force ? { force } : {}) }, batch)) {
      for (const o of outcomes) {
        const file = relative(root, o.file);
        const position = at[k];
        const truth = truths[k++];
        positions[o.status === 'rejected' ? 'rejected' : o.status === 'analysed' ? 'predictions' : 'errors'].push(position);
        if (o.status === 'rejected') {
          rejected.push({ file, code: o.result!.reason ?? 'not_a_chest_xray', message: o.result!.gate.reasons.join('; ') });
        } else if (o.status === 'analysed') {
          if (o.result!.rejected) forced.push({ file, code: o.result!.reason ?? 'not_a_chest_xray', message: '' });
          items.push({ file, truth, probability: o.result!.probability });
        } else failures.push({ file, code: o.error?.code ?? 'internal_error', message: o.error?.message ?? 'unknown error' });
      }
      progress.tick(outcomes.length, outcomes.filter((o) => o.status !== 'analysed').length);
    }
    progress.finish();
    for (const f of failures) io.stderr.write(`pneumolens: ${f.file}: ${f.code}: ${f.message}\n`);
    for (const f of rejected) io.stderr.write(`pneumolens: ${f.file}: ${REJECTION_REASONS[rejectionCode(f.code)].short}: ${f.message}\n`);
    const byReason = countByReason(rejected);
    // A shard's JSON is written even when none of its images was analysed: the merge needs every shard.
    if (items.length === 0 && !(shard && jsonOut !== undefined)) {
      const why = REJECTION_CODES.filter((r) => byReason[r] > 0).map((r) => `${byReason[r]} ${REJECTION_REASONS[r].counted}`);
      io.stderr.write(
        `pneumolens: none of the ${files.length} images could be analysed${why.length ? ` (${why.join('; ')}; --force counts them)` : ''}\n`,
      );
      return 1;
    }

    const y = items.map((i) => i.truth);
    const prob = items.map((i) => i.probability);
    const result: EvaluationJson = evaluationJson({
      model: { name: engine.card.name, version: engine.card.version },
      ...(engine.site ? { site: engine.site } : {}),
      dataset: dataDir,
      threshold,
      labels,
      bootstrap: { resamples, seed },
      items,
      failures,
      rejected,
      forcedCount: forced.length,
      forcedByReason: countByReason(forced),
    });
    if (shard) {
      result.shard = {
        index: shard.index,
        count: shard.count,
        of: listed.length,
        files: files.length,
        labels: [labels[0], labels[1]],
        bootstrap: { resamples, seed },
        force,
        positions,
      };
    }

    if (jsonOut !== undefined) {
      const text = JSON.stringify(result, null, 2) + '\n';
      if (jsonOut === '-') io.stdout.write(text);
      else await writeFile(resolve(io.cwd, jsonOut), text);
    }
    if (jsonOut !== '-') io.stdout.write(summaryText(result, labels));
    if (reportOut !== undefined) {
      const gallery = await galleryWithOverlays(engine, worstErrors(items, threshold, galleryK), root, io, threshold, force);
      const html = renderReport({
        dataset: dataDir,
        card: engine.card,
        summary: result,
        curves: curves(y, prob),
        items,
        failures,
        rejected,
        forcedRejected: forced.length,
        forcedByReason: countByReason(forced),
        gallery,
      });
      await writeFile(resolve(io.cwd, reportOut), html);
      if (jsonOut !== '-') io.stdout.write(`Report       ${reportOut}\n`);
    }
    return EXIT_OK;
  });
}
