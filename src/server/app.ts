/**
 * The Fastify app factory. The engine is injected (the real one from start.ts, any object with the
 * same `card` and `analyse` in tests), so every route runs in-process under `app.inject`.
 */
import { existsSync } from 'node:fs';
import os from 'node:os';
import type { Socket } from 'node:net';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyInstance, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import multipart from '@fastify/multipart';
import fastifyStatic from '@fastify/static';
import { isPneumoError, PneumoError } from '../errors.js';
import { intendedPopulation, type CardInfo } from '../eval/card.js';
import type { SiteSummary } from '../site/profile.js';
import type { AnalyseOptions, AnalysisResult } from '../types.js';
import { clientErrorHandler, mapError, notFoundBody } from './errors.js';
import { fetchImageUrl, formatBytes, UrlPolicy, type Resolver } from './fetch-url.js';
import { Limiter } from './limiter.js';
import { openApiDocument, PREDICT_QUERY_SCHEMA, renderDocsHtml, resolvedSchema, type PredictQuery } from './openapi.js';
import { HostPolicy } from './host.js';
import { OriginPolicy } from './origin.js';
import { collectBody, PartHeaderScanner, requestTimeout, UploadBudget, type Upload } from './uploads.js';

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

export interface LogDestination {
  write(line: string): void;
}

export interface AppOptions {
  /** The engine, or a promise of it (health answers 503 'loading' until it resolves). */
  engine: PredictEngine | Promise<PredictEngine>;
  maxUploadBytes?: number; // default 20 MB
  maxConcurrent?: number; // default: CPU cores
  maxQueue?: number; // default 16
  /** Queue wait + analysis, from the moment the image is complete (default 30 s; then 504). */
  requestTimeoutMs?: number;
  /** An upload must be complete within this (default 30 s; then 408). */
  uploadTimeoutMs?: number;
  /** An upload that sends nothing for this long is dropped (default 10 s; then 408). */
  uploadIdleTimeoutMs?: number;
  /** Bodies (uploads and URL fetches) in transit at once (default 256; then 503). */
  maxUploads?: number;
  /** Bytes of bodies in transit, summed (default 8 x maxUploadBytes; then 503). */
  maxUploadBytesInFlight?: number;
  /**
   * Origins (e.g. "https://viewer.example.org") whose pages may POST to the API from a browser, or
   * "*" for any (default: PNEUMOLENS_ALLOWED_ORIGINS; the server's own origin is always allowed).
   */
  allowedOrigins?: string[];
  /**
   * Host names this server answers to besides its own (IP literals, names without a dot, *.localhost,
   * os.hostname(), the allowed origins' hosts): default PNEUMOLENS_ALLOWED_HOSTS; "*" for any (see host.ts).
   */
  allowedHosts?: string[];
  /** Open connections at once (default 512, PNEUMOLENS_MAX_CONNECTIONS); a connection beyond them gets 503 and is closed. */
  maxConnections?: number;
  /** Hosts / CIDRs the URL fetcher may contact even when private (default: PNEUMOLENS_URL_ALLOW). */
  urlAllowList?: string[];
  urlFetchTimeoutMs?: number; // default 10 s
  urlHeadersTimeoutMs?: number; // default 5 s: connect + response headers
  /** DNS resolver of the URL fetcher (tests). */
  urlResolver?: Resolver;
  /** false (default), true (info to stdout) or a level and/or a destination. */
  logger?: boolean | { level?: string; stream?: LogDestination };
  /** Folder of the web page (default: web/ of the repository). */
  webRoot?: string;
  /**
   * Folder of the on-device build to serve at /device/ (`pneumolens serve`: DEFAULT_DEVICE_ROOT when
   * `npm run build:web` wrote it); none by default, so the page analyses on the server only.
   */
  deviceRoot?: string;
}

/** The API's version is the package's. */
const PACKAGE_VERSION = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;

export const DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024;
/** Requests with a complete image that may wait for a compute slot (beyond maxConcurrent); then 503. */
export const DEFAULT_MAX_QUEUE = 16;
/** Room for the multipart envelope around the file when checking Content-Length up front. */
const MULTIPART_SLACK_BYTES = 64 * 1024;
const JSON_BODY_LIMIT = 16 * 1024;
export const DEFAULT_MAX_CONNECTIONS = 512;
/** Longest header block of a multipart part (Content-Disposition, Content-Type): a real one is a few hundred bytes. */
export const MAX_PART_HEADER_BYTES = 8 * 1024;

