/**
 * The one path every front end uses: decode -> preprocess -> infer -> explain -> postprocess.
 * Thin on purpose: each stage lives in its own module with a typed input and output.
 */
import { PneumoError } from './errors.ts';
import { gradCam } from './explain/gradcam.ts';
import { gateDecision, OUTSIDE_INTENDED_USE, type GateResult } from './gate/gate.ts';
import { checkImage, type ImageCheckResult } from './gate/image-checks.ts';
import { UNCERTAIN_WARNING, uncertaintyOf } from './gate/uncertainty.ts';
import { overlayBase, renderCam, resolveOverlayOptions, type GrayBase, type RenderOptions } from './explain/overlay.ts';
import { decodeImage, type DecodeOptions } from './image/decode.ts';
import { loadCard, verifyModelHash, type LoadedCard } from './model/card.ts';
import { checkThreshold, postprocess } from './model/postprocess.ts';
import { grayOf } from './image/raw.ts';
import { preprocess } from './model/preprocess.ts';
import { ModelSession, type InferenceOutput, type OrtRuntime } from './model/session.ts';
import { DICOM_WARNING } from './image/dicom-scope.ts';
import { applySite, outsideSiteMessage } from './site/apply.ts';
import { checkProfileFor, readProfile, siteSummary, type SiteProfile, type SiteSummary } from './site/profile.ts';
import type { AnalyseOptions, AnalysisResult, DecodedImage, Outcome } from './types.ts';

/** An input of the engine: bytes, or a function that reads them (called when its batch is prepared). */
export type Source = Uint8Array | (() => Promise<Uint8Array>);

export interface EngineOptions {
  /** Path to a model card (default: $PNEUMOLENS_MODEL, else models/MODEL). */
  card?: string;
  /** ONNX Runtime intra-op threads (default: number of cores). */
  threads?: number;
  /** Largest batch sent to the model at once (default 16; `analyseStream` can override it per call). */
  maxBatch?: number;
  /** Decoder limits (max pixels, min side). */
  decode?: DecodeOptions;
  /** Check the ONNX file's SHA-256 against the card on load (default true). */
  verifyHash?: boolean;
  /** A site profile (src/site) to decide with: its calibration, threshold and scope replace the card's; refused if made with another model. */
  site?: string;
  /** The inference runtime (default: src/model/runtime.ts's, the session in a thread of its own). */
  runtime?: OrtRuntime;
}

interface Inferred {
  output: InferenceOutput;
  /** Index of the image in the batch. */
  k: number;
  /** Wall time of the batch's model run, ms. */
  infer: number;
}

interface FinishInput extends Inferred {
  prepared: Prepared;
  opts: ResolvedOptions;
}

/**
 * AnalyseOptions resolved once, at the start of a stream: checked (a bad value throws a 400
 * PneumoError before anything runs) and completed with the defaults, so the stages trust them.
 */
export interface ResolvedOptions {
  /** The overlay's settings, or null when no Grad-CAM is wanted. */
  cam: RenderOptions | null;
  /** The decision threshold: the caller's, else the applied card's (a site profile's, or the card's). */
  threshold: number;
  force: boolean;
}

/** Checks and completes the caller's options (see ResolvedOptions); `threshold` is the applied card's default. */
export function resolveOptions(opts: AnalyseOptions, threshold: number): ResolvedOptions {
  const cam =
    (opts.cam ?? true)
      ? {
          ...resolveOverlayOptions({ colormap: opts.colormap, alpha: opts.alpha }),
          heatmap: opts.heatmap ?? true,
          rgb: opts.overlayRgb ?? false,
        }
      : null;
  return { cam, threshold: opts.threshold === undefined ? threshold : checkThreshold(opts.threshold), force: opts.force ?? false };
}

interface Prepared {
  decoded: DecodedImage;
  /** The image's gray_bt601, computed once: the gate's checks, preprocessing and the overlay read it. */
  gray: Float32Array;
  checks: ImageCheckResult;
  input: Float32Array;
  timings: { decode: number; preprocess: number };
  /** The overlay's gray base (overlayBase), when Grad-CAM is wanted: resized in the thread pool while the model runs. */
  base?: Promise<GrayBase>;
}

const since = (t0: number) => performance.now() - t0;

