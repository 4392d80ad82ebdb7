/**
 * The engine of `npm start`, in worker threads. ONNX Runtime's Node binding runs a session
 * synchronously on the calling thread, and decoding conversions, preprocessing, Grad-CAM and the
 * overlay are synchronous JavaScript: on the server's event loop, each analysis blocked it for its
 * whole duration (measured with bench/attack.ts on 2 loaded cores: 100-250 ms per analysis, so
 * /api/health took up to 0.4-0.7 s under load). Here each worker holds its own session and runs one
 * analysis at a time; the event loop only passes bytes and results. The limiter in front still
 * decides how many analyses run at once; one worker per concurrent analysis (at most the cores).
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { isPneumoError, PneumoError, type ErrorCode } from '../errors.ts';
import { unwrap } from '../pipeline.ts';
import type { AnalyseOptions, AnalysisResult, Outcome } from '../types.ts';
import type { SiteSummary } from '../site/profile.ts';
import type { PredictEngine } from './app.ts';

export type ThreadRequest = { type: 'analyse'; id: number; bytes: Uint8Array; opts: AnalyseOptions } | { type: 'dispose' };

/** An error as it crosses the thread boundary (structured clone keeps no class). */
export type WireError =
  | { pneumo: true; status: number; code: ErrorCode; message: string; details?: Record<string, unknown> }
  | { pneumo: false; message: string; stack?: string };

/** The engine's Outcome (src/types.ts) as it crosses the thread boundary: the same three cases. */
export type WireOutcome =
  | { status: 'analysed'; result: AnalysisResult }
  | { status: 'rejected'; result: AnalysisResult; error: WireError }
  | { status: 'failed'; error: WireError };

export type ThreadReply =
  | { type: 'ready'; card: Record<string, unknown>; threads: number; site?: SiteSummary }
  | { type: 'failed'; message: string }
  | { type: 'outcome'; id: number; outcome: WireOutcome };

function errorToWire(e: unknown): WireError {
  return isPneumoError(e)
    ? { pneumo: true, status: e.status, code: e.code, message: e.message, details: e.details }
    : { pneumo: false, message: e instanceof Error ? e.message : String(e), stack: e instanceof Error ? e.stack : undefined };
}

function errorFromWire(w: WireError): Error {
  return w.pneumo
    ? new PneumoError(w.code, w.message, w.details, w.status)
    : Object.assign(new Error(w.message), { stack: w.stack ?? w.message });
}

export function outcomeToWire(o: Outcome): WireOutcome {
  return o.status === 'analysed' ? o : { ...o, error: errorToWire(o.error) };
}

export function outcomeFromWire(w: WireOutcome): Outcome {
  if (w.status === 'analysed') return w;
  if (w.status === 'rejected') return { ...w, error: errorFromWire(w.error) as PneumoError };
  return { status: 'failed', error: errorFromWire(w.error) };
}

interface Job {
  id: number;
  bytes: Uint8Array;
  opts: AnalyseOptions;
  resolve(o: Outcome): void;
  reject(e: Error): void;
}

interface Slot {
  worker: Worker;
  job?: Job;
}

export interface WorkerEngineOptions {
  /** Model card path (default: $PNEUMOLENS_MODEL handling of Engine.load). */
  card?: string;
  /** Site profile path (Engine.load's `site`): refused at start-up if made with another model. */
  site?: string;
  /** ONNX Runtime threads per analysis. */
  threads: number;
  /** Worker threads, i.e. analyses that can run at once (capped at the number of cores). */
  workers: number;
}

const THREAD_URL = new URL('./engine-thread.mjs', import.meta.url);

export class WorkerEngine implements PredictEngine {
  private readonly slots: Slot[] = [];
  private readonly waiting: Job[] = [];
  private nextId = 1;
  private disposed = false;
  private recycled = 0;
  private expected = 0;
  /** Replacement workers being started. */
  private starting = 0;

  private constructor(
    readonly card: PredictEngine['card'] & Record<string, unknown>,
    readonly threads: number,
    private readonly opts: WorkerEngineOptions,
    readonly site?: SiteSummary,
  ) {}

  /** Starts the workers and resolves once each has loaded the model (rejects if one fails). */
  static async load(opts: WorkerEngineOptions): Promise<WorkerEngine> {
    const n = Math.max(1, Math.min(opts.workers, availableParallelism()));
    const started = await Promise.allSettled(Array.from({ length: n }, () => startWorker(opts)));
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    const ok = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    if (failed) {
      await Promise.all(ok.map((s) => s.worker.terminate()));
      throw failed.reason;
    }
    const engine = new WorkerEngine(ok[0].card as WorkerEngine['card'], ok[0].threads, opts, ok[0].site);
    engine.expected = ok.length;
    for (const s of ok) engine.adopt(s.worker);
    return engine;
  }

  get workers(): number {
    return this.slots.length;
  }

