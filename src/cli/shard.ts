/**
 * `--shard K/N` of predict and evaluate: a deterministic partition of the input files over N
 * machines without coordination. A file belongs to shard K when the hash of its key, the path
 * relative to the input root ('/'-separated), is K modulo N, so every machine that lists the same
 * folder agrees, wherever the folder is mounted. In a Kubernetes Indexed Job the shard comes from
 * the environment: JOB_COMPLETION_INDEX (set by Kubernetes, 0-based) and JOB_COMPLETIONS (set in
 * the Job's manifest to its `completions`; Kubernetes does not set it).
 */
import { createHash } from 'node:crypto';
import { sep } from 'node:path';
import { UsageError } from './io.ts';

export interface Shard {
  /** 0-based, < count. */
  index: number;
  count: number;
}

/** Most shards a job may have (Kubernetes caps an Indexed Job's completions at 100,000). */
export const MAX_SHARDS = 100_000;

const INT = /^(0|[1-9][0-9]*)$/;

function shardFrom(index: string, count: string, what: string): Shard {
  if (!INT.test(index) || !INT.test(count)) throw new UsageError(`${what}: K and N must be whole numbers (got ${index}/${count})`);
  const k = Number(index);
  const n = Number(count);
  if (n < 1 || n > MAX_SHARDS) throw new UsageError(`${what}: N must be between 1 and ${MAX_SHARDS} (got ${n})`);
  if (k >= n) throw new UsageError(`${what}: K must be between 0 and N-1 (0-based, like JOB_COMPLETION_INDEX; got ${k}/${n})`);
  return { index: k, count: n };
}

/**
 * The shard of this run: `--shard K/N`, else JOB_COMPLETION_INDEX with JOB_COMPLETIONS from the
 * environment, else none (every file). Both given and different, or one of the two variables
 * without the other, is a usage error: a shard silently taken as the whole (or the wrong part)
 * would give a wrong answer that looks right.
 */
export function resolveShard(flag: string | undefined, env: Record<string, string | undefined>): Shard | undefined {
  let fromFlag: Shard | undefined;
  if (flag !== undefined) {
    const m = /^([^/]*)\/([^/]*)$/.exec(flag.trim());
    if (!m) throw new UsageError(`--shard must be K/N, e.g. 0/4 for the first of four shards (got ${JSON.stringify(flag)})`);
    fromFlag = shardFrom(m[1], m[2], '--shard');
  }
  const index = env.JOB_COMPLETION_INDEX?.trim() || undefined;
  const count = env.JOB_COMPLETIONS?.trim() || undefined;
  let fromEnv: Shard | undefined;
  if (index !== undefined || count !== undefined) {
    if (index === undefined || count === undefined) {
      const [have, lack] = index !== undefined ? ['JOB_COMPLETION_INDEX', 'JOB_COMPLETIONS'] : ['JOB_COMPLETIONS', 'JOB_COMPLETION_INDEX'];
      if (fromFlag) return fromFlag;
      throw new UsageError(
        `${have} is set but ${lack} is not: in an Indexed Job set JOB_COMPLETIONS to the Job's completions (or pass --shard K/N)`,
      );
    }
    fromEnv = shardFrom(index, count, 'JOB_COMPLETION_INDEX/JOB_COMPLETIONS');
  }
  if (fromFlag && fromEnv && (fromFlag.index !== fromEnv.index || fromFlag.count !== fromEnv.count)) {
    throw new UsageError(
      `--shard ${fromFlag.index}/${fromFlag.count} disagrees with JOB_COMPLETION_INDEX/JOB_COMPLETIONS ${fromEnv.index}/${fromEnv.count}`,
    );
  }
  return fromFlag ?? fromEnv;
}

/** A file's key: its path relative to the input root, with '/' separators. */
export function shardKey(relativePath: string): string {
  return sep === '/' ? relativePath : relativePath.split(sep).join('/');
}

/** The shard (0..count-1) of a key: the first 48 bits of its SHA-256, modulo count. */
export function shardOfKey(key: string, count: number): number {
  const digest = createHash('sha256').update(key, 'utf8').digest();
  return digest.readUIntBE(0, 6) % count;
}

/** Positions (into items) of the items of this shard, in their order; every position without a shard. */
export function shardPositions<T>(items: readonly T[], keyOf: (item: T) => string, shard: Shard | undefined): number[] {
  const out: number[] = [];
  for (let i = 0; i < items.length; i++) if (!shard || shardOfKey(keyOf(items[i]), shard.count) === shard.index) out.push(i);
  return out;
}

/** "shard 1/3: 120 of 360 files" for stderr. */
export function shardLine(shard: Shard, selected: number, total: number): string {
  return `shard ${shard.index}/${shard.count}: ${selected} of ${total} files`;
}
