/**
 * Reads the image bytes of a predict request: one multipart file, or JSON {url}. Holds no queue
 * slot: the body is bounded by the upload budget (count and bytes in transit), an idle timeout and
 * a deadline (408), the upload limit (413, BodyLimit), and a URL fetch by its own timeouts.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { FastifyRequest } from 'fastify';
import { isPneumoError, PneumoError } from '../errors.ts';
import { abortable } from './abortable.ts';
import { fetchImageUrl, formatBytes, type Resolver, type UrlPolicy } from './fetch-url.ts';
import { collectBody, PartHeaderScanner, requestTimeout, type Upload, type UploadBudget } from './uploads.ts';

/** Room for the multipart envelope around the file when checking Content-Length up front. */
const MULTIPART_SLACK_BYTES = 64 * 1024;
/** Longest header block of a multipart part (Content-Disposition, Content-Type): a real one is a few hundred bytes. */
export const MAX_PART_HEADER_BYTES = 8 * 1024;

/**
 * The upload limit, and the one place its 413 is made: for a declared Content-Length past it
 * (before a byte is read), for a multipart body growing past it as it arrives, and for the file
 * part itself (ours or the multipart parser's fileSize limit).
 */
export class BodyLimit {
  /** The limit for people ("20 MB"). */
  readonly text: string;

  constructor(readonly maxBytes: number) {
    this.text = formatBytes(maxBytes);
  }

  tooLarge(): PneumoError {
    return new PneumoError('payload_too_large', `The file is larger than the limit of ${this.text}.`);
  }

  /** A whole body (the file and its multipart envelope) longer than this is refused. */
  exceeded(bodyBytes: number): boolean {
    return bodyBytes > this.maxBytes + MULTIPART_SLACK_BYTES;
  }

  /** The route's onRequest step: a declared Content-Length past the limit is 413 at once. */
  checkDeclared(headers: IncomingHttpHeaders): void {
    const declared = Number(headers['content-length']);
    if (Number.isFinite(declared) && this.exceeded(declared)) throw this.tooLarge();
  }

  /** The options of @fastify/multipart: one file of at most the limit, a few small fields. */
  multipartOptions() {
    return { limits: { fileSize: this.maxBytes, files: 1, fields: 8, parts: 9, fieldSize: 4096, headerPairs: 64 } };
  }
}

export interface InputOptions {
  limit: BodyLimit;
  uploads: UploadBudget;
  /** An upload must be complete within this (then 408). */
  uploadTimeoutMs: number;
  /** An upload that sends nothing for this long is dropped (then 408). */
  uploadIdleTimeoutMs: number;
  urlPolicy: UrlPolicy;
  urlFetchTimeoutMs?: number;
  urlHeadersTimeoutMs?: number;
  urlResolver?: Resolver;
}

export interface Input {
  bytes: Buffer;
  source: 'upload' | 'url';
}

export type ReadInput = (req: FastifyRequest) => Promise<Input>;

export function inputReader(o: InputOptions): ReadInput {
  return async (req) => {
    const type = (req.headers['content-type'] ?? '').toLowerCase();
    if (req.isMultipart()) return { bytes: await readUpload(req, type, o), source: 'upload' };
    if (type.startsWith('application/json')) return { bytes: await readUrl(req, o), source: 'url' };
    if (!type)
      throw new PneumoError('bad_request', 'No image: send multipart/form-data with a field "file", or JSON {"url": "https://..."}.');
    throw new PneumoError('unsupported_media_type', 'Send the image as multipart/form-data (field "file") or JSON {"url": "https://..."}.');
  };
}

