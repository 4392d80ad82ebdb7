/**
 * The Fastify app factory. The engine is injected (the real one from start.ts, any object with the
 * same `card` and `analyse` in tests), so every route runs in-process under `app.inject`.
 */
import os from 'node:os';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyInstance, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import multipart from '@fastify/multipart';
import fastifyStatic from '@fastify/static';
import { PneumoError } from '../errors.js';
import type { AnalyseOptions, AnalysisResult } from '../types.js';
import { mapError, notFoundBody } from './errors.js';
import { fetchImageUrl, formatBytes, UrlPolicy, type Resolver } from './fetch-url.js';
import { Limiter } from './limiter.js';
import { openApiDocument, PREDICT_QUERY_SCHEMA, renderDocsHtml, type PredictQuery } from './openapi.js';

/** What the server needs from the engine (the real Engine of src/pipeline.ts has these). */
export interface PredictEngine {
  readonly card: { readonly name: string; readonly version: string };
  analyse(bytes: Uint8Array, opts?: AnalyseOptions): Promise<AnalysisResult>;
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
  requestTimeoutMs?: number; // default 30 s, covers upload or URL fetch, queue and analysis
  /** Hosts / CIDRs the URL fetcher may contact even when private (default: PNEUMOLENS_URL_ALLOW). */
  urlAllowList?: string[];
  urlFetchTimeoutMs?: number; // default 10 s
  /** DNS resolver of the URL fetcher (tests). */
  urlResolver?: Resolver;
  /** false (default), true (info to stdout) or a level and/or a destination. */
  logger?: boolean | { level?: string; stream?: LogDestination };
  /** Folder of the web page (default: web/ of the repository). */
  webRoot?: string;
}

/** The API's version is the package's. */
const PACKAGE_VERSION = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;

export const DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024;
/** Room for the multipart envelope around the file when checking Content-Length up front. */
const MULTIPART_SLACK_BYTES = 64 * 1024;
const JSON_BODY_LIMIT = 16 * 1024;

/**
 * Result fields passed through to the client when the engine provides them (issue 5: the input gate,
 * uncertainty, rejection). A new predict option is one entry in PREDICT_QUERY_SCHEMA plus one line
 * in toAnalyseOptions; an engine PneumoError (e.g. 422 not_a_chest_xray with its score in details)
 * already reaches the client as is.
 */
const OPTIONAL_RESULT_FIELDS = ['rejected', 'reason', 'gate', 'uncertainty', 'uncertain'] as const;

type EngineState =
  | { status: 'loading' }
  | { status: 'ok'; engine: PredictEngine }
  | { status: 'failed' }
  | { status: 'shutting_down'; engine?: PredictEngine };

const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; " +
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
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