/** The methods of each API address (HEAD with GET, as Fastify adds it): anything else there is 405. */
const API_METHODS: Record<string, string[]> = {
  '/api/predict': ['POST'],
  '/api/health': ['GET', 'HEAD'],
  '/api/model': ['GET', 'HEAD'],
  '/api/openapi.json': ['GET', 'HEAD'],
  '/docs': ['GET', 'HEAD'],
};

const TOO_MANY_CONNECTIONS = (() => {
  const body = JSON.stringify(new PneumoError('busy', 'The server has too many open connections. Please retry shortly.').toJSON());
  return (
    `HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\nRetry-After: 2\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
  );
})();

/**
 * Result fields passed through to the client when the engine provides them (issue 5: the input gate,
 * uncertainty, rejection). A new predict option is one entry in PREDICT_QUERY_SCHEMA plus one line
 * in toAnalyseOptions; an engine PneumoError (e.g. 422 not_a_chest_xray with its score in details)
 * already reaches the client as is.
 */
const OPTIONAL_RESULT_FIELDS = ['rejected', 'reason', 'gate', 'uncertainty', 'uncertain', 'site'] as const;

type EngineState =
  | { status: 'loading' }
  | { status: 'ok'; engine: PredictEngine }
  | { status: 'failed' }
  | { status: 'shutting_down'; engine?: PredictEngine };

/** Where `npm run build:web` writes the on-device build that `pneumolens serve` serves at /device/. */
export const DEFAULT_DEVICE_ROOT = fileURLToPath(new URL('../../dist/web/device/', import.meta.url));

const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy':
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  // Cross-origin isolation (COOP + COEP): the on-device page (/device/, npm run build:web) may run
  // its WebAssembly model with threads (SharedArrayBuffer). Everything the page loads is our own.
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-embedder-policy': 'require-corp',
  'cross-origin-resource-policy': 'same-origin',
  'x-frame-options': 'DENY',
};

/**
 * Log serializers: a request is logged as method + route pattern (never the raw URL, which could
 * carry a file name), a response as its status, an error as its type, code and message. Upload
 * contents, file names, fetched URLs and DICOM tags are never handed to the logger.
 */
const serializers = {
  req: (req: FastifyRequest) => ({ id: req.id, method: req.method, route: req.routeOptions?.url ?? '(no route)' }),
  res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
  err: (err: Error & { code?: string }) => ({ type: err.name, code: err.code, message: err.message, stack: err.stack }),
};

function loggerOptions(logger: AppOptions['logger']): FastifyServerOptions['logger'] {
  if (!logger) return false;
  const o = logger === true ? {} : logger;
  return { level: o.level ?? 'info', serializers, ...(o.stream ? { stream: o.stream } : {}) } as FastifyServerOptions['logger'];
}

function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

/** Keys of the loaded card that describe this machine, not the model (absolute file paths). */
const LOCAL_CARD_KEYS = new Set(['cardPath', 'modelPath']);

/**
 * The card as served by GET /api/model: no local paths, long numeric arrays summarised, plus
 * `population`: who the model is validated for, in the card's words (null when it says none).
 */
export function publicCard(card: object): unknown {
  const served = Object.fromEntries(Object.entries(card).filter(([k]) => !LOCAL_CARD_KEYS.has(k)));
  return { ...(compactArrays(served) as object), population: intendedPopulation(card as CardInfo) };
}

/** Replaces long numeric arrays (weights, gate statistics) with a summary; copies the rest. */
function compactArrays(value: unknown): unknown {
  if (Array.isArray(value)) {
    if (value.length > 64 && value.every((v) => typeof v === 'number')) return { omitted: true, length: value.length };
    return value.map(compactArrays);
  }
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, compactArrays(v)]));
  }
  return value;
}

function toAnalyseOptions(q: PredictQuery): AnalyseOptions {
  const o: AnalyseOptions = { cam: q.cam ?? true };
  if (q.colormap !== undefined) o.colormap = q.colormap;
  if (q.alpha !== undefined) o.alpha = q.alpha;
  if (q.threshold !== undefined) o.threshold = q.threshold;
  if (q.force) o.force = true;
  return o;
}

function round(v: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

const pngDataUrl = (png: Uint8Array): string =>
  `data:image/png;base64,${Buffer.from(png.buffer, png.byteOffset, png.byteLength).toString('base64')}`;

export function toPredictResponse(result: AnalysisResult, serverTimings: Record<string, number>): Record<string, unknown> {
  const cam = result.cam;
  const out: Record<string, unknown> = {
    label: result.label,
    probability: result.probability,
    threshold: result.threshold,
    logit: result.logit,
    model: { name: result.model.name, version: result.model.version },
    image: { width: result.image.width, height: result.image.height, format: result.image.format },
    timings_ms: Object.fromEntries(Object.entries({ ...result.timings_ms, ...serverTimings }).map(([k, v]) => [k, round(v, 1)])),
    gradcam: cam ? pngDataUrl(cam.overlayPng) : null,
    heatmap: cam?.heatmapPng ? pngDataUrl(cam.heatmapPng) : null,
    gradcam_map: cam ? { width: cam.mapWidth, height: cam.mapHeight, data: Array.from(cam.map, (v) => round(v, 4)) } : null,
    warnings: [...result.warnings],
  };
  const extra = result as unknown as Record<string, unknown>;
  for (const k of OPTIONAL_RESULT_FIELDS) if (extra[k] !== undefined) out[k] = extra[k];
  return out;
}

export function buildApp(opts: AppOptions): FastifyInstance {
  const maxUploadBytes = opts.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES;
  const maxUploadText = formatBytes(maxUploadBytes);
  const requestTimeoutMs = opts.requestTimeoutMs ?? 30_000;
  const uploadTimeoutMs = opts.uploadTimeoutMs ?? 30_000;
  const uploadIdleTimeoutMs = opts.uploadIdleTimeoutMs ?? 10_000;
  const uploads = new UploadBudget({
    maxUploads: opts.maxUploads ?? 256,
    maxBytesInFlight: opts.maxUploadBytesInFlight ?? 8 * maxUploadBytes,
    retryAfterS: Math.max(1, Math.ceil(uploadIdleTimeoutMs / 1000)),
  });
  const originList = opts.allowedOrigins ?? (process.env.PNEUMOLENS_ALLOWED_ORIGINS ?? '').split(/[\s,]+/).filter(Boolean);
  const origins = OriginPolicy.from(originList);
  const hosts = HostPolicy.from(
    opts.allowedHosts ?? (process.env.PNEUMOLENS_ALLOWED_HOSTS ?? '').split(/[\s,]+/).filter(Boolean),
    originList.filter((o) => o !== '*').map((o) => new URL(o).host),
  );
  const maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  const limiter = new Limiter({
    maxConcurrent: opts.maxConcurrent ?? Math.max(1, os.availableParallelism()), // = defaultMaxConcurrent()
    maxQueue: opts.maxQueue ?? DEFAULT_MAX_QUEUE,
  });
  const urlPolicy = opts.urlAllowList ? new UrlPolicy({ allow: opts.urlAllowList }) : UrlPolicy.fromEnv(process.env.PNEUMOLENS_URL_ALLOW);
  const startedAt = Date.now();

  const app = Fastify({
    logger: loggerOptions(opts.logger),
    return503OnClosing: false, // we answer 503 ourselves, in the API's error format
    // Backstop of the HTTP server itself for bodies we do not read (JSON); answered by clientErrorHandler.
    requestTimeout: uploadTimeoutMs + 5_000,
    clientErrorHandler, // 400, 408 and 431 from Node's parser in the API's error shape
    ajv: { customOptions: { removeAdditional: false } }, // unknown query parameters are errors, not ignored
  });

  let state: EngineState = { status: 'loading' };
  Promise.resolve(opts.engine).then(
    (engine) => {
      if (state.status === 'loading') state = { status: 'ok', engine };
    },
    (err: unknown) => {
      state = { status: 'failed' };
      app.log.error({ err }, 'model failed to load');
    },
  );

  const readyEngine = (): PredictEngine => {
    if (state.status === 'ok') return state.engine;
    const message =
      state.status === 'loading'
        ? 'The model is still loading. Please retry shortly.'
        : state.status === 'shutting_down'
          ? 'The server is shutting down.'
          : 'The model is not available (it failed to load; see the server log).';
    throw new PneumoError('busy', message, { retry_after_s: state.status === 'loading' ? 2 : 10 });
  };

  app.addHook('preClose', async () => {
    state = { status: 'shutting_down', engine: state.status === 'ok' ? state.engine : undefined };
  });
  // An analysis whose client already got a 504 may still be running: close() waits for it, so the
  // engine is never disposed under a running inference.
  app.addHook('onClose', async () => {
    await limiter.idle();
  });

  // A connection cap: beyond it, a connection is answered 503 at once and closed (it never reaches
  // the parser's buffers or a route). Counted on the socket, so idle keep-alive connections count too.
  let openConnections = 0;
  app.server.on('connection', (socket: Socket) => {
    if (openConnections >= maxConnections) {
      socket.on('error', () => undefined);
      socket.end(TOO_MANY_CONNECTIONS);
      return;
    }
    openConnections++;
    socket.once('close', () => openConnections--);
  });

  app.addHook('onRequest', async (req, reply) => {
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) reply.header(k, v);
    // DNS rebinding: only this server's own names (host.ts).
    hosts.check(req.headers.host);
    if (state.status === 'shutting_down' && req.url !== '/api/health') {
      reply.header('connection', 'close');
      throw new PneumoError('busy', 'The server is shutting down.', { retry_after_s: 10 });
    }
    // A page of another site must not make a visitor's browser post to this server (a form POST
    // needs no CORS preflight); it could not read the answer, but it could spend our resources.
    if (req.method !== 'GET' && req.method !== 'HEAD' && req.method !== 'OPTIONS') origins.check(req.headers);
  });

  // While shutting down, answers close their connection so keep-alive sockets do not hold close().
  app.addHook('onSend', async (_req, reply) => {
    if (state.status === 'shutting_down') reply.header('connection', 'close');
  });

  app.setErrorHandler((err, req, reply) => {
    const mapped = mapError(err, maxUploadText);
    if (mapped.unexpected) req.log.error({ err }, 'unexpected error');
    else req.log.info({ status: mapped.status, code: mapped.body.error.code }, 'request refused');
    if (mapped.retryAfter !== undefined) reply.header('retry-after', String(mapped.retryAfter));
    // A body we stopped reading (timeout, too large, refused) leaves the connection unusable.
    if ([408, 413].includes(mapped.status) || (req.isMultipart?.() && !req.raw.complete)) reply.header('connection', 'close');
    reply.code(mapped.status).type('application/json; charset=utf-8').send(mapped.body);
  });

  app.setNotFoundHandler((req, reply) => {
    // A known API address with another method: 405 and the methods it takes.
    const allow = API_METHODS[req.url.split('?')[0]];
    if (allow) {
      const body = new PneumoError('method_not_allowed', `This address takes ${allow.join(' or ')}.`).toJSON();
      reply.code(405).header('allow', allow.join(', ')).type('application/json; charset=utf-8').send(body);
      return;
    }
    reply.code(404).type('application/json; charset=utf-8').send(notFoundBody());
  });

  app.register(multipart, {
    limits: { fileSize: maxUploadBytes, files: 1, fields: 8, parts: 9, fieldSize: 4096, headerPairs: 64 },
  });

  app.register(fastifyStatic, {
    root: opts.webRoot ?? fileURLToPath(new URL('../../web/', import.meta.url)),
    prefix: '/',
    index: 'index.html',
    dotfiles: 'deny',
  });
  if (opts.deviceRoot !== undefined) {
    if (!existsSync(opts.deviceRoot)) throw new Error(`deviceRoot ${opts.deviceRoot} does not exist (npm run build:web writes it)`);
    app.register(fastifyStatic, { root: opts.deviceRoot, prefix: '/device/', dotfiles: 'deny', decorateReply: false });
    // The page learns from its health check that it may analyse on the device (web/on-device.js).
    app.addHook('onSend', async (req, reply) => {
      if (req.url === '/api/health') reply.header('x-pneumolens-device', '/device/device.js');
    });
  }

  const openApi = () => openApiDocument({ version: PACKAGE_VERSION, maxUploadBytes });
  const doc = openApi();
  const errorSchema = resolvedSchema(doc, 'Error');
  /** Answers are serialised with the OpenAPI document's own schemas (see resolvedSchema). */
  const responses = (ok: Record<string, unknown>) => ({ 200: ok, '4xx': errorSchema, '5xx': errorSchema });

  app.get(
    '/api/health',
    { schema: { response: { 200: resolvedSchema(doc, 'Health'), 503: resolvedSchema(doc, 'Health') } } },
    async (_req, reply) => {
      const engine = state.status === 'ok' ? state.engine : undefined;
      const s = limiter.stats();
      const u = uploads.stats();
      reply.code(engine ? 200 : 503).header('cache-control', 'no-store');
      if (!engine) reply.header('retry-after', state.status === 'loading' ? '2' : '10');
      // Degraded: a worker was stopped at a deadline (or died) and its replacement is not running yet.
      const workers = engine?.health?.();
      const degraded = workers !== undefined && workers.workers < workers.expected;
      return {
        status: degraded ? 'degraded' : state.status,
        ready: !!engine,
        model: engine ? { name: engine.card.name, version: engine.card.version } : null,
        uptime_s: round((Date.now() - startedAt) / 1000, 1),
        load: {
          active: s.active,
          queued: s.queued,
          max_concurrent: s.maxConcurrent,
          max_queue: s.maxQueue,
          uploads_in_flight: u.inFlight,
          upload_bytes_in_flight: u.bytes,
          connections: openConnections,
          ...(workers
            ? { engine_workers: workers.workers, engine_workers_expected: workers.expected, recycled_after_deadline: workers.recycled }
            : {}),
        },
      };
    },
  );

  app.get('/api/model', async () => {
    const engine = readyEngine();
    return { ...(publicCard(engine.card) as object), site: engine.site ?? null }; // the site profile in use (null: the card alone)
  });

  app.get('/api/openapi.json', async () => openApi());
  app.get('/docs', async (_req, reply) => {
    reply.type('text/html; charset=utf-8');
    return renderDocsHtml(openApi());
  });

  const tooLarge = () => new PneumoError('payload_too_large', `The file is larger than the limit of ${maxUploadText}.`);

  /** The one file of a multipart body; a second file is an error, other fields are ignored. */
  async function readMultipartFile(req: FastifyRequest, upload: Upload, signal: AbortSignal): Promise<Buffer> {
    let bytes: Buffer | undefined;
    for await (const part of req.parts({ limits: { fileSize: maxUploadBytes } })) {
      if (part.type !== 'file') continue;
      if (bytes !== undefined || part.fieldname !== 'file') {
        part.file.resume();
        throw new PneumoError('bad_request', 'Send exactly one file, in the field "file".');
      }
      bytes = await collectBody(part.file, upload, maxUploadBytes, tooLarge, signal);
    }
    if (bytes === undefined) throw new PneumoError('bad_request', 'No file in the form: send the image in the field "file".');
    if (bytes.length === 0) throw new PneumoError('bad_request', 'The uploaded file is empty.');
    return bytes;
  }

  /**
   * Reads the image bytes of a predict request: one multipart file, or JSON {url}. Holds no queue
   * slot: the body is bounded by the upload budget (count and bytes in transit), an idle timeout
   * and a deadline (408), and a URL fetch by its own timeouts.
   */
  async function readInput(req: FastifyRequest): Promise<{ bytes: Buffer; source: 'upload' | 'url' }> {
    const type = (req.headers['content-type'] ?? '').toLowerCase();
    if (req.isMultipart()) {
      if (!/;\s*boundary=/.test(type)) {
        throw new PneumoError('bad_request', 'The multipart/form-data Content-Type has no boundary parameter.');
      }
      const upload = uploads.begin();
      const ctrl = new AbortController();
      const deadline = setTimeout(
        () => ctrl.abort(requestTimeout(`The upload was not complete within ${uploadTimeoutMs / 1000} s.`)),
        uploadTimeoutMs,
      );
      let idle: NodeJS.Timeout | undefined;
      // Every byte of the body counts as it arrives, chunked or not: past the limit (plus the
      // multipart envelope) it is 413 at once, whether or not the file part ever ends.
      let received = 0;
      const parts = new PartHeaderScanner(req.headers['content-type'] ?? '', MAX_PART_HEADER_BYTES);
      const onData = (chunk: Buffer) => {
        received += chunk.length;
        if (received > maxUploadBytes + MULTIPART_SLACK_BYTES) ctrl.abort(tooLarge());
        else if (!parts.push(chunk)) {
          ctrl.abort(new PneumoError('bad_request', `A part header of the form is longer than ${MAX_PART_HEADER_BYTES} bytes.`));
        }
        bump();
      };
      const bump = () => {
        clearTimeout(idle);
        idle = setTimeout(
          () => ctrl.abort(requestTimeout(`The upload stalled: no data for ${uploadIdleTimeoutMs / 1000} s.`)),
          uploadIdleTimeoutMs,
        );
      };
      bump();
      req.raw.on('data', onData);
      try {
        return { bytes: await abortable(readMultipartFile(req, upload, ctrl.signal), ctrl.signal), source: 'upload' };
      } catch (e) {
        if (isPneumoError(e) || (e as { code?: unknown }).code?.toString().startsWith('FST_')) throw e;
        // busboy's parse errors (no closing boundary, malformed part headers, body shorter than declared)
        throw new PneumoError('bad_request', 'The multipart body is malformed or incomplete.');
      } finally {
        clearTimeout(deadline);
        clearTimeout(idle);
        req.raw.off('data', onData);
        upload.end();
      }
    }
    if (type.startsWith('application/json')) {
      const body = req.body as unknown;
      const keys = body && typeof body === 'object' && !Array.isArray(body) ? Object.keys(body) : null;
      const url = keys ? (body as { url?: unknown }).url : undefined;
      if (!keys || typeof url !== 'string' || keys.length !== 1) {
        throw new PneumoError('bad_request', 'The JSON body must be {"url": "https://..."}.');
      }
      if (url.length > 2048) throw new PneumoError('bad_request', 'The URL is too long (at most 2048 characters).');
      const upload = uploads.begin();
      const ctrl = new AbortController();
      const onClose = () => ctrl.abort(new PneumoError('bad_request', 'The client went away.'));
      req.raw.socket?.once('close', onClose);
      try {
        const { bytes } = await fetchImageUrl(url, urlPolicy, {
          maxBytes: maxUploadBytes,
          timeoutMs: opts.urlFetchTimeoutMs,
          headersTimeoutMs: opts.urlHeadersTimeoutMs,
          signal: ctrl.signal,
          resolve: opts.urlResolver,
          onData: (n) => upload.add(n),
        });
        return { bytes, source: 'url' };
      } finally {
        req.raw.socket?.off('close', onClose);
        upload.end();
      }
    }
    if (!type)
      throw new PneumoError('bad_request', 'No image: send multipart/form-data with a field "file", or JSON {"url": "https://..."}.');
    throw new PneumoError('unsupported_media_type', 'Send the image as multipart/form-data (field "file") or JSON {"url": "https://..."}.');
  }

  app.post<{ Querystring: PredictQuery }>(
    '/api/predict',
    {
      schema: { querystring: PREDICT_QUERY_SCHEMA, response: responses(resolvedSchema(doc, 'Prediction')) },
      bodyLimit: JSON_BODY_LIMIT,
      onRequest: async (req) => {
        const declared = Number(req.headers['content-length']);
        if (Number.isFinite(declared) && declared > maxUploadBytes + MULTIPART_SLACK_BYTES) {
          throw new PneumoError('payload_too_large', `The file is larger than the limit of ${maxUploadText}.`);
        }
      },
    },
    async (req, reply) => {
      const t0 = performance.now();
      const engine = readyEngine();
      const options = toAnalyseOptions(req.query);
      limiter.refuseIfFull(); // a full queue refuses at once, without reading the body
      const input = await readInput(req);
      const t1 = performance.now();
      const ticket = limiter.admit(); // only now: the image is complete and ready to compute
      const ctrl = new AbortController();
      const timer = setTimeout(
        () =>
          ctrl.abort(new PneumoError('timeout', `The analysis did not finish within ${requestTimeoutMs / 1000} s. Please retry later.`)),
        requestTimeoutMs,
      );
      try {
        let started = 0;
        const result = await abortable(
          ticket.run(() => {
            started = performance.now();
            return engine.analyse(input.bytes, options, ctrl.signal);
          }, ctrl.signal),
          ctrl.signal,
        );
        const t2 = performance.now();
        reply.header('cache-control', 'no-store');
        return toPredictResponse(result, {
          [input.source === 'url' ? 'fetch' : 'upload']: round(t1 - t0, 1),
          queue: round(started - t1, 1),
          server_total: round(t2 - t0, 1),
        });
      } finally {
        clearTimeout(timer);
        ticket.release(); // no-op if it ran: then it ends when the analysis settles
      }
    },
  );

  return app;
}
