/**
 * The central error mapping of the HTTP API: PneumoError, Fastify's own errors and anything else
 * become `{ "error": { "code", "message", ...safe details } }` with the right status. Never a stack
 * trace to the client; unknown errors are a generic 500 (logged server-side).
 */
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError } from 'fastify';
import { isPneumoError } from '../errors.js';

export interface ErrorBody {
  error: { code: string; message: string } & Record<string, unknown>;
}

export interface MappedError {
  status: number;
  body: ErrorBody;
  /** Seconds for a Retry-After header (busy, shutting down). */
  retryAfter?: number;
  /** True for errors we did not anticipate: log them in full. */
  unexpected: boolean;
}

const GENERIC: Record<number, { code: string; message: string }> = {
  400: { code: 'bad_request', message: 'The request is malformed.' },
  403: { code: 'forbidden', message: 'Access to this address is not allowed.' },
  404: { code: 'not_found', message: 'There is nothing at this address.' },
  405: { code: 'method_not_allowed', message: 'This method is not allowed here.' },
  408: { code: 'request_timeout', message: 'The request took too long to arrive.' },
  413: { code: 'payload_too_large', message: 'The request is too large.' },
  415: { code: 'unsupported_media_type', message: 'This content type is not accepted.' },
  431: { code: 'headers_too_large', message: 'The request headers are too large.' },
  500: { code: 'internal_error', message: 'Something went wrong on our side. The error was logged.' },
  503: { code: 'busy', message: 'The server is busy. Please retry shortly.' },
};

/** Fastify (and plugin) error codes whose messages we rewrite for the user. */
const FASTIFY_MESSAGES: Record<string, { status: number; code: string; message: string }> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: {
    status: 415,
    code: 'unsupported_media_type',
    message: 'Send the image as multipart/form-data (field "file") or JSON {"url": "https://..."}.',
  },
  FST_ERR_CTP_EMPTY_JSON_BODY: { status: 400, code: 'bad_request', message: 'The JSON body is empty.' },
  FST_ERR_CTP_INVALID_JSON_BODY: { status: 400, code: 'bad_request', message: 'The body is not valid JSON.' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { status: 400, code: 'bad_request', message: 'The Content-Length does not match the body.' },
  FST_ERR_CTP_BODY_TOO_LARGE: { status: 413, code: 'payload_too_large', message: 'The request body is too large.' },
  FST_INVALID_MULTIPART_CONTENT_TYPE: { status: 400, code: 'bad_request', message: 'The request is not multipart/form-data.' },
  FST_FILES_LIMIT: { status: 400, code: 'bad_request', message: 'Send exactly one file, in the field "file".' },
  FST_PARTS_LIMIT: { status: 400, code: 'bad_request', message: 'The form has too many parts.' },
  FST_FIELDS_LIMIT: { status: 400, code: 'bad_request', message: 'The form has too many fields.' },
  FST_PROTO_VIOLATION: { status: 400, code: 'bad_request', message: 'The form has a forbidden field name.' },
  FST_MP_PREMATURE_CLOSE: { status: 400, code: 'bad_request', message: 'The upload was interrupted.' },
};

export function mapError(err: unknown, maxUploadText: string): MappedError {
  if (isPneumoError(err)) {
    const body = err.toJSON();
    const retry = err.details?.retry_after_s;
    return { status: err.status, body, retryAfter: typeof retry === 'number' ? retry : undefined, unexpected: err.status === 500 };
  }
  const fe = err as Partial<FastifyError> & { validation?: unknown; validationContext?: string };
  if (fe && typeof fe === 'object') {
    if (fe.validation) {
      // Ajv messages name the parameter and the rule ("querystring/alpha must be <= 1"): safe and useful.
      return { status: 400, body: { error: { code: 'bad_request', message: `Invalid request: ${fe.message}` } }, unexpected: false };
    }
    if (fe.code === 'FST_REQ_FILE_TOO_LARGE') {
      return {
        status: 413,
        body: { error: { code: 'payload_too_large', message: `The file is larger than the limit of ${maxUploadText}.` } },
        unexpected: false,
      };
    }
    const known = fe.code ? FASTIFY_MESSAGES[fe.code] : undefined;
    if (known) return { status: known.status, body: { error: { code: known.code, message: known.message } }, unexpected: false };
    if (err instanceof SyntaxError && fe.statusCode === 400) {
      return { status: 400, body: { error: { code: 'bad_request', message: 'The body is not valid JSON.' } }, unexpected: false };
    }
    const status = fe.statusCode;
    if (typeof status === 'number' && status >= 400 && status < 500) {
      const g = GENERIC[status] ?? GENERIC[400];
      return { status, body: { error: { ...g } }, unexpected: false };
    }
  }
  return { status: 500, body: { error: { ...GENERIC[500] } }, unexpected: true };
}

export function notFoundBody(): ErrorBody {
  return { error: { ...GENERIC[404] } };
}

/**
 * Errors Node's HTTP parser raises before Fastify sees a request (a request that took too long to
 * arrive, headers too large, bytes that are not HTTP): answered on the socket, in the API's error
 * shape, and the connection closed. Installed as Fastify's clientErrorHandler.
 */
export function clientErrorHandler(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || err.code === 'EPIPE' || !socket.writable) {
    socket.destroy();
    return;
  }
  const status = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
  const body = JSON.stringify({ error: { ...GENERIC[status] } });
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
