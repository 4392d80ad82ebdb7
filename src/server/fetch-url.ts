/**
 * SSRF-safe fetch of an image by URL.
 *
 * - http and https only, no credentials in the URL;
 * - every address a host name resolves to is checked *at connect time* (a custom `lookup` given
 *   to http.request), so a DNS answer that changes between a check and the connection (DNS
 *   rebinding) cannot slip through; IP literals are checked before connecting;
 * - refused: loopback, private, CGNAT, link-local, unique-local, cloud metadata, unspecified,
 *   multicast, broadcast, documentation and other reserved ranges (see ip.ts), IPv4-mapped IPv6
 *   included;
 * - an allow-list (host names or CIDRs, each optionally with a :port, e.g. an intranet PACS) lifts
 *   the refusal, except for the cloud metadata addresses, which are never contacted;
 * - redirects are followed by hand, each hop checked again, at most `maxRedirects`;
 * - one overall deadline and a byte cap; no compression is asked for.
 */
import http from 'node:http';
import https from 'node:https';
import dns from 'node:dns';
import type { LookupAddress, LookupOptions } from 'node:dns';
import { isIP } from 'node:net';
import { PneumoError } from '../errors.ts';
import { classifyAddress, cidrContains, parseCidr, type Cidr } from './ip.ts';

export type Resolver = (hostname: string) => Promise<LookupAddress[]>;

export interface UrlPolicyOptions {
  /** Host names (exact, or "*.example.org" for sub-domains) and/or IPs/CIDRs that may be private. */
  allow?: readonly string[];
}

export interface FetchUrlOptions extends UrlPolicyOptions {
  maxBytes: number;
  timeoutMs?: number; // default 10 s
  /** Connect + response headers, per hop (default 5 s): a host that never answers is dropped early. */
  headersTimeoutMs?: number;
  /** Called with each chunk's size as it arrives; a throw aborts the download with that error. */
  onData?: (bytes: number) => void;
  maxRedirects?: number; // default 3
  signal?: AbortSignal;
  /** DNS resolver (default: the system's, via dns.lookup). Tests inject one. */
  resolve?: Resolver;
}

export interface FetchedImage {
  bytes: Buffer;
  redirects: number;
}

/** One allow-list entry, optionally limited to one port (any port when `port` is undefined). */
type AllowEntry = { port?: number } & ({ kind: 'host'; host: string } | { kind: 'suffix'; suffix: string } | { kind: 'cidr'; cidr: Cidr });

/** Splits "entry:port" (IPv6 in brackets: "[fd00::1]:8042", "[fd00::/8]:8042"). */
function splitPort(entry: string, raw: string): { target: string; port?: number } {
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry);
  const plain = bracket ? null : /^([^:]+):(\d+)$/.exec(entry); // one colon: host:port, IPv4:port, CIDR:port
  const m = bracket ?? plain;
  if (!m) return { target: entry };
  const port = m[2] === undefined ? undefined : Number(m[2]);
  if (port !== undefined && !(port >= 1 && port <= 65535)) throw new Error(`URL allow-list: bad port in "${raw}"`);
  return { target: m[1], port };
}

/**
 * Compiled allow-list. Entries: host names ("pacs.local"), sub-domains ("*.hospital.org"), IPs and
 * CIDRs ("10.0.0.0/8", "fd00::/8"), each optionally with a port ("pacs.local:8042",
 * "10.0.0.0/8:443", "[fd00::1]:8042"); without a port an entry allows every port of its hosts.
 */
export class UrlPolicy {
  private readonly entries: AllowEntry[] = [];

  constructor(opts: UrlPolicyOptions = {}) {
    for (const raw of opts.allow ?? []) {
      const entry = raw.trim().toLowerCase();
      if (!entry) continue;
      const { target, port } = splitPort(entry, raw);
      if (target.includes('/') || isIP(target)) {
        this.entries.push({ kind: 'cidr', cidr: parseCidr(target), port }); // throws on a malformed CIDR: configuration error
      } else if (target.startsWith('*.') && /^[a-z0-9.-]+$/.test(target.slice(2))) {
        this.entries.push({ kind: 'suffix', suffix: target.slice(1), port }); // ".example.org"
      } else if (/^[a-z0-9.-]+$/.test(target)) {
        this.entries.push({ kind: 'host', host: target.replace(/\.$/, ''), port });
      } else {
        throw new Error(`URL allow-list: not a host name or CIDR (with an optional :port): "${raw}"`);
      }
    }
  }

