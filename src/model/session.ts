/**
 * Stage 3, infer: one InferenceSession per model, checked against its card on load (names, input
 * size, the closed-form Grad-CAM head); everything outside sees plain Float32Arrays.
 *
 * The inference runtime is not imported here: it is the `OrtRuntime` of ./runtime.ts
 * (onnxruntime-node), the only module that imports it. The browser build (scripts/build-web.ts)
 * swaps that one module for ./runtime.web.ts (onnxruntime-web, WASM); everything in this file is
 * the same on both. A caller may also inject a runtime (`SessionOptions.runtime`).
 */
import type { ModelCard } from './card.ts';
import { runtime as defaultRuntime } from './runtime.ts';
import type { OrtRuntime, RuntimeSession } from './runtime-api.ts';

export type { OrtRuntime, RuntimeSession, RuntimeTensor } from './runtime-api.ts';

export interface InferenceOutput {
  /** One raw logit per item, before temperature scaling. */
  logit: Float32Array;
  /** CAM-layer activations, [n, C, h, w] flattened. */
  features: Float32Array;
  featureShape: [number, number, number];
  /** Out-of-distribution (gate) score per item, when the model has that output. */
  ood?: Float32Array;
  /** Intended-use score per item (above card.gate.intended_use.threshold = outside), when the model has it. */
  scope?: Float32Array;
  /** Ensemble members' raw logits, [n, M] flattened, when the model has that output. */
  members?: Float32Array;
  /** M, the number of members (0 without that output). */
  memberCount: number;
}

/** Graph output names of the optional gate score and ensemble members (card outputs or blocks). */
export function optionalOutputs(card: ModelCard): { ood?: string; scope?: string; members?: string } {
  const ood = card.outputs.ood ?? card.gate?.output;
  const scope = card.gate?.intended_use?.output;
  const members = card.outputs.members ?? card.uncertainty?.output;
  return { ...(ood ? { ood } : {}), ...(scope ? { scope } : {}), ...(members ? { members } : {}) };
}

export interface SessionOptions {
  /** Intra-op threads (default: the runtime's, the number of cores on Node). */
  threads?: number;
  /** The inference runtime (default: ./runtime.ts, which the browser build replaces). */
  runtime?: OrtRuntime;
}

/** Tolerance of the head check: |sum_k w_k mean(A_k) + b - logit|. */
export const HEAD_TOLERANCE = 1e-3;

/** The logit the card's closed-form head gives for one item's features [C, h, w]. */
export function headLogit(
  features: Float32Array,
  shape: readonly [number, number, number],
  weights: readonly number[],
  bias: number,
): number {
  const [C, h, w] = shape;
  const hw = h * w;
  let logit = bias;
  for (let k = 0; k < C; k++) {
    let sum = 0;
    for (let i = k * hw; i < (k + 1) * hw; i++) sum += features[i];
    logit += weights[k] * (sum / hw);
  }
  return logit;
}

/** Deterministic pseudo-random input in the normalised range, for load-time checks. */
function probeInput(length: number): Float32Array {
  const x = new Float32Array(length);
  let s = 12345;
  for (let i = 0; i < length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    x[i] = (s / 2 ** 32) * 4 - 2;
  }
  return x;
}

export class ModelSession {
  private session: RuntimeSession | null;

  private constructor(
    session: RuntimeSession,
    readonly card: ModelCard,
    readonly threads: number,
    private readonly runtime: OrtRuntime,
  ) {
    this.session = session;
  }

  /** The runtime's name, e.g. "onnxruntime-node". */
  get runtimeName(): string {
    return this.runtime.name;
  }

  /**
   * Creates the session for `model` (a path, a URL in a browser, or the ONNX bytes), then checks it
   * against the card (throws on mismatch).
   */
  static async create(model: string | Uint8Array, card: ModelCard, opts: SessionOptions = {}): Promise<ModelSession> {
    const runtime = opts.runtime ?? defaultRuntime;
    const threads = opts.threads ?? runtime.defaultThreads();
    if (!Number.isInteger(threads) || threads < 1) throw new Error(`threads must be a positive integer (got ${threads})`);
    const session = await runtime.createSession(model, threads);
    const modelSession = new ModelSession(session, card, threads, runtime);
    try {
      modelSession.checkSignature();
      await modelSession.checkHead();
    } catch (e) {
      await modelSession.dispose();
      throw e;
    }
    return modelSession;
  }

  private get live(): RuntimeSession {
    if (!this.session) throw new Error('The model session has been disposed.');
    return this.session;
  }

