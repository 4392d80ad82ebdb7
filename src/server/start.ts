/**
 * Starting and stopping the server: `serve()` listens with a given engine (tests, load test);
 * `startServer()` is what `pneumolens serve` / `npm start` run: it loads the engine, listens on
 * $PORT or 8080, and on SIGINT/SIGTERM stops taking requests, lets the in-flight ones finish, then
 * disposes the engine. It resolves once the server has stopped.
 */
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { buildApp, DEFAULT_DEVICE_ROOT, type AppOptions, type PredictEngine } from './app.ts';
import type { FastifyInstance } from 'fastify';

export interface ServeOptions extends AppOptions {
  port?: number;
  host?: string;
  /** Close open connections that are still busy after this long (default 30 s). */
  shutdownTimeoutMs?: number;
  /** Install SIGINT/SIGTERM handlers that shut the server down gracefully (default false). */
  handleSignals?: boolean;
}

export interface RunningServer {
  app: FastifyInstance;
  /** e.g. http://127.0.0.1:8080 */
  url: string;
  port: number;
  /** Graceful shutdown: refuse new requests (503), finish in-flight ones, close. Idempotent. */
  close(): Promise<void>;
  /** Settles when the server has closed (by close() or a signal). */
  closed: Promise<void>;
}

export async function serve(opts: ServeOptions): Promise<RunningServer> {
  const app = buildApp(opts);
  await app.listen({ port: opts.port ?? 8080, host: opts.host ?? '127.0.0.1' });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : (opts.port ?? 8080);
  const host = typeof addr === 'object' && addr ? addr.address : '127.0.0.1';
  const shutdownTimeoutMs = opts.shutdownTimeoutMs ?? 30_000;

  let markClosed!: () => void;
  const closed = new Promise<void>((resolve) => (markClosed = resolve));
  let closing: Promise<void> | undefined;
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM'];

  const onSignal = (signal: NodeJS.Signals) => {
    if (closing) {
      app.log.warn({ signal }, 'second signal: closing all connections now');
      app.server.closeAllConnections();
      return;
    }
    app.log.info({ signal }, 'shutting down: finishing in-flight requests');
    void close();
  };

  function close(): Promise<void> {
    closing ??= (async () => {
      const force = setTimeout(() => {
        app.log.warn('shutdown timeout: closing the remaining connections');
        app.server.closeAllConnections();
      }, shutdownTimeoutMs);
      force.unref();
      try {
        await app.close();
      } finally {
        clearTimeout(force);
        if (opts.handleSignals) for (const s of signals) process.off(s, onSignal);
        markClosed();
      }
    })();
    return closing;
  }

  if (opts.handleSignals) for (const s of signals) process.on(s, onSignal);
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return { app, url: `http://${shownHost}:${port}`, port, close, closed };
}

export function defaultMaxConcurrent(): number {
  return Math.max(1, availableParallelism());
}

/**
 * ONNX Runtime threads per inference when `maxConcurrent` analyses run at once: the cores shared
 * out, at least 1. Under concurrent load this beats every session using all cores (measured with
 * bench/loadtest.ts on 2 cores: 27 vs 19 requests/s, p99 1.1 vs 1.6 s).
 */
export function threadsPerAnalysis(maxConcurrent: number): number {
  return Math.max(1, Math.floor(availableParallelism() / maxConcurrent));
}

function envNumber(name: string, min: number, integer: boolean): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return undefined;
  const v = Number(raw);
  if (!Number.isFinite(v) || v < min || (integer && !Number.isInteger(v))) {
    throw new Error(`${name} must be ${integer ? 'an integer' : 'a number'} >= ${min}, got '${raw}'`);
  }
  return v;
}

const list = (raw: string | undefined): string[] => (raw ?? '').split(/[\s,]+/).filter(Boolean);

