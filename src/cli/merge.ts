/**
 * `pneumolens evaluate --merge a.json b.json ...`: the shard results of `evaluate --shard K/N --json`
 * combined into the evaluation of the whole. Exact: the per-image scores the shards carry are put
 * back in the order of the whole folder's listing (each shard records every image's position in
 * it) and the metrics are computed once over all of them, never averaged. Every shard of the run
 * must be there exactly once, made with the same model, data set, threshold and settings; anything
 * else is refused, since a partial or mixed merge would look like a whole.
 */
import type { FailedItem, ReportItem } from '../eval/report.ts';
import { UsageError } from './io.ts';

/** What `evaluate --shard` adds to its JSON: enough to merge exactly and to check the merge. */
export interface ShardRecord {
  index: number;
  count: number;
  /** Images in the whole listing (both classes, after --limit), and in this shard. */
  of: number;
  files: number;
  labels: [string, string];
  bootstrap: { resamples: number; seed: number };
  force: boolean;
  /** For each entry of predictions, errors and rejected: its position in the whole listing. */
  positions: { predictions: number[]; errors: number[]; rejected: number[] };
}

/** The part of an evaluation JSON that merging reads (the rest is recomputed). */
export interface ShardEvaluation {
  model: { name: string; version: string };
  site?: unknown;
  dataset: string;
  threshold: number;
  errors: FailedItem[];
  rejected: FailedItem[];
  forced_rejected: number;
  forced_by_reason: Record<string, number>;
  predictions: ReportItem[];
  shard: ShardRecord;
}

