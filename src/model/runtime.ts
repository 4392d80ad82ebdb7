/**
 * The inference runtime of the Node engine: the only module that imports onnxruntime-node.
 * src/model/session.ts uses it through the OrtRuntime interface; the browser build replaces this
 * module with ./runtime.web.ts (onnxruntime-web), so the rest of the engine is the same code.
 *
 * `runtime` (the default) holds each session in a worker thread of its own (./runtime-thread.mjs):
 * onnxruntime-node runs `session.run` synchronously on the calling thread, so run inline the model
 * and the engine's JavaScript (gray, the gate's checks, preprocessing of the next batch, the last
 * batch's Grad-CAM) took turns; in a thread of its own the model runs while they do. `inlineRuntime`
 * is the same session on the calling thread (`npm run bench -- --inline` compares the two).
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import type { OrtRuntime, RuntimeSession, RuntimeTensor } from './runtime-api.ts';

// Nothing leaves the machine: onnxruntime 1.30 has an HTTPS telemetry path, which it reads this
// variable to turn off when it creates its environment (the first session). Set here, in the one
// module that uses it, before any session exists (worker threads share the process environment);
// a user's own value is kept.
process.env.ORT_DISABLE_TELEMETRY ??= '1';

function sessionOptions(threads: number): ort.InferenceSession.SessionOptions {
  return {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    // No busy-waiting of the intra-op threads between and inside runs: on a machine whose cores
    // are shared (decoding, Grad-CAM, the HTTP server, other processes) a spinning thread burns a
    // core that the rest of the pipeline needs. Measured on 2 shared cores, batch 8: 16.4 -> 9.3-11.7
    // CPU ms per image for the same model run (README "Benchmarks").
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  };
}

const float32 = (data: Float32Array, dims: readonly number[]): RuntimeTensor => new ort.Tensor('float32', data, dims);

/** The session on the calling thread. */
export const inlineRuntime: OrtRuntime = {
  name: 'onnxruntime-node (inline)',
  defaultThreads: () => availableParallelism(),
  async createSession(model, threads) {
    const options = sessionOptions(threads);
    const session =
      typeof model === 'string' ? await ort.InferenceSession.create(model, options) : await ort.InferenceSession.create(model, options);
    return session as unknown as RuntimeSession;
  },
  float32,
};

type Reply =
  | { type: 'ready'; inputNames: string[]; outputNames: string[]; inputMetadata: RuntimeSession['inputMetadata'] }
  | { type: 'failed'; message: string }
  | { type: 'result'; id: number; outputs: Record<string, { data: Float32Array; dims: number[] }> }
  | { type: 'error'; id: number; message: string }
  | { type: 'released' };

interface Pending {
  resolve: (out: Record<string, RuntimeTensor>) => void;
  reject: (e: Error) => void;
}

/**
 * A session in a worker thread. The thread keeps the process alive only while a call is pending,
 * so a program that never disposes its engine still exits; if the thread dies, every pending and
 * later call fails with its reason.
 */
class ThreadSession implements RuntimeSession {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private dead: Error | null = null;
  private releasing: Promise<void> | null = null;

  private constructor(
    private readonly worker: Worker,
    readonly inputNames: readonly string[],
    readonly outputNames: readonly string[],
    readonly inputMetadata: RuntimeSession['inputMetadata'],
  ) {
    worker.on('message', (m: Reply) => {
      if (m.type !== 'result' && m.type !== 'error') return;
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      this.idle();
      if (!p) return;
      if (m.type === 'error') p.reject(new Error(m.message));
      else p.resolve(m.outputs);
    });
    const die = (e: Error): void => {
      this.dead ??= e;
      for (const p of this.pending.values()) p.reject(this.dead);
      this.pending.clear();
    };
    worker.on('error', die);
    worker.on('exit', (code) => die(new Error(`the inference thread exited (code ${code})`)));
  }

  static async create(model: string | Uint8Array, threads: number): Promise<ThreadSession> {
    const worker = new Worker(new URL('./runtime-thread.mjs', import.meta.url), {
      workerData: { model, options: sessionOptions(threads) },
    });
    let onMessage!: (m: Reply) => void;
    let onError!: (e: Error) => void;
    let onExit!: (code: number) => void;
    const ready = await new Promise<Reply>((resolve, reject) => {
      onMessage = resolve;
      onError = reject;
      onExit = (code) => reject(new Error(`the inference thread exited (code ${code}) before its session was ready`));
      worker.once('message', onMessage).once('error', onError).once('exit', onExit);
    }).finally(() => worker.off('message', onMessage).off('error', onError).off('exit', onExit));
    if (ready.type !== 'ready') {
      await worker.terminate();
      throw new Error(ready.type === 'failed' ? ready.message : `unexpected reply ${ready.type} from the inference thread`);
    }
    worker.unref();
    return new ThreadSession(worker, ready.inputNames, ready.outputNames, ready.inputMetadata);
  }

  private idle(): void {
    if (this.pending.size === 0) this.worker.unref();
  }

  run(feeds: Record<string, RuntimeTensor>, fetches: string[]): Promise<Record<string, RuntimeTensor>> {
    if (this.releasing) return Promise.reject(new Error('The session has been released.'));
    if (this.dead) return Promise.reject(this.dead);
    const plain: Record<string, { data: ArrayLike<unknown>; dims: readonly number[] }> = {};
    for (const [name, t] of Object.entries(feeds)) plain[name] = { data: t.data, dims: [...t.dims] };
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.ref();
      this.worker.postMessage({ type: 'run', id, feeds: plain, fetches });
    });
  }

  release(): Promise<void> {
    this.releasing ??= (async () => {
      if (!this.dead) {
        this.worker.ref();
        await new Promise<void>((resolve) => {
          this.worker.on('message', (m: Reply) => m.type === 'released' && resolve());
          this.worker.once('exit', () => resolve());
          this.worker.postMessage({ type: 'release' });
        });
      }
      await this.worker.terminate();
    })();
    return this.releasing;
  }
}

/** Each session in a worker thread of its own (the default of the Node engine). */
export const runtime: OrtRuntime = {
  name: 'onnxruntime-node',
  defaultThreads: () => availableParallelism(),
  createSession: (model, threads) => ThreadSession.create(model, threads),
  // a plain tensor: it is cloned to the thread, not handed to onnxruntime on this one
  float32: (data, dims) => ({ data, dims: [...dims] }),
};
