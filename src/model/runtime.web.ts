/**
 * The inference runtime of the browser build: onnxruntime-web, WebAssembly with SIMD (the only
 * WASM build it ships), multi-threaded when the page is cross-origin isolated (COOP + COEP, which
 * `pneumolens serve` sends), one thread otherwise. scripts/build-web.ts puts this module in place
 * of ./runtime.ts, so src/model/session.ts and everything after it are the Node engine's code.
 */
import * as ort from 'onnxruntime-web/wasm';
import type { OrtRuntime, RuntimeSession } from './runtime-api.ts';

/** Set by the page before the first session: where ort-wasm-simd-threaded.{mjs,wasm} are. */
export function configureWasm(wasmBase: string): void {
  ort.env.wasm.wasmPaths = wasmBase;
  ort.env.wasm.proxy = false;
}

/**
 * Threads need SharedArrayBuffer, which browsers give only to a cross-origin isolated page (COOP:
 * same-origin + COEP: require-corp). A browser started with SharedArrayBuffer forced on (as the
 * Chromium of the tests is, with site isolation off, so crossOriginIsolated reads false) has it too.
 */
export const threadsAvailable = (): boolean => globalThis.crossOriginIsolated === true || typeof SharedArrayBuffer === 'function';

/** The threads the WASM runtime was started with (it cannot change them afterwards); 0 before. */
let started = 0;

export const runtime: OrtRuntime = {
  get name() {
    return `onnxruntime-web ${ort.env.versions.web ?? ''} (wasm simd, ${started || 'no'} thread${started === 1 ? '' : 's'})`;
  },
  defaultThreads: () => (threadsAvailable() ? Math.max(1, Math.min(8, navigator.hardwareConcurrency || 1)) : 1),
  async createSession(model, threads) {
    if (threads > 1 && !threadsAvailable()) {
      throw new Error(`${threads} threads need a cross-origin isolated page (COOP: same-origin, COEP: require-corp); this one is not.`);
    }
    if (started === 0) ort.env.wasm.numThreads = started = threads;
    else if (threads !== started) throw new Error(`the WASM runtime already runs with ${started} threads; reload the page for ${threads}.`);
    const options: ort.InferenceSession.SessionOptions = { executionProviders: ['wasm'], graphOptimizationLevel: 'all' };
    const session =
      typeof model === 'string' ? await ort.InferenceSession.create(model, options) : await ort.InferenceSession.create(model, options);
    return session as unknown as RuntimeSession;
  },
  float32: (data, dims) => new ort.Tensor('float32', data, dims),
};
