/** The read-only API: /api/health, /api/model, /api/openapi.json and /docs. */
import type { FastifyInstance } from 'fastify';
import { intendedPopulation, type CardInfo } from '../eval/card.ts';
import type { EngineState } from './engine-state.ts';
import type { Limiter } from './limiter.ts';
import { renderDocsHtml, resolvedSchema, type OpenApiDocument } from './openapi.ts';
import { round } from './predict-route.ts';
import type { UploadBudget } from './uploads.ts';

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

export interface InfoRouteOptions {
  /** The OpenAPI document, built afresh for each request of it. */
  openApi: () => OpenApiDocument;
  /** One built document, whose schemas serialise the answers. */
  doc: OpenApiDocument;
  engine: EngineState;
  limiter: Limiter;
  uploads: UploadBudget;
  /** Open connections now (capConnections). */
  connections: () => number;
  startedAt: number;
}

export function registerInfoRoutes(app: FastifyInstance, o: InfoRouteOptions): void {
  const { engine: state, limiter, uploads, openApi } = o;
  app.get(
    '/api/health',
    { schema: { response: { 200: resolvedSchema(o.doc, 'Health'), 503: resolvedSchema(o.doc, 'Health') } } },
    async (_req, reply) => {
      const engine = state.engine;
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
        // what every answer stands on: the site profile's calibration, threshold and scope, or the card's (null)
        site: engine?.site ?? null,
        uptime_s: round((Date.now() - o.startedAt) / 1000, 1),
        load: {
          active: s.active,
          queued: s.queued,
          max_concurrent: s.maxConcurrent,
          max_queue: s.maxQueue,
          uploads_in_flight: u.inFlight,
          upload_bytes_in_flight: u.bytes,
          connections: o.connections(),
          ...(workers
            ? { engine_workers: workers.workers, engine_workers_expected: workers.expected, recycled_after_deadline: workers.recycled }
            : {}),
        },
      };
    },
  );

  app.get('/api/model', async () => {
    const engine = state.ready();
    return { ...(publicCard(engine.card) as object), site: engine.site ?? null }; // the site profile in use (null: the card alone)
  });

  app.get('/api/openapi.json', async () => openApi());
  app.get('/docs', async (_req, reply) => {
    reply.type('text/html; charset=utf-8');
    return renderDocsHtml(openApi());
  });
}
