/**
 * Log serializers: a request is logged as method + route pattern (never the raw URL, which could
 * carry a file name), a response as its status, an error as its type, code and message. Upload
 * contents, file names, fetched URLs and DICOM tags are never handed to the logger.
 */
import type { FastifyRequest, FastifyServerOptions } from 'fastify';

export interface LogDestination {
  write(line: string): void;
}

/** false (no log), true (info to stdout) or a level and/or a destination. */
export type LogOption = boolean | { level?: string; stream?: LogDestination };

const serializers = {
  req: (req: FastifyRequest) => ({ id: req.id, method: req.method, route: req.routeOptions?.url ?? '(no route)' }),
  res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
  err: (err: Error & { code?: string }) => ({ type: err.name, code: err.code, message: err.message, stack: err.stack }),
};

export function loggerOptions(logger: LogOption | undefined): FastifyServerOptions['logger'] {
  if (!logger) return false;
  const o = logger === true ? {} : logger;
  return { level: o.level ?? 'info', serializers, ...(o.stream ? { stream: o.stream } : {}) } as FastifyServerOptions['logger'];
}