/** The card as served by GET /api/model: no local paths, long numeric arrays summarised. */
export function publicCard(card: object): unknown {
  return compactArrays(Object.fromEntries(Object.entries(card).filter(([k]) => !LOCAL_CARD_KEYS.has(k))));
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
    gradcam: cam
      ? `data:image/png;base64,${Buffer.from(cam.overlayPng.buffer, cam.overlayPng.byteOffset, cam.overlayPng.byteLength).toString('base64')}`
      : null,
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
  const limiter = new Limiter({
    maxConcurrent: opts.maxConcurrent ?? Math.max(1, os.availableParallelism()), // = defaultMaxConcurrent()
    maxQueue: opts.maxQueue ?? 16,
  });
  const urlPolicy = opts.urlAllowList ? new UrlPolicy({ allow: opts.urlAllowList }) : UrlPolicy.fromEnv(process.env.PNEUMOLENS_URL_ALLOW);
  const startedAt = Date.now();

  const app = Fastify({
    logger: loggerOptions(opts.logger),
    return503OnClosing: false, // we answer 503 ourselves, in the API's error format
    requestTimeout: requestTimeoutMs + 30_000, // slow-upload guard of the HTTP server itself
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
    throw new PneumoError(503, 'busy', message, { retry_after_s: state.status === 'loading' ? 2 : 10 });
  };

  app.addHook('preClose', async () => {
    state = { status: 'shutting_down', engine: state.status === 'ok' ? state.engine : undefined };
  });
  // An analysis whose client already got a 504 may still be running: close() waits for it, so the
  // engine is never disposed under a running inference.
  app.addHook('onClose', async () => {
    await limiter.idle();
  });

  app.addHook('onRequest', async (req, reply) => {
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) reply.header(k, v);
    if (state.status === 'shutting_down' && req.url !== '/api/health') {
      reply.header('connection', 'close');
      throw new PneumoError(503, 'busy', 'The server is shutting down.', { retry_after_s: 10 });
    }
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
    reply.code(mapped.status).type('application/json; charset=utf-8').send(mapped.body);
  });

  app.setNotFoundHandler((_req, reply) => {
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

  app.get('/api/health', async (_req, reply) => {
    const engine = state.status === 'ok' ? state.engine : undefined;
    const s = limiter.stats();
    reply.code(engine ? 200 : 503).header('cache-control', 'no-store');
    if (!engine) reply.header('retry-after', state.status === 'loading' ? '2' : '10');
    return {
      status: state.status,
      ready: !!engine,
      model: engine ? { name: engine.card.name, version: engine.card.version } : null,
      uptime_s: round((Date.now() - startedAt) / 1000, 1),
      load: { active: s.active, queued: s.queued, max_concurrent: s.maxConcurrent, max_queue: s.maxQueue },
    };
  });

  app.get('/api/model', async () => publicCard(readyEngine().card));

  const openApi = () => openApiDocument({ version: PACKAGE_VERSION, maxUploadBytes });
  app.get('/api/openapi.json', async () => openApi());
  app.get('/docs', async (_req, reply) => {
    reply.type('text/html; charset=utf-8');
    return renderDocsHtml(openApi());
  });

  /** Reads the image bytes of a predict request: one multipart file, or JSON {url}. */
  async function readInput(req: FastifyRequest, signal: AbortSignal): Promise<{ bytes: Buffer; source: 'upload' | 'url' }> {
    const type = (req.headers['content-type'] ?? '').toLowerCase();
    if (req.isMultipart()) {
      const part = await abortable(req.file({ limits: { fileSize: maxUploadBytes } }), signal);
      if (!part) throw new PneumoError(400, 'bad_request', 'No file in the form: send the image in the field "file".');
      if (part.fieldname !== 'file') {
        part.file.resume();
        throw new PneumoError(400, 'bad_request', `Unexpected form field: send the image in the field "file".`);
      }
      signal.addEventListener('abort', () => part.file.destroy(), { once: true });
      const bytes = await abortable(part.toBuffer(), signal);
      if (bytes.length === 0) throw new PneumoError(400, 'bad_request', 'The uploaded file is empty.');
      return { bytes, source: 'upload' };
    }
    if (type.startsWith('application/json')) {
      const body = req.body as unknown;
      const keys = body && typeof body === 'object' && !Array.isArray(body) ? Object.keys(body) : null;
      const url = keys ? (body as { url?: unknown }).url : undefined;
      if (!keys || typeof url !== 'string' || keys.length !== 1) {
        throw new PneumoError(400, 'bad_request', 'The JSON body must be {"url": "https://..."}.');
      }
      if (url.length > 2048) throw new PneumoError(400, 'bad_request', 'The URL is too long (at most 2048 characters).');
      const { bytes } = await fetchImageUrl(url, urlPolicy, {
        maxBytes: maxUploadBytes,
        timeoutMs: opts.urlFetchTimeoutMs,
        signal,
        resolve: opts.urlResolver,
      });
      return { bytes, source: 'url' };
    }
    if (!type)
      throw new PneumoError(400, 'bad_request', 'No image: send multipart/form-data with a field "file", or JSON {"url": "https://..."}.');
    throw new PneumoError(
      415,
      'unsupported_media_type',
      'Send the image as multipart/form-data (field "file") or JSON {"url": "https://..."}.',
    );
  }

  app.post<{ Querystring: PredictQuery }>(
    '/api/predict',
    {
      schema: { querystring: PREDICT_QUERY_SCHEMA },
      bodyLimit: JSON_BODY_LIMIT,
      onRequest: async (req) => {
        const declared = Number(req.headers['content-length']);
        if (Number.isFinite(declared) && declared > maxUploadBytes + MULTIPART_SLACK_BYTES) {
          throw new PneumoError(413, 'payload_too_large', `The file is larger than the limit of ${maxUploadText}.`);
        }
      },
    },
    async (req, reply) => {
      const t0 = performance.now();
      const engine = readyEngine();
      const options = toAnalyseOptions(req.query);
      const ticket = limiter.admit(); // before the body is read: bounds the uploads held in memory
      const ctrl = new AbortController();
      const timer = setTimeout(
        () =>
          ctrl.abort(
            new PneumoError(504, 'timeout', `The analysis did not finish within ${requestTimeoutMs / 1000} s. Please retry later.`),
          ),
        requestTimeoutMs,
      );
      try {
        const input = await readInput(req, ctrl.signal);
        const t1 = performance.now();
        let started = 0;
        const result = await abortable(
          ticket.run(() => {
            started = performance.now();
            return engine.analyse(input.bytes, options);
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
