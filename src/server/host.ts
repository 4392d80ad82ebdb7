/**
 * Host header validation against DNS rebinding. A web page on an attacker's name (a.evil) can make
 * that name resolve to 127.0.0.1 after the page has loaded; the browser then sends its requests to
 * a pneumolens on the visitor's machine as same-origin (Host and Origin both a.evil:PORT), which
 * the cross-origin rule of origin.ts cannot tell apart. So a request is served only when its Host
 * names this server:
 * - an IP literal (127.0.0.1, [::1], 10.1.2.3: a page cannot rebind an address it does not own);
 * - a name without a dot (localhost, a container or service name, this machine's short name), or
 *   under .localhost (RFC 6761): no one can register those in public DNS;
 * - this machine's host name (os.hostname());
 * - an entry of PNEUMOLENS_ALLOWED_HOSTS (a name, ".example.org" for it and its subdomains, "*" for
 *   any) or the host of an allowed origin (PNEUMOLENS_ALLOWED_ORIGINS).
 * A request without Host (HTTP/1.0) is served. Otherwise 403 forbidden, which names the setting.
 */
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import { PneumoError } from '../errors.ts';

/** The name of a Host header value, without its port and IPv6 brackets, lower case. */
export function hostName(host: string): string {
  const h = host.trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(1, h.indexOf(']') > 0 ? h.indexOf(']') : undefined);
  const colon = h.lastIndexOf(':');
  return (colon >= 0 && h.indexOf(':') === colon ? h.slice(0, colon) : h).replace(/\.$/, '');
}

export class HostPolicy {
  private constructor(
    private readonly any: boolean,
    private readonly names: ReadonlySet<string>,
    private readonly suffixes: readonly string[],
  ) {}

  /** Entries are names ("pneumolens.example.org", "pneumolens.example.org:8443"), ".example.org" or "*". */
  static from(entries: readonly string[], originHosts: readonly string[] = []): HostPolicy {
    const names = new Set<string>([hostName(hostname())]);
    const suffixes: string[] = ['.localhost'];
    let any = false;
    for (const raw of [...entries, ...originHosts]) {
      const e = raw.trim().toLowerCase();
      if (!e) continue;
      if (e === '*') any = true;
      else if (e.startsWith('.')) suffixes.push(e);
      else names.add(hostName(e));
    }
    return new HostPolicy(any, names, suffixes);
  }

  allows(host: string | undefined): boolean {
    if (host === undefined || this.any) return true;
    const name = hostName(host);
    if (name === '' || isIP(name) !== 0 || !name.includes('.')) return true;
    return this.names.has(name) || this.suffixes.some((s) => name.endsWith(s) || name === s.slice(1));
  }

  /** Throws 403 forbidden for a Host that is not one of this server's names. */
  check(host: string | undefined): void {
    if (!this.allows(host)) {
      throw new PneumoError(
        'forbidden',
        'This server does not answer to that host name. An administrator can allow it with PNEUMOLENS_ALLOWED_HOSTS.',
      );
    }
  }
}