  /** The result of an analysed image; the outcome's error otherwise (as Engine.analyse, from the same Outcome). */
  async analyse(bytes: Uint8Array, opts: AnalyseOptions = {}, signal?: AbortSignal): Promise<AnalysisResult> {
    return unwrap(await this.outcome(bytes, opts, signal));
  }

  /**
   * The engine's outcome of one image, computed in a worker thread. When `signal` aborts (the
   * request's deadline), the analysis is stopped: a waiting job is dropped, a running one ends with
   * its worker, which is terminated (its memory returned, its codecs with it) and replaced; the
   * promise rejects with the signal's reason at once, so the compute slot is free.
   */
  outcome(bytes: Uint8Array, opts: AnalyseOptions = {}, signal?: AbortSignal): Promise<Outcome> {
    if (this.disposed) return Promise.reject(new PneumoError('busy', 'The server is shutting down.'));
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const job: Job = { id: this.nextId++, bytes, opts, resolve, reject };
      const onAbort = () => {
        const w = this.waiting.indexOf(job);
        if (w >= 0) this.waiting.splice(w, 1);
        const slot = this.slots.find((s) => s.job === job);
        if (slot) {
          slot.job = undefined;
          this.recycled++;
          this.slots.splice(this.slots.indexOf(slot), 1); // takes no job from now on
          void slot.worker.terminate(); // 'exit' starts its replacement
        }
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const done = () => signal?.removeEventListener('abort', onAbort);
      job.resolve = (o) => (done(), resolve(o));
      job.reject = (e) => (done(), reject(e));
      this.waiting.push(job);
      this.pump();
    });
  }

  /** Workers running now out of those started, and how many were recycled after a deadline (for /api/health). */
  health(): { workers: number; expected: number; recycled: number } {
    return { workers: this.slots.length, expected: this.expected, recycled: this.recycled };
  }

  async dispose(): Promise<void> {
    this.disposed = true;
    for (const job of this.waiting.splice(0)) job.reject(new PneumoError('busy', 'The server is shutting down.'));
    await Promise.all(
      this.slots.splice(0).map(
        (s) =>
          new Promise<void>((resolve) => {
            const force = setTimeout(() => void s.worker.terminate(), 5000);
            s.worker.once('exit', () => {
              clearTimeout(force);
              resolve();
            });
            s.worker.postMessage({ type: 'dispose' } satisfies ThreadRequest);
          }),
      ),
    );
  }

  private adopt(worker: Worker): void {
    const slot: Slot = { worker };
    this.slots.push(slot);
    worker.on('message', (m: ThreadReply) => {
      const job = slot.job;
      if (!job || m.type !== 'outcome' || m.id !== job.id) return;
      slot.job = undefined;
      job.resolve(outcomeFromWire(m.outcome));
      this.pump();
    });
    worker.on('error', () => undefined); // 'exit' follows
    worker.on('exit', () => {
      const i = this.slots.indexOf(slot);
      if (i >= 0) this.slots.splice(i, 1);
      slot.job?.reject(new Error('the engine worker stopped during the analysis'));
      slot.job = undefined;
      if (this.disposed) return;
      // Replace it; until then the other workers take the jobs (waiting jobs wait for the replacement).
      this.starting++;
      startWorker(this.opts).then(
        (s) => {
          this.starting--;
          if (this.disposed) void s.worker.terminate();
          else {
            this.adopt(s.worker);
            this.pump();
          }
        },
        () => {
          this.starting--;
          this.failWaitingIfNoWorker();
        },
      );
    });
  }

  private failWaitingIfNoWorker(): void {
    if (this.slots.length > 0 || this.starting > 0) return;
    for (const job of this.waiting.splice(0)) job.reject(new Error('no engine worker is running'));
  }

  private pump(): void {
    for (const slot of this.slots) {
      if (slot.job || this.waiting.length === 0) continue;
      const job = this.waiting.shift()!;
      slot.job = job;
      const bytes = new Uint8Array(job.bytes); // a copy of its own, moved to the worker (never a pooled buffer)
      slot.worker.postMessage({ type: 'analyse', id: job.id, bytes, opts: job.opts } satisfies ThreadRequest, [bytes.buffer]);
    }
  }
}

function startWorker(
  opts: WorkerEngineOptions,
): Promise<{ worker: Worker; card: Record<string, unknown>; threads: number; site?: SiteSummary }> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(THREAD_URL, { workerData: { card: opts.card, threads: opts.threads, site: opts.site } });
    const onExit = (code: number) => reject(new Error(`the engine worker exited (${code}) before loading the model`));
    worker.once('exit', onExit);
    worker.once('error', reject);
    worker.once('message', (m: ThreadReply) => {
      worker.off('exit', onExit);
      worker.off('error', reject);
      if (m.type === 'ready') resolve({ worker, card: m.card, threads: m.threads, site: m.site });
      else {
        void worker.terminate();
        reject(new Error(m.type === 'failed' ? m.message : 'unexpected message from the engine worker'));
      }
    });
  });
}
