/**
 * Bounded concurrency with a bounded queue, for analyses.
 *
 * A request is *admitted* (it gets a ticket, or a 503 'busy' straight away when
 * maxConcurrent + maxQueue tickets are already out) only once its image is complete, uploaded or
 * fetched: a slow or stalled client never holds a ticket (bodies in transit are bounded separately,
 * see uploads.ts). Then it *runs* once one of the maxConcurrent slots is free. A ticket ends when
 * its work settles (not when the client gives up: an inference that cannot be cancelled keeps its
 * slot until it is done), or with release() if it never ran. So `admitted` is exactly the work
 * waiting or running, and Retry-After is its measured drain time.
 */
import { PneumoError } from '../errors.ts';

export interface LimiterOptions {
  maxConcurrent: number;
  maxQueue: number;
}

export interface LimiterStats {
  active: number;
  queued: number;
  admitted: number;
  maxConcurrent: number;
  maxQueue: number;
}

export interface Ticket {
  /** Waits for a slot (unless the signal aborts first), runs fn, then ends the ticket. */
  run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T>;
  /** Ends a ticket that will not run. Idempotent; a no-op once run() was called. */
  release(): void;
}

export class Limiter {
  readonly maxConcurrent: number;
  readonly maxQueue: number;
  private admitted = 0;
  private active = 0;
  private readonly waiting: Array<() => void> = [];
  private idleWaiters: Array<() => void> = [];
  /** Exponential moving average of run times, for the Retry-After estimate. */
  private avgRunMs = 1000;

  constructor(opts: LimiterOptions) {
    if (!Number.isInteger(opts.maxConcurrent) || opts.maxConcurrent < 1) {
      throw new Error(`maxConcurrent must be an integer >= 1, got ${opts.maxConcurrent}`);
    }
    if (!Number.isInteger(opts.maxQueue) || opts.maxQueue < 0) {
      throw new Error(`maxQueue must be an integer >= 0, got ${opts.maxQueue}`);
    }
    this.maxConcurrent = opts.maxConcurrent;
    this.maxQueue = opts.maxQueue;
  }

  stats(): LimiterStats {
    return {
      active: this.active,
      queued: this.waiting.length,
      admitted: this.admitted,
      maxConcurrent: this.maxConcurrent,
      maxQueue: this.maxQueue,
    };
  }

  /** Seconds a client should wait before retrying, from the current load (at least 1). */
  retryAfterSeconds(): number {
    const rounds = Math.ceil(this.admitted / this.maxConcurrent);
    return Math.max(1, Math.ceil((rounds * this.avgRunMs) / 1000));
  }

  private busyError(): PneumoError {
    return new PneumoError('busy', 'The server is busy analysing other images. Please retry shortly.', {
      retry_after_s: this.retryAfterSeconds(),
    });
  }

  /** Throws 503 'busy' when a ticket could not be had now (checked before reading a body, to save the upload). */
  refuseIfFull(): void {
    if (this.admitted >= this.maxConcurrent + this.maxQueue) throw this.busyError();
  }

  /** Takes a ticket or throws PneumoError 503 'busy'. */
  admit(): Ticket {
    this.refuseIfFull();
    this.admitted++;
    let state: 'admitted' | 'running' | 'done' = 'admitted';
    const end = () => {
      if (state === 'done') return;
      state = 'done';
      this.admitted--;
      if (this.admitted === 0) {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const w of waiters) w();
      }
    };
    return {
      release: () => {
        if (state === 'admitted') end();
      },
      run: async <T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> => {
        if (state !== 'admitted') throw new Error('ticket already used');
        state = 'running';
        try {
          await this.acquireSlot(signal);
        } catch (e) {
          end();
          throw e;
        }
        const t0 = performance.now();
        try {
          return await fn();
        } finally {
          this.avgRunMs = 0.8 * this.avgRunMs + 0.2 * (performance.now() - t0);
          this.active--;
          end();
          this.waiting.shift()?.();
        }
      },
    };
  }

  /** Resolves once no ticket is out (every admitted piece of work has settled). */
  idle(): Promise<void> {
    if (this.admitted === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** admit() and run() in one go. */
  run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    return this.admit().run(fn, signal);
  }

  private acquireSlot(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.active < this.maxConcurrent && this.waiting.length === 0) {
      this.active++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const wake = () => {
        signal?.removeEventListener('abort', onAbort);
        this.active++;
        resolve();
      };
      const onAbort = () => {
        const i = this.waiting.indexOf(wake);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(wake);
    });
  }
}
