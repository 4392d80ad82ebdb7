/**
 * The one error class of pneumolens. It carries the HTTP status the server answers with, a stable
 * machine-readable code and a message written for the user (never a stack trace).
 */
export type ErrorCode =
  | 'bad_request'
  | 'forbidden'
  | 'request_timeout'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'undecodable_image'
  | 'unusable_image'
  | 'not_a_chest_xray'
  | 'outside_intended_use'
  | 'busy'
  | 'timeout'
  | 'url_forbidden'
  | 'url_fetch_failed'
  | 'model_error'
  | 'internal_error';

export class PneumoError extends Error {
  readonly status: number;
  readonly code: ErrorCode;
  /** Extra fields that are safe to show the user (e.g. a gate score). */
  readonly details?: Record<string, unknown>;

  constructor(status: number, code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = 'PneumoError';
    this.status = status;
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
