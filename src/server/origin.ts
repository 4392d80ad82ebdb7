/**
 * Cross-origin browser POSTs are refused. An HTML form on any web site can make a visitor's
 * browser POST to a pneumolens on their machine or intranet (a "simple" request needs no CORS
 * preflight); the page cannot read the answer, but the request still costs us an upload and an
 * analysis. Browsers say where a request comes from: `Origin` (sent with every cross-origin and
 * every POST request) and `Sec-Fetch-Site`. A request is allowed when:
 * - it carries neither (curl, scripts, the CLI: not a browser acting for another site), or
 * - its Origin is this server's own (scheme-less host:port equal to the Host header), or is listed
 *   in the allow-list (PNEUMOLENS_ALLOWED_ORIGINS, "*" for any), or
 * - without Origin, Sec-Fetch-Site is same-origin or none (typed by the user).
 * Otherwise: 403 forbidden.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { PneumoError } from '../errors.ts';

export class OriginPolicy {
  private constructor(
    private readonly any: boolean,
    private readonly allowed: ReadonlySet<string>,
  ) {}

  /** Entries are origins ("https://viewer.example.org", "http://localhost:3000") or "*". */
  static from(entries: readonly string[]): OriginPolicy {
    const allowed = new Set<string>();
    let any = false;
    for (const raw of entries) {
      const e = raw.trim();
      if (!e) continue;
      if (e === '*') {
        any = true;
        continue;
      }
      let origin: string;
      try {
        origin = new URL(e).origin;
      } catch {
        origin = 'null';
      }
      if (origin === 'null') throw new Error(`allowed origins: not an origin (scheme://host[:port]): "${raw}"`);
      allowed.add(origin);
    }
    return new OriginPolicy(any, allowed);
  }

  /** True when a browser request with these headers may be served. */
  allows(headers: IncomingHttpHeaders): boolean {
    const origin = headers.origin;
    const site = headers['sec-fetch-site'];
    if (origin === undefined) return site === undefined || site === 'same-origin' || site === 'none';
    if (this.any) return true;
    let parsed: URL;
    try {
      parsed = new URL(origin);
    } catch {
      return false; // "null" (sandboxed frames, file: pages) and garbage
    }
    if (this.allowed.has(parsed.origin)) return true;
    const host = (headers.host ?? '').toLowerCase();
    return host !== '' && parsed.host === host;
  }

  /** Throws 403 forbidden for a cross-origin browser request. */
  check(headers: IncomingHttpHeaders): void {
    if (!this.allows(headers)) {
      throw new PneumoError(
        'forbidden',
        'Cross-origin requests from web pages are not accepted. An administrator can allow an origin with PNEUMOLENS_ALLOWED_ORIGINS.',
      );
    }
  }
}
