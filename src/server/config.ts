/** The options of buildApp, and what they resolve to: defaults filled in, policies and budgets built. */
import os from 'node:os';
import { createRequire } from 'node:module';
import { DEFAULT_MAX_CONNECTIONS } from './edge.ts';
import type { PredictEngine } from './engine-state.ts';
import { UrlPolicy, type Resolver } from './fetch-url.ts';
import { HostPolicy } from './host.ts';
import { Limiter } from './limiter.ts';
import type { LogOption } from './logging.ts';
import { openApiDocument, type OpenApiDocument } from './openapi.ts';
import { OriginPolicy } from './origin.ts';
import { BodyLimit } from './read-input.ts';
import { UploadBudget } from './uploads.ts';

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
  logger?: LogOption;
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

const list = (env: string | undefined) => (env ?? '').split(/[\s,]+/).filter(Boolean);

export function appConfig(opts: AppOptions) {
  const maxUploadBytes = opts.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES;
  const uploadTimeoutMs = opts.uploadTimeoutMs ?? 30_000;
  const uploadIdleTimeoutMs = opts.uploadIdleTimeoutMs ?? 10_000;
  const uploads = new UploadBudget({
    maxUploads: opts.maxUploads ?? 256,
    maxBytesInFlight: opts.maxUploadBytesInFlight ?? 8 * maxUploadBytes,
    retryAfterS: Math.max(1, Math.ceil(uploadIdleTimeoutMs / 1000)),
  });
  const originList = opts.allowedOrigins ?? list(process.env.PNEUMOLENS_ALLOWED_ORIGINS);
  const origins = OriginPolicy.from(originList);
  const hosts = HostPolicy.from(
    opts.allowedHosts ?? list(process.env.PNEUMOLENS_ALLOWED_HOSTS),
    originList.filter((o) => o !== '*').map((o) => new URL(o).host),
  );
  const limiter = new Limiter({
    maxConcurrent: opts.maxConcurrent ?? Math.max(1, os.availableParallelism()), // = defaultMaxConcurrent()
    maxQueue: opts.maxQueue ?? DEFAULT_MAX_QUEUE,
  });
  const urlPolicy = opts.urlAllowList ? new UrlPolicy({ allow: opts.urlAllowList }) : UrlPolicy.fromEnv(process.env.PNEUMOLENS_URL_ALLOW);
  return {
    limit: new BodyLimit(maxUploadBytes),
    requestTimeoutMs: opts.requestTimeoutMs ?? 30_000,
    uploadTimeoutMs,
    uploadIdleTimeoutMs,
    uploads,
    origins,
    hosts,
    maxConnections: opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
    limiter,
    urlPolicy,
    startedAt: Date.now(),
    /** The OpenAPI document, built afresh each time. */
    openApi: (): OpenApiDocument => openApiDocument({ version: PACKAGE_VERSION, maxUploadBytes }),
  };
}