/** The whole, rebuilt from its shards: the inputs of the evaluation of the whole. */
export interface Merged {
  model: { name: string; version: string };
  site?: unknown;
  dataset: string;
  threshold: number;
  labels: [string, string];
  bootstrap: { resamples: number; seed: number };
  force: boolean;
  items: ReportItem[];
  failures: FailedItem[];
  rejected: FailedItem[];
  forcedCount: number;
  forcedByReason: Record<string, number>;
  count: number;
  of: number;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 0;

/** Checks one parsed file's shape; returns it typed. `name` is for messages. */
export function checkShardFile(json: unknown, name: string): ShardEvaluation {
  const bad = (what: string): never => {
    throw new UsageError(`${name}: ${what}`);
  };
  if (!isObj(json)) return bad('not an evaluation JSON (expected an object)');
  if (!isObj(json.shard)) return bad('not the JSON of `evaluate --shard K/N --json FILE` (it has no shard record)');
  const s = json.shard;
  if (!isCount(s.index) || !isCount(s.count) || s.count < 1 || s.index >= s.count) bad('shard.index/count are not a valid K/N');
  if (!isCount(s.of) || !isCount(s.files)) bad('shard.of/files must be counts');
  if (!Array.isArray(s.labels) || s.labels.length !== 2 || !s.labels.every((l) => typeof l === 'string'))
    bad('shard.labels must be two strings');
  if (!isObj(s.bootstrap) || !isCount(s.bootstrap.resamples) || !isCount(s.bootstrap.seed))
    bad('shard.bootstrap must be {resamples, seed}');
  if (typeof s.force !== 'boolean') bad('shard.force must be true or false');
  if (!isObj(json.model) || typeof json.model.name !== 'string' || typeof json.model.version !== 'string') bad('no model name and version');
  if (typeof json.dataset !== 'string') bad('no dataset');
  if (typeof json.threshold !== 'number' || !Number.isFinite(json.threshold)) bad('no threshold');
  if (!isCount(json.forced_rejected)) bad('forced_rejected must be a count');
  if (!isObj(json.forced_by_reason) || !Object.values(json.forced_by_reason).every(isCount))
    bad('forced_by_reason must map reasons to counts');
  if (!isObj(s.positions)) bad('shard.positions is missing');
  const positions = s.positions as Record<string, unknown>;
  for (const list of ['predictions', 'errors', 'rejected'] as const) {
    const entries = json[list];
    const pos = positions[list];
    if (!Array.isArray(entries)) bad(`${list} must be an array`);
    if (!Array.isArray(pos) || !pos.every(isCount)) bad(`shard.positions.${list} must be an array of positions`);
    if ((pos as unknown[]).length !== (entries as unknown[]).length) bad(`shard.positions.${list} does not match ${list}`);
    for (const entry of entries as unknown[]) {
      if (!isObj(entry) || typeof entry.file !== 'string') return bad(`an entry of ${list} has no file`);
      const e = entry;
      if (list === 'predictions') {
        const p = e;
        if ((p.truth !== 0 && p.truth !== 1) || typeof p.probability !== 'number' || !(p.probability >= 0 && p.probability <= 1)) {
          bad(`the prediction of ${String(p.file)} needs truth 0|1 and a probability in [0, 1]`);
        }
      } else if (typeof e.code !== 'string' || typeof e.message !== 'string') bad(`an entry of ${list} needs code and message`);
    }
  }
  const listed = (json.predictions as unknown[]).length + (json.errors as unknown[]).length + (json.rejected as unknown[]).length;
  if (listed !== s.files) bad(`shard.files (${String(s.files)}) differs from the ${listed} images listed`);
  return json as unknown as ShardEvaluation;
}

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

/** Merges checked shard files (in any order) into the whole. */
export function mergeShards(files: Array<{ name: string; json: ShardEvaluation }>): Merged {
  if (files.length === 0) throw new UsageError('--merge needs the JSON files of the shards');
  const first = files[0].json;
  const count = first.shard.count;
  const agree: Array<[string, (e: ShardEvaluation) => unknown]> = [
    ['the model', (e) => e.model],
    ['the site profile', (e) => e.site ?? null],
    ['the data set', (e) => e.dataset],
    ['the threshold', (e) => e.threshold],
    ['the number of shards', (e) => e.shard.count],
    ['the number of images in the whole', (e) => e.shard.of],
    ['the labels', (e) => e.shard.labels],
    ['the bootstrap settings', (e) => e.shard.bootstrap],
    ['--force', (e) => e.shard.force],
  ];
  for (const { name, json } of files.slice(1)) {
    for (const [what, get] of agree) {
      if (!same(get(json), get(first))) {
        throw new UsageError(
          `${name} and ${files[0].name} differ in ${what} (${JSON.stringify(get(json))} vs ${JSON.stringify(get(first))})`,
        );
      }
    }
  }
  const byIndex = new Map<number, string>();
  for (const { name, json } of files) {
    const other = byIndex.get(json.shard.index);
    if (other !== undefined) throw new UsageError(`shard ${json.shard.index}/${count} is given twice (${other} and ${name})`);
    byIndex.set(json.shard.index, name);
  }
  const missing = Array.from({ length: count }, (_, i) => i).filter((i) => !byIndex.has(i));
  if (missing.length > 0) {
    const list = missing.slice(0, 10).join(', ') + (missing.length > 10 ? `, ... (${missing.length} in all)` : '');
    throw new UsageError(`shard(s) ${list} of ${count} missing: the merge must have every shard of the run`);
  }
  const of = first.shard.of;
  const owner = new Int32Array(of).fill(-1);
  const gather = <T>(list: 'predictions' | 'errors' | 'rejected'): T[] => {
    const all: Array<{ at: number; entry: T }> = [];
    for (const { name, json } of files) {
      const pos = json.shard.positions[list];
      (json[list] as T[]).forEach((entry, i) => {
        const at = pos[i];
        if (at >= of) throw new UsageError(`${name}: position ${at} is outside the ${of} images of the whole`);
        if (owner[at] !== -1) {
          throw new UsageError(`${name}: the image at position ${at} is also in shard ${owner[at]}: the shards overlap`);
        }
        owner[at] = json.shard.index;
        all.push({ at, entry });
      });
    }
    return all.sort((a, b) => a.at - b.at).map((x) => x.entry);
  };
  const items = gather<ReportItem>('predictions');
  const failures = gather<FailedItem>('errors');
  const rejected = gather<FailedItem>('rejected');
  const uncovered = owner.indexOf(-1);
  if (uncovered !== -1)
    throw new UsageError(`the image at position ${uncovered} of ${of} is in no shard: the shards do not cover the whole`);
  const forcedByReason: Record<string, number> = {};
  for (const { json } of files) {
    for (const [r, n] of Object.entries(json.forced_by_reason)) forcedByReason[r] = (forcedByReason[r] ?? 0) + n;
  }
  return {
    model: first.model,
    ...(first.site !== undefined ? { site: first.site } : {}),
    dataset: first.dataset,
    threshold: first.threshold,
    labels: first.shard.labels,
    bootstrap: first.shard.bootstrap,
    force: first.shard.force,
    items,
    failures,
    rejected,
    forcedCount: files.reduce((n, f) => n + f.json.forced_rejected, 0),
    forcedByReason,
    count,
    of,
  };
}