/** Warnings a user should see about how the image was read. */
function warningsFor(decoded: DecodedImage, inputW: number, inputH: number): string[] {
  const { image, notes } = decoded;
  const warnings = notes.filter((n) => /first frame/.test(n) || n.startsWith(DICOM_WARNING));
  if (image.channels === 2 || image.channels === 4) warnings.push('The image has transparency; it was composited onto black.');
  if (image.width < inputW || image.height < inputH) {
    warnings.push(`The image (${image.width}x${image.height}) is smaller than the model input (${inputW}x${inputH}) and was upscaled.`);
  }
  const ratio = image.width / image.height;
  if (ratio > 2 || ratio < 0.5) warnings.push(`Unusual aspect ratio ${image.width}x${image.height}; chest X-rays are roughly square.`);
  return warnings;
}

export class Engine {
  /** The card the engine decides with: the card, with the site profile's calibration, threshold and scope when one is loaded. */
  readonly applied: LoadedCard;
  /** What every answer under the profile carries; undefined without one. */
  readonly site?: SiteSummary;

  private constructor(
    readonly card: LoadedCard,
    private readonly session: ModelSession,
    private readonly opts: EngineOptions,
    readonly profile?: SiteProfile & { path: string },
  ) {
    this.applied = applySite(card, profile);
    if (profile) this.site = siteSummary(profile);
  }

  /** Loads and validates the card, verifies the ONNX file and creates the inference session. */
  static async load(opts: EngineOptions = {}): Promise<Engine> {
    if (opts.maxBatch !== undefined && !(Number.isInteger(opts.maxBatch) && opts.maxBatch >= 1)) {
      throw new Error(`maxBatch must be a positive integer (got ${opts.maxBatch})`);
    }
    const card = loadCard(opts.card);
    const profile = opts.site === undefined ? undefined : readProfile(opts.site);
    if (profile) checkProfileFor(profile, card, profile.path);
    if (opts.verifyHash ?? true) await verifyModelHash(card);
    const session = await ModelSession.create(card.modelPath, card, {
      ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
      ...(opts.runtime ? { runtime: opts.runtime } : {}),
    });
    return new Engine(card, session, opts, profile);
  }

  /**
   * An engine over a validated card and a session created elsewhere: the browser build
   * (src/web/device.ts), which fetches both and checks the model's hash itself. No site profile.
   */
  static fromSession(card: LoadedCard, session: ModelSession, opts: EngineOptions = {}): Engine {
    if (session.card !== card) throw new Error('fromSession: the session was created for another card');
    return new Engine(card, session, opts);
  }

  get threads(): number {
    return this.session.threads;
  }

  /** The inference runtime's name, e.g. "onnxruntime-node" (for benchmarks and `info`). */
  get runtimeName(): string {
    return this.session.runtimeName;
  }

  get disposed(): boolean {
    return this.session.disposed;
  }

  /**
   * Analyses one image, over `analyseStream`: the result of an analysed image; throws the outcome's
   * error otherwise (PneumoError for user-facing problems, 422 not_a_chest_xray /
   * outside_intended_use when the input gate rejects the image and `opts.force` is not set).
   * A front end that needs the outcome itself (a rejected image's result) reads the stream.
   */
  async analyse(source: Source, opts: AnalyseOptions = {}): Promise<AnalysisResult> {
    const [outcome] = await collect(this.analyseStream([source], opts));
    return unwrap(outcome);
  }

  /** Releases the inference session; the engine cannot be used afterwards. */
  async dispose(): Promise<void> {
    await this.session.dispose();
  }

  /**
   * The one path of every front end. Yields the outcomes of each batch, in input order: every
   * input is analysed, rejected by the input gate (with its 422 error; `opts.force` analyses it
   * anyway, flagged `rejected: true` with a warning) or failed (its error; a source that cannot be
   * read fails alone). Invalid options throw before anything runs. The next batch is read, decoded
   * and preprocessed while the model runs the current one, and run while the current one's results
   * (Grad-CAM, PNGs) are made, so at most two batches of decoded images are held at once.
   */
  async *analyseStream(items: Source[], opts: AnalyseOptions = {}, batchSize = this.opts.maxBatch ?? 16): AsyncGenerator<Outcome[]> {
    if (!(Number.isInteger(batchSize) && batchSize >= 1)) throw new Error(`batchSize must be a positive integer (got ${batchSize})`);
    const resolved = resolveOptions(opts, this.applied.postprocessing.threshold);
    const prepareChunk = (start: number): Promise<Array<Prepared | Error>> =>
      Promise.all(items.slice(start, start + batchSize).map((s) => this.prepare(s, resolved.cam).catch(toError)));
    // A chunk is inferred as soon as it is prepared: the model (in its own thread, src/model/runtime.ts)
    // runs chunk k+1 while this thread finishes chunk k, and chunk k+1 is decoded while chunk k runs.
    // Runs are chained (one at a time), so each image's timings.infer_ms is its batch's run alone.
    let lastRun: Promise<unknown> = Promise.resolve();
    const stage = (start: number) => {
      const prepared = prepareChunk(start);
      const inferred = Promise.all([prepared, lastRun]).then(([p]) => this.inferChunk(p));
      lastRun = inferred;
      return { prepared, inferred };
    };
    let cur = items.length > 0 ? stage(0) : null;
    for (let start = 0; start < items.length; start += batchSize) {
      const prepared = await cur!.prepared;
      const inferring = cur!.inferred;
      cur = start + batchSize < items.length ? stage(start + batchSize) : null;
      const { ok, inferred } = await inferring;
      // The batch's images are finished together: one image's PNGs are encoded in the thread pool
      // while the next image's Grad-CAM is drawn on this thread.
      const out: Outcome[] = await Promise.all(
        prepared.map((p) => {
          const inf = p instanceof Error ? p : inferred[ok.indexOf(p)];
          if (inf instanceof Error) return { status: 'failed', error: inf } satisfies Outcome;
          return this.finish({ prepared: p as Prepared, ...inf, opts: resolved }).catch((e: unknown) => failed(e));
        }),
      );
      yield out;
    }
  }

