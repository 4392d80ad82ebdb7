/**
 * Runs files through the engine's one path (Engine.analyseStream), which owns the batching: the
 * next batch is read and decoded while the model runs the current one. One bad file never stops
 * the batch: its outcome carries the error code and message instead of a result.
 */
import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { isPneumoError, PneumoError } from '../errors.ts';
import { defaultMaxFileBytes } from '../image/limits.ts';
import type { Engine } from '../pipeline.ts';
import type { AnalyseOptions, AnalysisResult, Outcome } from '../types.ts';

export interface OutcomeError {
  code: string;
  message: string;
}

/**
 * The engine's outcome of one file, for rendering. `status` is the engine's: `result` is set for
 * analysed and rejected files (a rejected one's label and probability must not be shown), `error`
 * for failed ones only.
 */
export interface FileOutcome {
  file: string;
  status: Outcome['status'];
  result?: AnalysisResult;
  error?: OutcomeError;
}

export function toOutcomeError(e: unknown): OutcomeError {
  if (isPneumoError(e)) return { code: e.code, message: e.message };
  const errno = e as NodeJS.ErrnoException;
  if (errno && typeof errno.code === 'string' && typeof errno.syscall === 'string') {
    const why: Record<string, string> = { ENOENT: 'file not found', EACCES: 'permission denied', EISDIR: 'is a directory' };
    return { code: 'unreadable_file', message: why[errno.code] ?? `${errno.code} on ${errno.syscall}` };
  }
  return { code: 'internal_error', message: e instanceof Error ? e.message : String(e) };
}

/** Reads a file, checking its size first: a file over the limit is never loaded (readFile fails above 2 GiB anyway). */
async function readChecked(path: string, maxFileBytes: number): Promise<Uint8Array> {
  const { size } = await stat(path);
  if (size > maxFileBytes) {
    const mb = (n: number) => `${+(n / (1024 * 1024)).toFixed(1)} MB`;
    throw new PneumoError('payload_too_large', `The file is ${mb(size)}, larger than the limit of ${mb(maxFileBytes)}.`);
  }
  return readFile(path);
}

export function fileOutcome(file: string, o: Outcome): FileOutcome {
  return o.status === 'failed' ? { file, status: o.status, error: toOutcomeError(o.error) } : { file, status: o.status, result: o.result };
}

/** Yields the outcomes of each batch, in input order. */
export async function* analyseFiles(
  engine: Engine,
  files: string[],
  cwd: string,
  opts: AnalyseOptions,
  batchSize = 8,
  maxFileBytes = defaultMaxFileBytes(),
): AsyncGenerator<FileOutcome[]> {
  const sources = files.map((file) => () => readChecked(resolve(cwd, file), maxFileBytes));
  let done = 0;
  for await (const outcomes of engine.analyseStream(sources, opts, batchSize)) {
    yield outcomes.map((o, i) => fileOutcome(files[done + i], o));
    done += outcomes.length;
  }
}
