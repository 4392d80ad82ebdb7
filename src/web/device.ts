/**
 * Analysis on the user's device: the entry of the browser build (scripts/build-web.ts bundles it as
 * device/device.js of the static site). It runs the Node engine's own Engine (src/pipeline.ts):
 * the same decoding rules, preprocessing, gate, uncertainty, Grad-CAM, colour maps and
 * postprocessing; only the inference runtime (onnxruntime-web, src/model/runtime.web.ts) and the
 * image library (canvases, src/web/canvas-io.ts) are the browser's.
 *
 * Nothing is sent anywhere: the page fetches the model card and the ONNX file once (kept in the
 * Cache Storage of the browser where it has one, checked against the card's SHA-256), and the
 * image is read from the user's file into memory and analysed here.
 */
import { PneumoError } from '../errors.ts';
import { intendedPopulation } from '../eval/card.ts';
import { validateCard, type LoadedCard } from '../model/card.ts';
import { ModelSession } from '../model/session.ts';
import { configureWasm, runtime, threadsAvailable } from '../model/runtime.web.ts';
import { collect, Engine } from '../pipeline.ts';
import type { AnalyseOptions, AnalysisResult, Colormap, Outcome } from '../types.ts';

/** Where the device files are, relative to device.js: the model (card.json + the ONNX file) and onnxruntime-web's WASM. */
const MODEL_DIR = 'model/';
const WASM_DIR = 'ort/';
const CACHE_NAME = 'pneumolens-model';

export interface LoadProgress {
  phase: 'card' | 'model' | 'runtime' | 'ready';
  /** Bytes of the model received so far, and its size when known (phase 'model'). */
  loaded?: number;
  total?: number;
  /** True when the model came from the browser's cache (no download). */
  cached?: boolean;
}

export interface LoadOptions {
  /** Folder of device.js (default: this module's own folder). */
  base?: string | URL;
  /** WASM threads (default: the cores, when the page is cross-origin isolated; else 1). */
  threads?: number;
  onProgress?: (p: LoadProgress) => void;
}

/** An answer in the shape of the server's (`POST /api/predict`), so the page renders both alike. */
export interface DeviceAnswer {
  status: number;
  body: Record<string, unknown>;
}

export class DeviceEngine {
  private constructor(
    readonly engine: Engine,
    readonly card: LoadedCard,
    /** e.g. "onnxruntime-web 1.31.1 (wasm simd, 2 threads)". */
    readonly runtime: string,
    readonly threads: number,
    /** Whether the model came from the browser's cache. */
    readonly cached: boolean,
  ) {}

  static async load(opts: LoadOptions = {}): Promise<DeviceEngine> {
    const base = new URL(String(opts.base ?? new URL('./', import.meta.url)));
    const progress = opts.onProgress ?? (() => {});
    configureWasm(new URL(WASM_DIR, base).href);
    progress({ phase: 'card' });
    const cardUrl = new URL(`${MODEL_DIR}card.json`, base);
    const res = await fetch(cardUrl, { cache: 'no-cache' });
    if (!res.ok) throw new Error(`The model card could not be loaded (${res.status} ${res.statusText}).`);
    const card = validateCard(await res.json(), 'the model card (card.json)');
    const modelUrl = new URL(`${MODEL_DIR}${card.file}`, base);
    const loaded: LoadedCard = { ...card, cardPath: cardUrl.href, modelPath: modelUrl.href };
    const { bytes, cached } = await fetchModel(modelUrl.href, card.sha256, progress);
    progress({ phase: 'runtime' });
    const session = await ModelSession.create(bytes, loaded, { runtime, ...(opts.threads ? { threads: opts.threads } : {}) });
    const engine = Engine.fromSession(loaded, session, { maxBatch: 1 });
    progress({ phase: 'ready' });
    return new DeviceEngine(engine, loaded, runtime.name, session.threads, cached);
  }

  /** The engine's outcome for one image (bytes in memory; nothing leaves the page). */
  async analyse(bytes: Uint8Array, opts: AnalyseOptions = {}): Promise<Outcome> {
    const [outcome] = await collect(this.engine.analyseStream([bytes], opts));
    return outcome;
  }

  /** The page's request: the file and the query string it would send to /api/predict, answered here. */
  async predict(file: Blob | Uint8Array, query = ''): Promise<DeviceAnswer> {
    try {
      const opts = analyseOptions(new URLSearchParams(query));
      const bytes = file instanceof Uint8Array ? file : new Uint8Array(await file.arrayBuffer());
      const t0 = performance.now();
      const outcome = await this.analyse(bytes, opts);
      if (outcome.status === 'analysed') return { status: 200, body: answerBody(outcome.result, performance.now() - t0) };
      return errorAnswer(outcome.error);
    } catch (e) {
      return errorAnswer(e);
    }
  }

  /** The card as the page shows it (like GET /api/model: no local paths, long numeric arrays summarised, `population`). */
  publicCard(): Record<string, unknown> {
    const { cardPath: _c, modelPath: _m, ...card } = this.card;
    return { ...(compactArrays(card) as Record<string, unknown>), population: intendedPopulation(this.card) };
  }
}

