/**
 * Reads files and runs them through the engine in batches. One bad file never stops the batch: its
 * outcome carries the error code and message instead of a result.
 */
import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { isPneumoError, PneumoError } from '../errors.js';
import { defaultMaxFileBytes } from '../image/limits.js';
import type { Engine } from '../pipeline.js';
import type { AnalyseOptions, AnalysisResult } from '../types.js';

export interface OutcomeError {
  code: string;
  message: string;
}

export interface FileOutcome {
  file: string;
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

/** Yields the outcomes of each batch, in input order. */
export async function* analyseFiles(
  engine: Engine,
  files: string[],
  cwd: string,
  opts: AnalyseOptions,
  batchSize = 8,
  maxFileBytes = defaultMaxFileBytes(),
): AsyncGenerator<FileOutcome[]> {
  for (let start = 0; start < files.length; start += batchSize) {
    const chunk = files.slice(start, start + batchSize);
    const outcomes: FileOutcome[] = chunk.map((file) => ({ file }));
    const bytes: Uint8Array[] = [];
    const slots: number[] = [];
    await Promise.all(
      chunk.map(async (file, i) => {
        try {
          const path = resolve(cwd, file);
          // Checked before reading: a file over the limit is never loaded (readFile fails above 2 GiB anyway).
          const { size } = await stat(path);
          if (size > maxFileBytes) {
            const mb = (n: number) => `${+(n / (1024 * 1024)).toFixed(1)} MB`;
            throw new PneumoError(413, 'payload_too_large', `The file is ${mb(size)}, larger than the limit of ${mb(maxFileBytes)}.`);
          }
          bytes[i] = await readFile(path);
        } catch (e) {
          outcomes[i].error = toOutcomeError(e);
        }
      }),
    );
    chunk.forEach((_, i) => {
      if (!outcomes[i].error) slots.push(i);
    });
    const inputs = slots.map((i) => bytes[i]);
    let results: Array<AnalysisResult | Error>;
    try {
      results = inputs.length > 0 ? await engine.analyseMany(inputs, opts) : [];
    } catch {
      // a failure of the whole batch: isolate the culprit by analysing one at a time
      results = [];
      for (const b of inputs)
        results.push(await engine.analyse(b, opts).catch((e: unknown) => (e instanceof Error ? e : new Error(String(e)))));
    }
    slots.forEach((slot, k) => {
      const r = results[k];
      if (r instanceof Error) outcomes[slot].error = toOutcomeError(r);
      else outcomes[slot].result = r;
    });
    yield outcomes;
  }
}
