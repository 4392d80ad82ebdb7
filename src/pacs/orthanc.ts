/**
 * The few Orthanc REST calls the PACS watcher needs, each bounded: a timeout per request and a
 * size cap on what is downloaded. Credentials go in an Authorization header; the base URL this
 * client shows (`origin`) never carries them.
 */
import { PneumoError } from '../errors.ts';

export interface OrthancOptions {
  /** Base URL, e.g. http://127.0.0.1:8042 (credentials in the URL are moved to the header). */
  url: string;
  username?: string;
  password?: string;
  /** Per-request timeout (default 30 s). */
  timeoutMs?: number;
  /** Largest instance file downloaded (default 64 MiB). */
  maxFileBytes?: number;
}

export interface Change {
  ChangeType: string;
  ResourceType: string;
  ID: string;
  Path: string;
  Seq: number;
  Date: string;
}

export interface ChangesPage {
  Changes: Change[];
  Done: boolean;
  Last: number;
}

/** An Orthanc request that failed: unreachable, timed out, or answered with an error status. */
export class OrthancError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'OrthancError';
  }
}

export class Orthanc {
  /** The base URL without credentials, safe to log and to store. */
  readonly origin: string;
  private readonly base: URL;
  private readonly auth?: string;
  private readonly timeoutMs: number;
  private readonly maxFileBytes: number;

  constructor(o: OrthancOptions) {
    let url: URL;
    try {
      url = new URL(o.url);
    } catch {
      throw new Error(`not a URL: '${redact(o.url)}'`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      throw new Error(`the Orthanc URL must be http or https, got ${url.protocol}`);
    const username = o.username ?? (url.username ? decodeURIComponent(url.username) : undefined);
    const password = o.password ?? (url.password ? decodeURIComponent(url.password) : undefined);
    url.username = '';
    url.password = '';
    url.search = '';
    url.hash = '';
    if (!url.pathname.endsWith('/')) url.pathname += '/';
    this.base = url;
    this.origin = url.toString();
    if (username !== undefined) this.auth = 'Basic ' + Buffer.from(`${username}:${password ?? ''}`).toString('base64');
    this.timeoutMs = o.timeoutMs ?? 30_000;
    this.maxFileBytes = o.maxFileBytes ?? 64 * 1024 * 1024;
  }

  /** One page of the change feed after `since`. */
  changes(since: number, limit: number): Promise<ChangesPage> {
    return this.json(`changes?since=${since}&limit=${limit}`);
  }

  /** The sequence number of the latest change. */
  async lastChange(): Promise<number> {
    return (await this.json<ChangesPage>('changes?last')).Last;
  }

  /** An instance's tags, names as keys, text values decoded by Orthanc (no pixel data). */
  tags(instanceId: string): Promise<Record<string, unknown>> {
    return this.json(`instances/${encodeURIComponent(instanceId)}/simplified-tags`);
  }

  /** The instance's DICOM file; PneumoError 413 above the size cap, without reading it all. */
  async file(instanceId: string): Promise<Uint8Array> {
    const res = await this.request(`instances/${encodeURIComponent(instanceId)}/file`);
    const declared = Number(res.headers.get('content-length'));
    if (declared > this.maxFileBytes) {
      await res.body?.cancel();
      throw tooLarge(this.maxFileBytes);
    }
    const chunks: Uint8Array[] = [];
    let total = 0;
    const reader = res.body!.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > this.maxFileBytes) {
        await reader.cancel();
        throw tooLarge(this.maxFileBytes);
      }
      chunks.push(value);
    }
    return Buffer.concat(chunks);
  }

  /** Whether an instance with this SOP Instance UID is stored. */
  async hasInstance(sopInstanceUid: string): Promise<boolean> {
    const found = await this.json<Array<{ Type: string }>>('tools/lookup', { method: 'POST', body: sopInstanceUid });
    return found.some((r) => r.Type === 'Instance');
  }

  /** Stores a DICOM file; storing the same SOP Instance UID again is a no-op in Orthanc. */
  async store(file: Uint8Array): Promise<{ ID: string; Status: string; ParentStudy: string }> {
    return this.json('instances', { method: 'POST', body: file, headers: { 'content-type': 'application/dicom' } });
  }

  async json<T>(path: string, init: { method?: string; body?: string | Uint8Array; headers?: Record<string, string> } = {}): Promise<T> {
    const res = await this.request(path, init);
    try {
      return (await res.json()) as T;
    } catch (e) {
      throw new OrthancError(`${init.method ?? 'GET'} /${path.split('?')[0]}: bad JSON answer (${(e as Error).message})`);
    }
  }

  private async request(
    path: string,
    init: { method?: string; body?: string | Uint8Array; headers?: Record<string, string> } = {},
  ): Promise<Response> {
    const method = init.method ?? 'GET';
    const what = `${method} /${path.split('?')[0]}`;
    let res: Response;
    try {
      res = await fetch(new URL(path, this.base), {
        method,
        headers: { ...(this.auth ? { authorization: this.auth } : {}), ...init.headers },
        ...(init.body !== undefined ? { body: init.body as BodyInit } : {}),
        redirect: 'error',
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (e) {
      const err = e as Error;
      const why =
        err.name === 'TimeoutError' ? `no answer within ${this.timeoutMs} ms` : ((err.cause as Error | undefined)?.message ?? err.message);
      throw new OrthancError(`${what}: ${why}`);
    }
    if (!res.ok) {
      await res.body?.cancel();
      const hint = res.status === 401 ? ' (check the user name and PNEUMOLENS_ORTHANC_PASSWORD)' : '';
      throw new OrthancError(`${what}: HTTP ${res.status}${hint}`, res.status);
    }
    return res;
  }
}

const tooLarge = (max: number) =>
  new PneumoError('payload_too_large', `The instance file is larger than ${Math.round(max / (1024 * 1024))} MB (PNEUMOLENS_MAX_FILE_MB).`);

/** The URL with any user:password@ removed, for messages. */
export function redact(url: string): string {
  return url.replace(/\/\/[^/@]*@/, '//');
}
