/**
 * POST /api/predict: the engine must be ready and the queue not full before the body is read; the
 * image is read (read-input.ts), then admitted to a compute slot and analysed within the deadline.
 */
import type { FastifyInstance } from 'fastify';
import { PneumoError } from '../errors.ts';
import type { AnalyseOptions, AnalysisResult } from '../types.ts';
import { abortable } from './abortable.ts';
import type { EngineState } from './engine-state.ts';
import type { Limiter } from './limiter.ts';
import { PREDICT_QUERY_SCHEMA, resolvedSchema, type OpenApiDocument, type PredictQuery } from './openapi.ts';
import type { BodyLimit, ReadInput } from './read-input.ts';

const JSON_BODY_LIMIT = 16 * 1024;

/**
 * Result fields passed through to the client when the engine provides them (issue 5: the input gate,
 * uncertainty, rejection). A new predict option is one entry in PREDICT_QUERY_SCHEMA plus one line
 * in toAnalyseOptions; an engine PneumoError (e.g. 422 not_a_chest_xray with its score in details)
 * already reaches the client as is.
 */
const OPTIONAL_RESULT_FIELDS = ['rejected', 'reason', 'gate', 'uncertainty', 'uncertain', 'site'] as const;

function toAnalyseOptions(q: PredictQuery): AnalyseOptions {
  const o: AnalyseOptions = { cam: q.cam ?? true };
  if (q.colormap !== undefined) o.colormap = q.colormap;
  if (q.alpha !== undefined) o.alpha = q.alpha;
  if (q.threshold !== undefined) o.threshold = q.threshold;
  if (q.force) o.force = true;
  return o;
}

export function round(v: number, digits: number): number {
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

export interface PredictRouteOptions {
  /** Answers are serialised with the OpenAPI document's own schemas (see resolvedSchema). */
  doc: OpenApiDocument;
  engine: EngineState;
  limiter: Limiter;
  limit: BodyLimit;
  readInput: ReadInput;
  /** Queue wait + analysis, from the moment the image is complete (then 504). */
  requestTimeoutMs: number;
}

export function registerPredictRoute(app: FastifyInstance, o: PredictRouteOptions): void {
  const { engine: state, limiter, requestTimeoutMs } = o;
  const errorSchema = resolvedSchema(o.doc, 'Error');
  app.post<{ Querystring: PredictQuery }>(
    '/api/predict',
    {
      schema: {
        querystring: PREDICT_QUERY_SCHEMA,
        response: { 200: resolvedSchema(o.doc, 'Prediction'), '4xx': errorSchema, '5xx': errorSchema },
      },
      bodyLimit: JSON_BODY_LIMIT,
      onRequest: async (req) => o.limit.checkDeclared(req.headers),
    },
    async (req, reply) => {
      const t0 = performance.now();
      const engine = state.ready();
      const options = toAnalyseOptions(req.query);
      limiter.refuseIfFull(); // a full queue refuses at once, without reading the body
      const input = await o.readInput(req);
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
}
