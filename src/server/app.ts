/**
 * The Fastify app factory. The engine is injected (the real one from start.ts, any object with the
 * same `card` and `analyse` in tests), so every route runs in-process under `app.inject`. Each
 * concern is its own module; buildApp composes them, in the order Fastify needs.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import multipart from '@fastify/multipart';
import { appConfig, type AppOptions } from './config.ts';
import { capConnections, guardRequests } from './edge.ts';
import { EngineState } from './engine-state.ts';
import { errorHandler, notFoundHandler } from './error-handler.ts';
import { clientErrorHandler } from './errors.ts';
import { registerInfoRoutes } from './info-routes.ts';
import { loggerOptions } from './logging.ts';
import { registerPredictRoute } from './predict-route.ts';
import { inputReader } from './read-input.ts';
import { serveStatic } from './static-files.ts';

// What tests, start.ts and the benches import from here.
export { DEFAULT_MAX_QUEUE, DEFAULT_MAX_UPLOAD_BYTES, type AppOptions } from './config.ts';
export { DEFAULT_MAX_CONNECTIONS } from './edge.ts';
export type { PredictEngine } from './engine-state.ts';
export { publicCard } from './info-routes.ts';
export type { LogDestination } from './logging.ts';
export { toPredictResponse } from './predict-route.ts';
export { MAX_PART_HEADER_BYTES } from './read-input.ts';
export { DEFAULT_DEVICE_ROOT } from './static-files.ts';

export function buildApp(opts: AppOptions): FastifyInstance {
  const { limit, limiter, uploads, ...cfg } = appConfig(opts);
  const app = Fastify({
    logger: loggerOptions(opts.logger),
    return503OnClosing: false, // we answer 503 ourselves, in the API's error format
    // Backstop of the HTTP server itself for bodies we do not read (JSON); answered by clientErrorHandler.
    requestTimeout: cfg.uploadTimeoutMs + 5_000,
    clientErrorHandler, // 400, 408 and 431 from Node's parser in the API's error shape
    ajv: { customOptions: { removeAdditional: false } }, // unknown query parameters are errors, not ignored
  });
  const engine = new EngineState(opts.engine, (err) => app.log.error({ err }, 'model failed to load'));
  app.addHook('preClose', async () => engine.shutDown());
  // An analysis whose client already got a 504 may still be running: close() waits for it, so the
  // engine is never disposed under a running inference.
  app.addHook('onClose', async () => {
    await limiter.idle();
  });
  const connections = capConnections(app.server, cfg.maxConnections);
  guardRequests(app, { hosts: cfg.hosts, origins: cfg.origins, engine });
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler(notFoundHandler);
  app.register(multipart, limit.multipartOptions());
  serveStatic(app, opts);

  const doc = cfg.openApi();
  registerInfoRoutes(app, { openApi: cfg.openApi, doc, engine, limiter, uploads, connections, startedAt: cfg.startedAt });
  const readInput = inputReader({
    limit,
    uploads,
    uploadTimeoutMs: cfg.uploadTimeoutMs,
    uploadIdleTimeoutMs: cfg.uploadIdleTimeoutMs,
    urlPolicy: cfg.urlPolicy,
    urlFetchTimeoutMs: opts.urlFetchTimeoutMs,
    urlHeadersTimeoutMs: opts.urlHeadersTimeoutMs,
    urlResolver: opts.urlResolver,
  });
  registerPredictRoute(app, { doc, engine, limiter, limit, readInput, requestTimeoutMs: cfg.requestTimeoutMs });
  return app;
}