/** Server settings from the environment (all optional). */
export function serverOptionsFromEnv(): Omit<AppOptions, 'engine'> & { port?: number; host?: string } {
  const mb = envNumber('PNEUMOLENS_MAX_UPLOAD_MB', 0.001, false);
  const port = envNumber('PORT', 0, true);
  if (port !== undefined && port > 65535) throw new Error(`PORT must be a port number, got '${process.env.PORT}'`);
  return {
    ...(port !== undefined ? { port } : {}),
    ...(process.env.HOST ? { host: process.env.HOST } : {}),
    ...(mb !== undefined ? { maxUploadBytes: Math.round(mb * 1024 * 1024) } : {}),
    maxConcurrent: envNumber('PNEUMOLENS_MAX_CONCURRENT', 1, true),
    maxQueue: envNumber('PNEUMOLENS_MAX_QUEUE', 0, true),
    requestTimeoutMs: envNumber('PNEUMOLENS_REQUEST_TIMEOUT_MS', 1, true),
    uploadTimeoutMs: envNumber('PNEUMOLENS_UPLOAD_TIMEOUT_MS', 1, true),
    uploadIdleTimeoutMs: envNumber('PNEUMOLENS_UPLOAD_IDLE_TIMEOUT_MS', 1, true),
    maxUploads: envNumber('PNEUMOLENS_MAX_UPLOADS', 1, true),
    urlAllowList: list(process.env.PNEUMOLENS_URL_ALLOW),
    allowedOrigins: list(process.env.PNEUMOLENS_ALLOWED_ORIGINS),
    allowedHosts: list(process.env.PNEUMOLENS_ALLOWED_HOSTS),
    maxConnections: envNumber('PNEUMOLENS_MAX_CONNECTIONS', 1, true),
  };
}

/** The model of the on-device build that `serve` serves (its card.json), or null when there is none. */
function deviceBuildModel(): { name?: string; version?: string; sha256?: string } | null {
  try {
    return JSON.parse(readFileSync(resolve(DEFAULT_DEVICE_ROOT, 'model', 'card.json'), 'utf8')) as {
      name?: string;
      version?: string;
      sha256?: string;
    };
  } catch {
    return null;
  }
}

/**
 * Loads the engine and serves until SIGINT/SIGTERM. Port: opts.port, else $PORT, else 8080; host:
 * opts.host, else $HOST, else 127.0.0.1. The port opens while the model loads (health answers 503
 * 'loading' meanwhile); a model that fails to load closes the server and rejects.
 */
export async function startServer(opts: { port?: number; host?: string; site?: string } = {}): Promise<void> {
  const env = serverOptionsFromEnv();
  const { WorkerEngine } = await import('./engine-worker.ts');
  const site = opts.site ?? (process.env.PNEUMOLENS_SITE?.trim() || undefined);
  const maxConcurrent = env.maxConcurrent ?? defaultMaxConcurrent();
  // Analyses run in worker threads, so none of their synchronous work blocks the event loop.
  const loading: Promise<PredictEngine & { dispose(): void | Promise<void> }> = WorkerEngine.load({
    ...(process.env.PNEUMOLENS_MODEL ? { card: process.env.PNEUMOLENS_MODEL } : {}),
    // A site profile (--site, else $PNEUMOLENS_SITE): one made with another model fails the start.
    ...(site ? { site: resolve(site) } : {}),
    threads: envNumber('PNEUMOLENS_THREADS', 1, true) ?? threadsPerAnalysis(maxConcurrent),
    workers: maxConcurrent,
  });
  loading.catch(() => undefined); // handled below, after listen
  let running: RunningServer;
  try {
    running = await serve({
      ...env,
      maxConcurrent,
      engine: loading,
      port: opts.port ?? env.port ?? 8080,
      host: opts.host ?? env.host ?? '127.0.0.1',
      logger: true,
      handleSignals: true,
      // The on-device page (npm run build:web), when it was built: the page then offers both.
      ...(existsSync(DEFAULT_DEVICE_ROOT) ? { deviceRoot: DEFAULT_DEVICE_ROOT } : {}),
    });
  } catch (e) {
    // e.g. the port is taken: release the engine once it has loaded
    loading
      .then(
        (engine) => engine.dispose(),
        () => undefined,
      )
      .catch(() => undefined);
    throw e;
  }
  let engine: (PredictEngine & { dispose(): void | Promise<void> }) | undefined;
  try {
    engine = await loading;
  } catch (e) {
    await running.close();
    throw e;
  }
  const onDevice = deviceBuildModel();
  if (onDevice && onDevice.sha256 !== (engine.card as { sha256?: unknown }).sha256) {
    running.app.log.warn(
      { device: `${onDevice.name} ${onDevice.version}`, server: `${engine.card.name} ${engine.card.version}` },
      'the on-device build (dist/web) carries another model than the server: run npm run build:web again',
    );
  }
  running.app.log.info(
    { url: running.url, model: `${engine.card.name} ${engine.card.version}`, ...(engine.site ? { site: engine.site.statement } : {}) },
    'pneumolens is ready',
  );
  await running.closed;
  await engine.dispose();
}