  /** The graph's input/output names (and input size, where static) must be the card's. */
  private checkSignature(): void {
    const s = this.live;
    const { input, outputs } = this.card;
    const where = `model ${this.card.name} (${this.card.file})`;
    if (!s.inputNames.includes(input.name)) {
      throw new Error(`${where}: card input "${input.name}" is not a graph input (graph has ${s.inputNames.join(', ')}).`);
    }
    for (const [role, name] of Object.entries({ ...outputs, ...optionalOutputs(this.card) })) {
      if (name && !s.outputNames.includes(name)) {
        throw new Error(`${where}: card output ${role}="${name}" is not a graph output (graph has ${s.outputNames.join(', ')}).`);
      }
    }
    const meta = s.inputMetadata?.find((m) => m.name === input.name);
    if (meta?.isTensor && meta.shape.length === 4) {
      const [, c, h, w] = meta.shape;
      const expect = [input.channels, input.height, input.width];
      [c, h, w].forEach((d, i) => {
        if (typeof d === 'number' && d !== expect[i]) {
          throw new Error(
            `${where}: graph input shape [${meta.shape.join(', ')}] disagrees with the card's [batch, ${expect.join(', ')}].`,
          );
        }
      });
    }
  }

  /** Runs a probe input and checks that the card's closed-form head reproduces the logit. */
  private async checkHead(): Promise<void> {
    const { input, gradcam } = this.card;
    const out = await this.run(probeInput(input.height * input.width), 1);
    const [C] = out.featureShape;
    if (gradcam.weights.length !== C) {
      throw new Error(
        `model ${this.card.name}: gradcam.weights has ${gradcam.weights.length} entries but "${this.card.outputs.features}" has ${C} channels.`,
      );
    }
    const expected = headLogit(out.features, out.featureShape, gradcam.weights, gradcam.bias);
    const diff = Math.abs(expected - out.logit[0]);
    if (!(diff < HEAD_TOLERANCE)) {
      throw new Error(
        `model ${this.card.name}: the card's Grad-CAM head gives ${expected} but the graph's logit is ${out.logit[0]} (|diff| ${diff} >= ${HEAD_TOLERANCE}); weights/bias do not match the model.`,
      );
    }
  }

  /** Runs a batch of n preprocessed inputs, laid out [n, 1, H, W]. */
  async run(batch: Float32Array, n: number): Promise<InferenceOutput> {
    const { input, outputs } = this.card;
    const { height: H, width: W } = input;
    if (!Number.isInteger(n) || n < 1 || batch.length !== n * H * W) {
      throw new Error(`run: expected ${n} x 1 x ${H} x ${W} = ${n * H * W} values, got ${batch.length}`);
    }
    const extra = optionalOutputs(this.card);
    const fetches = [
      outputs.logit,
      outputs.features,
      ...(extra.ood ? [extra.ood] : []),
      ...(extra.scope ? [extra.scope] : []),
      ...(extra.members ? [extra.members] : []),
    ];
    const feeds = { [input.name]: this.runtime.float32(batch, [n, 1, H, W]) };
    const result = await this.live.run(feeds, fetches);
    const logit = result[outputs.logit];
    const features = result[outputs.features];
    if (logit.data.length !== n) throw new Error(`model output "${outputs.logit}" has ${logit.data.length} values for a batch of ${n}`);
    if (features.dims.length !== 4 || features.dims[0] !== n) {
      throw new Error(`model output "${outputs.features}" has shape [${features.dims.join(', ')}], expected [${n}, C, h, w]`);
    }
    const [, C, h, w] = features.dims;
    const ood = extra.ood ? (result[extra.ood].data as Float32Array) : undefined;
    if (ood && ood.length !== n) throw new Error(`model output "${extra.ood}" has ${ood.length} values for a batch of ${n}`);
    const scope = extra.scope ? (result[extra.scope].data as Float32Array) : undefined;
    if (scope && scope.length !== n) throw new Error(`model output "${extra.scope}" has ${scope.length} values for a batch of ${n}`);
    const m = extra.members ? result[extra.members] : undefined;
    if (m && (m.dims.length !== 2 || m.dims[0] !== n || m.dims[1] < 1)) {
      throw new Error(`model output "${extra.members}" has shape [${m.dims.join(', ')}], expected [${n}, M]`);
    }
    return {
      logit: logit.data as Float32Array,
      features: features.data as Float32Array,
      featureShape: [C, h, w],
      ...(ood ? { ood } : {}),
      ...(scope ? { scope } : {}),
      ...(m ? { members: m.data as Float32Array } : {}),
      memberCount: m ? m.dims[1] : 0,
    };
  }

  get disposed(): boolean {
    return this.session === null;
  }

  /** Releases the native session; later calls to run() throw. Safe to call twice. */
  async dispose(): Promise<void> {
    const s = this.session;
    this.session = null;
    if (s) await s.release();
  }
}