/** A multipart upload, under the upload budget, its deadline, its idle timeout and the limit. */
async function readUpload(req: FastifyRequest, type: string, o: InputOptions): Promise<Buffer> {
  if (!/;\s*boundary=/.test(type)) {
    throw new PneumoError('bad_request', 'The multipart/form-data Content-Type has no boundary parameter.');
  }
  const { limit, uploadTimeoutMs, uploadIdleTimeoutMs } = o;
  const upload = o.uploads.begin();
  const ctrl = new AbortController();
  const deadline = setTimeout(
    () => ctrl.abort(requestTimeout(`The upload was not complete within ${uploadTimeoutMs / 1000} s.`)),
    uploadTimeoutMs,
  );
  let idle: NodeJS.Timeout | undefined;
  // Every byte of the body counts as it arrives, chunked or not: past the limit (plus the
  // multipart envelope) it is 413 at once, whether or not the file part ever ends.
  let received = 0;
  const parts = new PartHeaderScanner(req.headers['content-type'] ?? '', MAX_PART_HEADER_BYTES);
  const onData = (chunk: Buffer) => {
    received += chunk.length;
    if (limit.exceeded(received)) ctrl.abort(limit.tooLarge());
    else if (!parts.push(chunk)) {
      ctrl.abort(new PneumoError('bad_request', `A part header of the form is longer than ${MAX_PART_HEADER_BYTES} bytes.`));
    }
    bump();
  };
  const bump = () => {
    clearTimeout(idle);
    idle = setTimeout(
      () => ctrl.abort(requestTimeout(`The upload stalled: no data for ${uploadIdleTimeoutMs / 1000} s.`)),
      uploadIdleTimeoutMs,
    );
  };
  bump();
  req.raw.on('data', onData);
  try {
    return await abortable(readMultipartFile(req, upload, limit, ctrl.signal), ctrl.signal);
  } catch (e) {
    const code = (e as { code?: unknown }).code?.toString();
    if (code === 'FST_REQ_FILE_TOO_LARGE') throw limit.tooLarge(); // the parser's fileSize limit
    if (isPneumoError(e) || code?.startsWith('FST_')) throw e;
    // busboy's parse errors (no closing boundary, malformed part headers, body shorter than declared)
    throw new PneumoError('bad_request', 'The multipart body is malformed or incomplete.');
  } finally {
    clearTimeout(deadline);
    clearTimeout(idle);
    req.raw.off('data', onData);
    upload.end();
  }
}

/** The one file of a multipart body; a second file is an error, other fields are ignored. */
async function readMultipartFile(req: FastifyRequest, upload: Upload, limit: BodyLimit, signal: AbortSignal): Promise<Buffer> {
  let bytes: Buffer | undefined;
  for await (const part of req.parts({ limits: { fileSize: limit.maxBytes } })) {
    if (part.type !== 'file') continue;
    if (bytes !== undefined || part.fieldname !== 'file') {
      part.file.resume();
      throw new PneumoError('bad_request', 'Send exactly one file, in the field "file".');
    }
    bytes = await collectBody(part.file, upload, limit.maxBytes, () => limit.tooLarge(), signal);
  }
  if (bytes === undefined) throw new PneumoError('bad_request', 'No file in the form: send the image in the field "file".');
  if (bytes.length === 0) throw new PneumoError('bad_request', 'The uploaded file is empty.');
  return bytes;
}

/** JSON {"url": ...}: the image fetched under the upload budget, dropped when the client goes away. */
async function readUrl(req: FastifyRequest, o: InputOptions): Promise<Buffer> {
  const body = req.body as unknown;
  const keys = body && typeof body === 'object' && !Array.isArray(body) ? Object.keys(body) : null;
  const url = keys ? (body as { url?: unknown }).url : undefined;
  if (!keys || typeof url !== 'string' || keys.length !== 1) {
    throw new PneumoError('bad_request', 'The JSON body must be {"url": "https://..."}.');
  }
  if (url.length > 2048) throw new PneumoError('bad_request', 'The URL is too long (at most 2048 characters).');
  const upload = o.uploads.begin();
  const ctrl = new AbortController();
  const onClose = () => ctrl.abort(new PneumoError('bad_request', 'The client went away.'));
  req.raw.socket?.once('close', onClose);
  try {
    const { bytes } = await fetchImageUrl(url, o.urlPolicy, {
      maxBytes: o.limit.maxBytes,
      timeoutMs: o.urlFetchTimeoutMs,
      headersTimeoutMs: o.urlHeadersTimeoutMs,
      signal: ctrl.signal,
      resolve: o.urlResolver,
      onData: (n) => upload.add(n),
    });
    return bytes;
  } finally {
    req.raw.socket?.off('close', onClose);
    upload.end();
  }
}