  /** Parses PNEUMOLENS_URL_ALLOW-style text: comma (or whitespace) separated entries. */
  static fromEnv(value: string | undefined): UrlPolicy {
    return new UrlPolicy({ allow: (value ?? '').split(/[\s,]+/).filter(Boolean) });
  }

  get empty(): boolean {
    return this.entries.length === 0;
  }

  /** True when a host-name entry allows this host (on this port, when given). */
  hostAllowed(hostname: string, port?: number): boolean {
    const h = hostname.toLowerCase().replace(/\.$/, '');
    return this.entries.some(
      (e) =>
        (e.port === undefined || e.port === port) && ((e.kind === 'host' && e.host === h) || (e.kind === 'suffix' && h.endsWith(e.suffix))),
    );
  }

  /** null if the address may be contacted for this host (and port), else the reason (address kind). */
  refusal(hostname: string, address: string, port?: number): string | null {
    const cls = classifyAddress(address);
    if (cls.kind === 'metadata' || cls.kind === 'invalid') return cls.kind;
    if (cls.kind === 'public') return null;
    if (this.hostAllowed(hostname, port)) return null;
    if (this.entries.some((e) => e.kind === 'cidr' && (e.port === undefined || e.port === port) && cidrContains(e.cidr, address))) {
      return null;
    }
    return cls.kind;
  }
}

/** The port a URL connects to. */
export function urlPort(url: URL): number {
  return url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
}

const forbidden = (why: string) =>
  new PneumoError(
    'url_forbidden',
    `This URL is not allowed: ${why}. Only public http(s) addresses can be fetched (an administrator can allow intranet hosts with PNEUMOLENS_URL_ALLOW).`,
  );

const fetchFailed = (status: 502 | 504, why: string) =>
  new PneumoError('url_fetch_failed', `Could not fetch the image from the URL: ${why}.`, undefined, status);

class AddressRefused extends Error {
  constructor(readonly kind: string) {
    super(`address refused (${kind})`);
  }
}

const systemResolve: Resolver = (hostname) => dns.promises.lookup(hostname, { all: true, verbatim: true });

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/** A `lookup` for http.request that refuses the whole name if any address it resolves to is refused. */
function guardedLookup(policy: UrlPolicy, resolve: Resolver, port: number) {
  return (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    resolve(hostname).then(
      (addresses) => {
        const wanted = options.family === 4 || options.family === 6 ? addresses.filter((a) => a.family === options.family) : addresses;
        if (wanted.length === 0) {
          callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), '', 0);
          return;
        }
        for (const a of addresses) {
          const why = policy.refusal(hostname, a.address, port);
          if (why) {
            callback(new AddressRefused(why), '', 0);
            return;
          }
        }
        if (options.all) callback(null, wanted);
        else callback(null, wanted[0].address, wanted[0].family);
      },
      (err: NodeJS.ErrnoException) => callback(err, '', 0),
    );
  };
}

/** Checks the parts of a URL that need no network: scheme, credentials, IP literal. */
export function checkUrl(raw: string, policy: UrlPolicy): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new PneumoError('bad_request', 'The "url" field is not a valid absolute URL.');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw forbidden('only http and https URLs are fetched');
  if (url.username || url.password) throw forbidden('credentials in the URL are not accepted');
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (!host) throw forbidden('the URL has no host');
  if (isIP(host)) {
    const why = policy.refusal(host, host, urlPort(url));
    if (why) throw forbidden(`the address is ${describe(why)}`);
  }
  return url;
}

function describe(kind: string): string {
  const words: Record<string, string> = {
    loopback: 'a loopback address',
    private: 'a private network address',
    cgnat: 'a carrier-grade NAT address',
    link_local: 'a link-local address',
    metadata: 'a cloud metadata address',
    unique_local: 'a unique-local IPv6 address',
    unspecified: 'the unspecified address',
    multicast: 'a multicast address',
    broadcast: 'the broadcast address',
    documentation: 'a documentation address',
    reserved: 'a reserved address',
    invalid: 'not a valid address',
  };
  return words[kind] ?? kind;
}

interface Hop {
  status: number;
  location?: string;
  bytes?: Buffer;
}

interface HopOptions {
  maxBytes: number;
  headersTimeoutMs: number;
  onData?: (bytes: number) => void;
}

