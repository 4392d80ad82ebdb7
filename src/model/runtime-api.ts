/**
 * What the session needs of an inference runtime, in one module that imports nothing, so that
 * ./session.ts and the two runtimes it may be given (./runtime.ts, onnxruntime-node; ./runtime.web.ts,
 * onnxruntime-web) all point down to it instead of at each other.
 */

/** A tensor as both runtimes return it (onnxruntime-common's Tensor has these). */
export interface RuntimeTensor {
  readonly data: ArrayLike<unknown>;
  readonly dims: readonly number[];
}

/** The part of an onnxruntime InferenceSession this module uses (same in onnxruntime-node and -web). */
export interface RuntimeSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly inputMetadata?: ReadonlyArray<
    | { readonly name: string; readonly isTensor: true; readonly shape: ReadonlyArray<number | string> }
    | { readonly name: string; readonly isTensor: false }
  >;
  run(feeds: Record<string, RuntimeTensor>, fetches: string[]): Promise<Record<string, RuntimeTensor>>;
  release(): Promise<void>;
}

/** An inference runtime: onnxruntime-node (./runtime.ts) or onnxruntime-web (./runtime.web.ts). */
export interface OrtRuntime {
  /** For messages and benchmarks, e.g. "onnxruntime-node" or "onnxruntime-web (wasm, 4 threads)". */
  readonly name: string;
  /** Threads when the caller does not say (Node: the number of cores; browser: see runtime.web.ts). */
  defaultThreads(): number;
  /** A session for the ONNX file at `model` (a path, or a URL in a browser) or its bytes. */
  createSession(model: string | Uint8Array, threads: number): Promise<RuntimeSession>;
  float32(data: Float32Array, dims: readonly number[]): RuntimeTensor;
}
