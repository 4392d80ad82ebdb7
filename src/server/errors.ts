/**
 * The central error mapping of the HTTP API: PneumoError, Fastify's own errors and anything else
 * become `{ "error": { "code", "message", ...safe details } }` with the right status. Never a stack
 * trace to the client; unknown errors are a generic 500 (logged server-side).
 */
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError } from 'fastify';
import { codesWithStatus, ERRORS, isPneumoError, PneumoError, type ErrorCode } from '../errors.ts';

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

/** The generic answer of a status: the first code of the table answered with it. */
function generic(status: number): { code: ErrorCode; message: string } {
  const code = codesWithStatus(status)[0] ?? (status >= 500 ? 'internal_error' : 'bad_request');
  return { code, message: ERRORS[code].message };
}

/** Fastify (and plugin) error codes whose messages we rewrite for the user; the status is the code's. */
export const FASTIFY_MESSAGES: Record<string, { code: ErrorCode; message: string }> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: {
    code: 'unsupported_media_type',
    message: 'Send the image as multipart/form-data (field "file") or JSON {"url": "https://..."}.',
  },
  FST_ERR_CTP_EMPTY_JSON_BODY: { code: 'bad_request', message: 'The JSON body is empty.' },
  FST_ERR_CTP_INVALID_JSON_BODY: { code: 'bad_request', message: 'The body is not valid JSON.' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { code: 'bad_request', message: 'The Content-Length does not match the body.' },
  FST_ERR_CTP_BODY_TOO_LARGE: { code: 'payload_too_large', message: 'The request body is too large.' },
  FST_INVALID_MULTIPART_CONTENT_TYPE: { code: 'bad_request', message: 'The request is not multipart/form-data.' },
  FST_FILES_LIMIT: { code: 'bad_request', message: 'Send exactly one file, in the field "file".' },
  FST_PARTS_LIMIT: { code: 'bad_request', message: 'The form has too many parts.' },
  FST_FIELDS_LIMIT: { code: 'bad_request', message: 'The form has too many fields.' },
  FST_PROTO_VIOLATION: { code: 'bad_request', message: 'The form has a forbidden field name.' },
  FST_MP_PREMATURE_CLOSE: { code: 'bad_request', message: 'The upload was interrupted.' },
};

/**
 * The answer to an error that reached the error handler. It only maps: a step that refuses a
 * request throws a PneumoError with its status (the upload limit's 413 is BodyLimit's, read-input.ts).
 */
export function mapError(err: unknown): MappedError {
  if (isPneumoError(err)) {
    const body = err.toJSON();
    const retry = err.details?.retry_after_s;
    return { status: err.status, body, retryAfter: typeof retry === 'number' ? retry : undefined, unexpected: err.status === 500 };
  }
  const fe = err as Partial<FastifyError> & { validation?: unknown; validationContext?: string };
  if (fe && typeof fe === 'object') {
    if (fe.validation) {
      // Ajv messages name the parameter and the rule ("querystring/alpha must be <= 1"): safe and useful.
      return { status: 400, body: new PneumoError('bad_request', `Invalid request: ${fe.message}`).toJSON(), unexpected: false };
    }
    const known = fe.code ? FASTIFY_MESSAGES[fe.code] : undefined;
    if (known) return mapError(new PneumoError(known.code, known.message));
    if (err instanceof SyntaxError && fe.statusCode === 400)
      return mapError(new PneumoError('bad_request', FASTIFY_MESSAGES.FST_ERR_CTP_INVALID_JSON_BODY.message));
    const status = fe.statusCode;
    if (typeof status === 'number' && status >= 400 && status < 500) {
      return { status, body: { error: generic(status) }, unexpected: false };
    }
  }
  return { status: 500, body: { error: generic(500) }, unexpected: true };
}

export function notFoundBody(): ErrorBody {
  return { error: generic(404) };
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
  const body = JSON.stringify({ error: generic(status) });
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