/** The query parameters of /api/predict that the page sends, read as the server reads them. */
export function analyseOptions(q: URLSearchParams): AnalyseOptions {
  const o: AnalyseOptions = { cam: q.get('cam') !== 'false' };
  const num = (name: string): number | undefined => {
    const v = q.get(name);
    if (v === null || v === '') return undefined;
    const n = Number(v);
    if (!Number.isFinite(n)) throw new PneumoError('bad_request', `Invalid request: ${name} must be a number (got ${v}).`);
    return n;
  };
  const colormap = q.get('colormap');
  if (colormap) o.colormap = colormap as Colormap; // checked by the engine
  const alpha = num('alpha');
  if (alpha !== undefined) o.alpha = alpha;
  const threshold = num('threshold');
  if (threshold !== undefined) o.threshold = threshold;
  if (q.get('force') === 'true') o.force = true;
  return o;
}

const dataUrl = (png: Uint8Array): string => `data:image/png;base64,${Buffer.from(png).toString('base64')}`;

/** The result in the fields of the server's answer; `analysed_on: "device"`, and the Grad-CAM map at full precision. */
export function answerBody(r: AnalysisResult, totalMs: number): Record<string, unknown> {
  const cam = r.cam;
  return {
    label: r.label,
    probability: r.probability,
    threshold: r.threshold,
    logit: r.logit,
    model: { ...r.model },
    image: { ...r.image },
    timings_ms: { ...r.timings_ms, device_total: totalMs },
    gradcam: cam ? dataUrl(cam.overlayPng) : null,
    heatmap: cam?.heatmapPng ? dataUrl(cam.heatmapPng) : null,
    gradcam_map: cam ? { width: cam.mapWidth, height: cam.mapHeight, data: Array.from(cam.map) } : null,
    warnings: [...r.warnings],
    rejected: r.rejected,
    ...(r.reason ? { reason: r.reason } : {}),
    gate: r.gate,
    uncertainty: r.uncertainty,
    uncertain: r.uncertain,
    analysed_on: 'device',
  };
}

function errorAnswer(e: unknown): DeviceAnswer {
  if (e instanceof PneumoError) return { status: e.status, body: { ...e.toJSON(), analysed_on: 'device' } };
  const err = new PneumoError('internal_error', 'Something went wrong while analysing on this device.');
  console.error('pneumolens on-device analysis failed:', e instanceof Error ? e.message : String(e)); // never the image
  return { status: err.status, body: { ...err.toJSON(), analysed_on: 'device' } };
}

function compactArrays(value: unknown): unknown {
  if (Array.isArray(value)) {
    if (value.length > 64 && value.every((v) => typeof v === 'number')) return { omitted: true, length: value.length };
    return value.map(compactArrays);
  }
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, compactArrays(v)]));
  return value;
}

const hex = (buf: ArrayBuffer): string => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('');

/**
 * The ONNX bytes: from the browser's Cache Storage when it holds this exact model (keyed by its
 * SHA-256), else downloaded with progress and stored there. Checked against the card's SHA-256
 * wherever the browser has crypto.subtle (secure contexts: https, localhost).
 */
async function fetchModel(
  url: string,
  sha256: string,
  progress: (p: LoadProgress) => void,
): Promise<{ bytes: Uint8Array; cached: boolean }> {
  const key = `${url}?sha256=${sha256.toLowerCase()}`;
  const store = typeof caches !== 'undefined' ? await caches.open(CACHE_NAME).catch(() => null) : null;
  const hit = await store?.match(key);
  let bytes: Uint8Array;
  let cached = false;
  if (hit) {
    bytes = new Uint8Array(await hit.arrayBuffer());
    cached = true;
    progress({ phase: 'model', loaded: bytes.length, total: bytes.length, cached });
  } else {
    const res = await fetch(url);
    if (!res.ok || !res.body) throw new Error(`The model could not be downloaded (${res.status} ${res.statusText}).`);
    const total = Number(res.headers.get('content-length')) || undefined;
    const chunks: Uint8Array[] = [];
    let loaded = 0;
    const reader = res.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      loaded += value.length;
      progress({ phase: 'model', loaded, total, cached });
    }
    bytes = new Uint8Array(loaded);
    let at = 0;
    for (const c of chunks) {
      bytes.set(c, at);
      at += c.length;
    }
  }
  if (globalThis.crypto?.subtle) {
    const actual = hex(await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>));
    if (actual !== sha256.toLowerCase()) {
      if (hit) await store?.delete(key);
      throw new Error(`The downloaded model does not match its card: sha256 ${actual} != ${sha256}.`);
    }
  }
  if (!hit && store) {
    // Other versions of the model are dropped: one copy is kept.
    for (const old of await store.keys()) if (old.url !== key && old.url.startsWith(url)) await store.delete(old);
    await store.put(key, new Response(bytes as Uint8Array<ArrayBuffer>, { headers: { 'content-type': 'application/octet-stream' } }));
  }
  return { bytes, cached };
}

export { threadsAvailable };
