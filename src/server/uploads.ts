/**
 * Bounds on request bodies while they arrive, separate from the compute slots of the Limiter.
 *
 * A predict request takes no queue slot until its image is complete (uploaded or fetched), so a
 * client that opens connections and stops sending cannot lock anyone out of the analysis queue.
 * What a body in transit can cost is bounded here instead:
 * - memory: the bytes received and not yet handed over, summed over all uploads and URL fetches,
 *   stay under `maxBytesInFlight` (a stalled upload holds only what it sent);
 * - count: at most `maxUploads` bodies in transit;
 * - time: readBody() ends an upload with 408 when no byte arrived for `idleTimeoutMs`, or when it is
 *   not complete after `timeoutMs`.
 */
import type { Readable } from 'node:stream';
import { PneumoError } from '../errors.ts';

export interface UploadLimits {
  maxUploads: number;
  maxBytesInFlight: number;
  /** Seconds suggested to clients refused because uploads are saturated. */
  retryAfterS: number;
}

export interface UploadStats {
  inFlight: number;
  bytes: number;
  maxUploads: number;
  maxBytesInFlight: number;
}

export interface Upload {
  /** Accounts `n` more bytes; throws 503 when the budget of bytes in flight would be exceeded. */
  add(n: number): void;
  /** Ends the upload and returns its bytes to the budget. Idempotent. */
  end(): void;
}

export class UploadBudget {
  private inFlight = 0;
  private bytes = 0;

  constructor(private readonly limits: UploadLimits) {}

  stats(): UploadStats {
    return {
      inFlight: this.inFlight,
      bytes: this.bytes,
      maxUploads: this.limits.maxUploads,
      maxBytesInFlight: this.limits.maxBytesInFlight,
    };
  }

  private busy(): PneumoError {
    return new PneumoError('busy', 'The server is receiving too many uploads. Please retry shortly.', {
      retry_after_s: this.limits.retryAfterS,
    });
  }

  /** Starts an upload, or throws 503 'busy' when `maxUploads` are already in transit. */
  begin(): Upload {
    if (this.inFlight >= this.limits.maxUploads) throw this.busy();
    this.inFlight++;
    let mine = 0;
    let ended = false;
    return {
      add: (n: number) => {
        if (ended) return;
        if (this.bytes + n > this.limits.maxBytesInFlight) throw this.busy();
        this.bytes += n;
        mine += n;
      },
      end: () => {
        if (ended) return;
        ended = true;
        this.inFlight--;
        this.bytes -= mine;
      },
    };
  }
}

export function requestTimeout(message: string): PneumoError {
  return new PneumoError('request_timeout', message);
}

/**
 * Reads a stream into one Buffer, accounting each chunk to `upload` and refusing more than
 * `maxBytes` (413, via `tooLarge`). Rejects with the signal's reason when it aborts (the stream is
 * destroyed), and with 413 when the stream reports it was truncated at a size limit.
 */
export function collectBody(
  stream: Readable & { truncated?: boolean },
  upload: Upload,
  maxBytes: number,
  tooLarge: () => PneumoError,
  signal: AbortSignal,
): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const settle = (err: unknown, value?: Buffer) => {
      if (done) return;
      done = true;
      signal.removeEventListener('abort', onAbort);
      if (err !== undefined) {
        stream.destroy();
        reject(err instanceof Error ? err : new Error(String(err)));
      } else resolve(value!);
    };
    const onAbort = () => settle(signal.reason);
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    stream.on('data', (chunk: Buffer) => {
      if (done) return;
      try {
        upload.add(chunk.length);
      } catch (e) {
        return settle(e);
      }
      size += chunk.length;
      if (size > maxBytes) return settle(tooLarge());
      chunks.push(chunk);
    });
    stream.on('end', () => (stream.truncated ? settle(tooLarge()) : settle(undefined, Buffer.concat(chunks, size))));
    stream.on('error', (err) => settle(err));
  });
}

/**
 * Watches a multipart body as it arrives and reports a part whose header block (after its boundary
 * line, up to the blank line) is longer than `maxBytes`: busboy only truncates such a header (at
 * 80 KB) and reads on, so a 100 KB part header was accepted. Boundaries split across chunks are
 * found (a few bytes of each chunk are kept for the next).
 */
export class PartHeaderScanner {
  private readonly delimiter: Buffer | undefined;
  private state: 'body' | 'header' = 'body';
  private headerBytes = 0;
  private tail: Buffer = Buffer.alloc(0);

  constructor(
    contentType: string,
    private readonly maxBytes = 8 * 1024,
  ) {
    const m = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
    this.delimiter = m ? Buffer.from(`--${m[1] ?? m[2]}`, 'latin1') : undefined;
  }

  /** Feeds the next chunk of the body; false once a part header is too long. */
  push(chunk: Buffer): boolean {
    if (!this.delimiter) return true;
    const seen = this.tail.length; // bytes of `data` already fed (and counted)
    const data = seen ? Buffer.concat([this.tail, chunk]) : chunk;
    let pos = 0;
    for (;;) {
      if (this.state === 'body') {
        const i = data.indexOf(this.delimiter, pos);
        if (i < 0) {
          this.tail = Buffer.from(data.subarray(Math.max(pos, data.length - (this.delimiter.length - 1))));
          return true;
        }
        this.state = 'header';
        this.headerBytes = 0;
        pos = i + this.delimiter.length;
        continue;
      }
      const j = data.indexOf('\r\n\r\n', pos, 'latin1');
      const end = j < 0 ? data.length : j;
      this.headerBytes += Math.max(0, end - Math.max(pos, seen));
      if (this.headerBytes > this.maxBytes) return false;
      if (j < 0) {
        this.tail = Buffer.from(data.subarray(Math.max(pos, data.length - 3)));
        return true;
      }
      this.state = 'body';
      pos = j + 4;
    }
  }
}