  /** The prepared images of a chunk through the model; a failure of the whole batch is isolated by running its images one at a time. */
  private async inferChunk(prepared: Array<Prepared | Error>): Promise<{ ok: Prepared[]; inferred: Array<Inferred | Error> }> {
    const ok = prepared.filter((p): p is Prepared => !(p instanceof Error));
    if (ok.length === 0) return { ok, inferred: [] };
    const inferred = await this.infer(ok).catch(async () => {
      const alone: Array<Inferred | Error> = [];
      for (const p of ok) alone.push(...(await this.infer([p]).catch((e: unknown) => [toError(e)])));
      return alone;
    });
    return { ok, inferred };
  }

  /** One model run over a batch: for each image its output and the batch's wall time. */
  private async infer(ok: Prepared[]): Promise<Inferred[]> {
    const { height: H, width: W } = this.card.input;
    const batch = new Float32Array(ok.length * H * W);
    ok.forEach((p, k) => batch.set(p.input, k * H * W));
    const t0 = performance.now();
    const output = await this.session.run(batch, ok.length);
    const infer = since(t0);
    return ok.map((_, k) => ({ output, k, infer }));
  }

  private async prepare(source: Source, cam: RenderOptions | null): Promise<Prepared> {
    const bytes = typeof source === 'function' ? await source() : source;
    let t0 = performance.now();
    const decoded = await decodeImage(bytes, this.opts.decode);
    const decode = since(t0);
    t0 = performance.now();
    const gray = grayOf(decoded.image);
    const checks = checkImage(decoded.image, gray); // a bounded pixel sample
    const input = preprocess(decoded.image, this.card, gray);
    const timings = { decode, preprocess: since(t0) };
    if (!cam) return { decoded, gray, checks, input, timings };
    const base = overlayBase(decoded.image, cam.maxSide, gray);
    base.catch(() => {}); // awaited by finish, or dropped with a declined image: never an unhandled rejection
    return { decoded, gray, checks, input, timings, base };
  }