function requestOnce(url: URL, policy: UrlPolicy, resolve: Resolver, o: HopOptions, signal: AbortSignal): Promise<Hop> {
  const { maxBytes } = o;
  return new Promise<Hop>((resolveHop, rejectHop) => {
    // headersTimer is set right after the request is made; done and fail run only after that
    const done = (hop: Hop) => {
      clearTimeout(headersTimer);
      resolveHop(hop);
    };
    const fail = (e: unknown) => {
      clearTimeout(headersTimer);
      rejectHop(e);
    };
    const mod = url.protocol === 'https:' ? https : http;
    const req = mod.request(url, {
      method: 'GET',
      lookup: guardedLookup(policy, resolve, urlPort(url)) as unknown as typeof dns.lookup,
      headers: { 'user-agent': 'pneumolens', accept: 'image/*, application/dicom;q=0.9, */*;q=0.1' },
      agent: false, // a fresh connection per request: no pooled socket skips the lookup
      signal,
    });
    const headersTimer = setTimeout(() => {
      fail(fetchFailed(504, `the host sent no answer within ${o.headersTimeoutMs / 1000} s`));
      req.destroy();
    }, o.headersTimeoutMs);
    req.on('error', (err: Error) => {
      if (err instanceof AddressRefused) fail(forbidden(`the host resolves to ${describe(err.kind)}`));
      else if (signal.aborted) fail(signal.reason);
      else if ((err as NodeJS.ErrnoException).code === 'ENOTFOUND' || (err as NodeJS.ErrnoException).code === 'EAI_AGAIN') {
        fail(fetchFailed(502, 'the host name could not be resolved'));
      } else fail(fetchFailed(502, 'the connection failed'));
    });
    req.on('response', (res) => {
      clearTimeout(headersTimer);
      const status = res.statusCode ?? 0;
      if ([301, 302, 303, 307, 308].includes(status)) {
        res.resume();
        done({ status, location: res.headers.location });
        return;
      }
      if (status < 200 || status > 299) {
        res.resume();
        fail(fetchFailed(502, `the server answered HTTP ${status}`));
        return;
      }
      const declared = Number(res.headers['content-length']);
      if (Number.isFinite(declared) && declared > maxBytes) {
        res.destroy();
        fail(tooLarge(maxBytes));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        try {
          o.onData?.(chunk.length);
        } catch (e) {
          res.destroy();
          req.destroy();
          fail(e);
          return;
        }
        size += chunk.length;
        if (size > maxBytes) {
          res.destroy();
          req.destroy();
          fail(tooLarge(maxBytes));
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () => done({ status, bytes: Buffer.concat(chunks, size) }));
      res.on('error', () => fail(signal.aborted ? signal.reason : fetchFailed(502, 'the download was interrupted')));
    });
    req.end();
  });
}

function tooLarge(maxBytes: number): PneumoError {
  return new PneumoError('payload_too_large', `The image at the URL is larger than the limit of ${formatBytes(maxBytes)}.`);
}

export function formatBytes(n: number): string {
  if (n >= 1024 * 1024) return `${+(n / (1024 * 1024)).toFixed(1)} MB`;
  if (n >= 1024) return `${+(n / 1024).toFixed(1)} KB`;
  return `${n} bytes`;
}

/** Fetches an image by URL under the rules above. Throws PneumoError (400/413/502/504). */
export async function fetchImageUrl(raw: string, policy: UrlPolicy, opts: FetchUrlOptions): Promise<FetchedImage> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const maxRedirects = opts.maxRedirects ?? 3;
  const resolve = opts.resolve ?? systemResolve;
  const timeout = fetchFailed(504, `no complete answer within ${timeoutMs / 1000} s`);
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(timeout), timeoutMs);
  const onOuterAbort = () => ctrl.abort(opts.signal?.reason);
  opts.signal?.addEventListener('abort', onOuterAbort, { once: true });
  try {
    let url = checkUrl(raw, policy);
    for (let redirects = 0; ; redirects++) {
      const hop = await requestOnce(
        url,
        policy,
        resolve,
        { maxBytes: opts.maxBytes, headersTimeoutMs: Math.min(opts.headersTimeoutMs ?? 5_000, timeoutMs), onData: opts.onData },
        ctrl.signal,
      );
      if (hop.bytes) return { bytes: hop.bytes, redirects };
      if (redirects >= maxRedirects) throw fetchFailed(502, `more than ${maxRedirects} redirects`);
      if (!hop.location) throw fetchFailed(502, `the server answered HTTP ${hop.status} without a Location`);
      let next: string;
      try {
        next = new URL(hop.location, url).href;
      } catch {
        throw fetchFailed(502, 'the server redirected to an invalid URL');
      }
      url = checkUrl(next, policy);
    }
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onOuterAbort);
  }
}
