/**
 * The engine as the server sees it: loading (health answers 503 until the promise resolves),
 * ready, failed to load, or shutting down (from Fastify's preClose on).
 */
import { PneumoError } from '../errors.ts';
import type { SiteSummary } from '../site/profile.ts';
import type { AnalyseOptions, AnalysisResult } from '../types.ts';

/** What the server needs from the engine (the real Engine of src/pipeline.ts has these). */
export interface PredictEngine {
  readonly card: { readonly name: string; readonly version: string };
  /** The site profile the engine decides with (src/site), if any: named in every answer and in /api/model. */
  readonly site?: SiteSummary;
  /** `signal` aborts at the request's deadline: an engine that can stop the work (WorkerEngine) does. */
  analyse(bytes: Uint8Array, opts?: AnalyseOptions, signal?: AbortSignal): Promise<AnalysisResult>;
  /** Workers running out of those started, and recycled after a deadline (WorkerEngine); shown by /api/health. */
  health?(): { workers: number; expected: number; recycled: number };
}

type State =
  | { status: 'loading' }
  | { status: 'ok'; engine: PredictEngine }
  | { status: 'failed' }
  | { status: 'shutting_down'; engine?: PredictEngine };

export type EngineStatus = State['status'];

export class EngineState {
  private state: State = { status: 'loading' };

  /** `onFailed` hears why the engine's promise rejected (the app logs it). */
  constructor(engine: PredictEngine | Promise<PredictEngine>, onFailed: (err: unknown) => void) {
    Promise.resolve(engine).then(
      (e) => {
        if (this.state.status === 'loading') this.state = { status: 'ok', engine: e };
      },
      (err: unknown) => {
        this.state = { status: 'failed' };
        onFailed(err);
      },
    );
  }

  get status(): EngineStatus {
    return this.state.status;
  }

  /** The engine while it is ready to analyse, else undefined. */
  get engine(): PredictEngine | undefined {
    return this.state.status === 'ok' ? this.state.engine : undefined;
  }

  /** The engine, or 503 'busy' with why there is none (loading, shutting down, failed). */
  ready(): PredictEngine {
    if (this.state.status === 'ok') return this.state.engine;
    const message =
      this.state.status === 'loading'
        ? 'The model is still loading. Please retry shortly.'
        : this.state.status === 'shutting_down'
          ? 'The server is shutting down.'
          : 'The model is not available (it failed to load; see the server log).';
    throw new PneumoError('busy', message, { retry_after_s: this.state.status === 'loading' ? 2 : 10 });
  }

  shutDown(): void {
    this.state = { status: 'shutting_down', engine: this.engine };
  }
}
