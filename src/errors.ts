/**
 * The one error class of pneumolens and the one table of its error codes. A code carries its HTTP
 * status and a generic message for people (used when nothing more specific is said); the server's
 * error mapping, the OpenAPI document and the CLI all derive from ERRORS, so a code exists once.
 */
interface ErrorSpec {
  /** The HTTP status the server answers with. */
  status: number;
  /** For people, when the raiser has nothing more specific to say. */
  message: string;
  /** Other statuses this code may be answered with (stated where they are raised). */
  also?: readonly number[];
}

export const ERRORS = {
  bad_request: { status: 400, message: 'The request is malformed.' },
  url_forbidden: { status: 400, message: 'This URL is not allowed.' },
  forbidden: { status: 403, message: 'Access to this address is not allowed.' },
  not_found: { status: 404, message: 'There is nothing at this address.' },
  method_not_allowed: { status: 405, message: 'This method is not allowed here.' },
  request_timeout: { status: 408, message: 'The request took too long to arrive.' },
  payload_too_large: { status: 413, message: 'The request is too large.' },
  unsupported_media_type: { status: 415, message: 'This content type is not accepted.' },
  undecodable_image: { status: 422, message: 'The image could not be decoded.' },
  // truncated or corrupt codestream, short strip, missing end marker, codec warning: never analysed as if intact
  damaged_image: { status: 422, message: 'The image file is damaged (truncated or corrupt); it was not analysed.' },
  unusable_image: { status: 422, message: 'The image cannot be analysed.' },
  not_a_chest_xray: { status: 422, message: 'This does not look like a chest X-ray.' },
  outside_intended_use: { status: 422, message: 'This chest X-ray is outside the population the model is validated for.' },
  headers_too_large: { status: 431, message: 'The request headers are too large.' },
  internal_error: { status: 500, message: 'Something went wrong on our side. The error was logged.' },
  model_error: { status: 500, message: 'The model produced an invalid output.' },
  // 504 when the host does not answer in time
  url_fetch_failed: { status: 502, message: 'Could not fetch the image from the URL.', also: [504] },
  busy: { status: 503, message: 'The server is busy. Please retry shortly.' },
  timeout: { status: 504, message: 'The analysis did not finish in time. Please retry later.' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

export const ERROR_CODES = Object.keys(ERRORS) as ErrorCode[];

/** Every status a code may be answered with. */
export function statusesOf(code: ErrorCode): number[] {
  const spec: ErrorSpec = ERRORS[code];
  return [spec.status, ...(spec.also ?? [])];
}

/** The codes answered with a status, in table order. */
export function codesWithStatus(status: number): ErrorCode[] {
  return ERROR_CODES.filter((c) => statusesOf(c).includes(status));
}

export class PneumoError extends Error {
  readonly status: number;
  readonly code: ErrorCode;
  /** Extra fields that are safe to show the user (e.g. a gate score). */
  readonly details?: Record<string, unknown>;

  /**
   * `status` defaults to the code's; another one must be listed in the code's `also` (a
   * programming error otherwise).
   */
  constructor(code: ErrorCode, message: string = ERRORS[code].message, details?: Record<string, unknown>, status?: number) {
    super(message);
    this.name = 'PneumoError';
    if (!(code in ERRORS)) throw new Error(`unknown error code ${String(code)}`);
    if (status !== undefined && !statusesOf(code).includes(status)) throw new Error(`error code ${code} is never answered with ${status}`);
    this.status = status ?? ERRORS[code].status;
    this.code = code;
    this.details = details;
  }

  toJSON(): { error: { code: ErrorCode; message: string } & Record<string, unknown> } {
    return { error: { code: this.code, message: this.message, ...(this.details ?? {}) } };
  }
}

export function isPneumoError(e: unknown): e is PneumoError {
  return e instanceof PneumoError;
}