  /** Gate, uncertainty, Grad-CAM and the result of one image: the one place that decides its outcome. */
  private async finish({ prepared: p, output: inferred, k, infer, opts }: FinishInput): Promise<Outcome> {
    const logit = inferred.logit[k];
    if (!Number.isFinite(logit)) throw new PneumoError('model_error', 'The model produced an invalid output for this image.');
    const decision = postprocess(logit, this.applied, opts.threshold);
    const gate = gateDecision(
      p.checks,
      inferred.ood ? inferred.ood[k] : null,
      this.applied.gate,
      inferred.scope ? inferred.scope[k] : null,
    );
    if (this.site && gate.basis === 'intended_use_score' && this.applied.gate !== this.card.gate)
      gate.message = outsideSiteMessage(this.site);
    const M = inferred.memberCount;
    const members = inferred.members?.subarray(k * M, (k + 1) * M);
    const pp = this.applied.postprocessing;
    const unc = uncertaintyOf(members, this.card.uncertainty, pp.temperature, pp.bias ?? 0, decision);
    const t0 = performance.now();
    let cam: AnalysisResult['cam'];
    if (opts.cam && (!gate.rejected || opts.force)) {
      const [C, h, w] = inferred.featureShape;
      const features = inferred.features.subarray(k * C * h * w, (k + 1) * C * h * w);
      const map = gradCam(features, inferred.featureShape, this.card.gradcam.weights, this.card.gradcam.display_scale);
      const { overlayPng, heatmapPng, overlayRgb } = await renderCam(p.decoded.image, map, opts.cam, p.gray, await p.base);
      cam = {
        map: map.map,
        mapWidth: map.width,
        mapHeight: map.height,
        scale: { value: map.scale, fixed: map.fixed },
        overlayPng,
        ...(heatmapPng ? { heatmapPng } : {}),
        ...(overlayRgb ? { overlayRgb } : {}),
      };
    }
    const explain = since(t0);
    const { image, format, notes } = p.decoded;
    const timings_ms = { ...p.timings, infer, explain, total: p.timings.decode + p.timings.preprocess + infer + explain };
    // Most important first: a forced analysis of a rejected image, then an uncertain result.
    const warnings = [
      ...(gate.rejected && opts.force
        ? [`Analysed anyway (forced), but ${lowerFirst(gate.message ?? '')} Do not rely on this result.`]
        : []),
      ...(unc.uncertain
        ? [
            unc.value! > unc.cutoff!
              ? `${UNCERTAIN_WARNING}: the model's ensemble disagrees (spread ${unc.value!.toFixed(3)} > ${unc.cutoff}).`
              : `${UNCERTAIN_WARNING}: the probability is close to the decision threshold.`,
          ]
        : []),
      ...warningsFor(p.decoded, this.card.input.width, this.card.input.height),
      ...(this.card.uncertainty ? [] : ['This model provides no uncertainty estimate.']),
    ];
    const result: AnalysisResult = {
      label: decision.label,
      probability: decision.probability,
      logit,
      threshold: decision.threshold,
      model: { name: this.card.name, version: this.card.version },
      image: { ...(p.decoded.source ?? { width: image.width, height: image.height }), format }, // the file's own size
      timings_ms,
      ...(cam ? { cam } : {}),
      warnings,
      notes,
      rejected: gate.rejected,
      ...(gate.reason ? { reason: gate.reason } : {}),
      gate,
      uncertainty: unc.value,
      uncertain: unc.uncertain,
      ...(this.site ? { site: this.site } : {}),
    };
    if (gate.rejected && !opts.force) return { status: 'rejected', result, error: rejectionError(gate) };
    return { status: 'analysed', result };
  }
}

/** Every outcome of a stream, in input order. */
export async function collect(stream: AsyncIterable<Outcome[]>): Promise<Outcome[]> {
  const out: Outcome[] = [];
  for await (const chunk of stream) out.push(...chunk);
  return out;
}

/**
 * What a batch front end reports per item: the result of an analysed or rejected image (a rejected
 * one has `rejected: true`, no Grad-CAM unless forced), else the error, as the user may see it: a
 * PneumoError, or 500 internal_error (with the unexpected error as its cause).
 */
export function resultOrError(outcome: Outcome): AnalysisResult | PneumoError {
  if (outcome.status !== 'failed') return outcome.result;
  return publicError(outcome.error);
}

/** An error as the user may see it: a PneumoError as it is; anything else 500 internal_error, the original kept as its cause. */
export function publicError(e: unknown): PneumoError {
  if (e instanceof PneumoError) return e;
  return Object.assign(new PneumoError('internal_error', 'Internal error while analysing the image.'), { cause: e });
}

/** The result of an analysed image; the error of a rejected or failed one is thrown. */
export function unwrap(outcome: Outcome): AnalysisResult {
  if (outcome.status === 'analysed') return outcome.result;
  throw outcome.error;
}

/** The 422 of a rejected image, with the gate's reason as its code; details (scores, thresholds, reasons) are safe to show. */
export function rejectionError(gate: GateResult): PneumoError {
  // `basis` says which test declined it (image_checks | gate_score | intended_use_score); both scores are given.
  if (gate.reason === 'outside_intended_use') {
    return new PneumoError('outside_intended_use', gate.message ?? OUTSIDE_INTENDED_USE, {
      basis: gate.basis,
      score: gate.score,
      threshold: gate.threshold,
      scope: gate.scope,
      scope_threshold: gate.scopeThreshold,
      reasons: gate.reasons,
    });
  }
  return new PneumoError('not_a_chest_xray', gate.message, {
    basis: gate.basis,
    score: gate.score,
    threshold: gate.threshold,
    reasons: gate.reasons,
  });
}

const lowerFirst = (s: string): string => s.charAt(0).toLowerCase() + s.slice(1);

function toError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

const failed = (e: unknown): Outcome => ({ status: 'failed', error: toError(e) });
