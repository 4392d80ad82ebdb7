/** SSRF guard of the URL fetcher. Only 127.0.0.1 is ever contacted (a local fixture server). */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LookupAddress } from 'node:dns';
import { PneumoError } from '../../src/errors.ts';
import { checkUrl, fetchImageUrl, UrlPolicy, type Resolver } from '../../src/server/fetch-url.ts';
import { fixtureServer, grayPng, type FixtureServer } from '../fixtures/server-helpers.ts';

const image = grayPng(32, 32);
let srv: FixtureServer;
beforeAll(async () => {
  srv = await fixtureServer(image);
});
afterAll(async () => {
  await srv.close();
});

/** A resolver from a fixed table; unknown names fail like NXDOMAIN. Never touches real DNS. */
function table(entries: Record<string, string[]>): Resolver {
  return async (host) => {
    const addrs = entries[host];
    if (!addrs) throw Object.assign(new Error(`ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    return addrs.map((address): LookupAddress => ({ address, family: address.includes(':') ? 6 : 4 }));
  };
}

async function failure(p: Promise<unknown>): Promise<PneumoError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(PneumoError);
    return e as PneumoError;
  }
  throw new Error('expected a PneumoError');
}

const deny = new UrlPolicy();
const opts = { maxBytes: 1024 * 1024, timeoutMs: 2000 };

describe('checkUrl (no network)', () => {
  it.each([
    'file:///etc/passwd',
    'ftp://example.org/x.png',
    'gopher://example.org/',
    'data:image/png;base64,AAAA',
    'javascript:alert(1)',
    'http://user:pw@example.org/x.png',
    'http://127.0.0.1/x.png',
    'http://127.1/x.png', // WHATWG parsing makes this 127.0.0.1
    'http://2130706433/x.png', // = 127.0.0.1
    'http://0x7f000001/x.png',
    'http://0.0.0.0/',
    'http://10.0.0.5/',
    'http://192.168.1.1/',
    'http://172.20.0.1/',
    'http://100.100.100.100/',
    'http://169.254.169.254/latest/meta-data/',
    'http://[::1]/',
    'http://[::ffff:127.0.0.1]/',
    'http://[::ffff:a9fe:a9fe]/',
    'http://[fe80::1]/',
    'http://[fd00:ec2::254]/',
    'http://[fc00::1]/',
    'http://224.0.0.1/',
    'http://255.255.255.255/',
  ])('refuses %s', (url) => {
    let err: unknown;
    try {
      checkUrl(url, deny);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PneumoError);
    expect((err as PneumoError).status).toBe(400);
    expect((err as PneumoError).code).toBe('url_forbidden');
  });

  it('refuses malformed URLs as bad requests', () => {
    expect(() => checkUrl('not a url', deny)).toThrow(/not a valid absolute URL/);
  });

  it('accepts public addresses and host names (their addresses are checked at connect time)', () => {
    expect(checkUrl('https://8.8.8.8/x.png', deny).hostname).toBe('8.8.8.8');
    expect(checkUrl('https://example.org/x.png', deny).hostname).toBe('example.org');
  });

  it('never lets the metadata address through, even when its range is allowed', () => {
    const policy = new UrlPolicy({ allow: ['169.254.0.0/16', '::/0'] });
    expect(() => checkUrl('http://169.254.169.254/', policy)).toThrow(/not allowed/);
    expect(() => checkUrl('http://[fd00:ec2::254]/', policy)).toThrow(/not allowed/);
    expect(checkUrl('http://169.254.1.1/', policy).hostname).toBe('169.254.1.1');
  });
});

describe('UrlPolicy', () => {
  it('parses hosts, wildcards and CIDRs from the environment form', () => {
    const p = UrlPolicy.fromEnv(' pacs.hospital.local, *.imaging.local 10.1.0.0/16,fd00:1::/64 ,');
    expect(p.empty).toBe(false);
    expect(p.refusal('pacs.hospital.local', '10.9.9.9')).toBeNull();
    expect(p.refusal('a.imaging.local', '192.168.0.1')).toBeNull();
    expect(p.refusal('imaging.local', '192.168.0.1')).toBe('private'); // the wildcard is for sub-domains
    expect(p.refusal('other.local', '10.1.2.3')).toBeNull();
    expect(p.refusal('other.local', '10.2.0.1')).toBe('private');
    expect(p.refusal('other.local', 'fd00:1::5')).toBeNull();
    expect(p.refusal('other.local', '127.0.0.1')).toBe('loopback');
    expect(p.refusal('pacs.hospital.local', '169.254.169.254')).toBe('metadata');
    expect(UrlPolicy.fromEnv(undefined).empty).toBe(true);
    expect(UrlPolicy.fromEnv('').empty).toBe(true);
  });

  it('rejects malformed entries instead of ignoring them', () => {
    expect(() => new UrlPolicy({ allow: ['10.0.0.0/40'] })).toThrow();
    expect(() => new UrlPolicy({ allow: ['http://pacs/'] })).toThrow();
  });
});

describe('fetchImageUrl', () => {
  it('refuses a URL to 127.0.0.1 without contacting it', async () => {
    const before = srv.hits.length;
    const e = await failure(fetchImageUrl(`${srv.url}/image.png`, deny, opts));
    expect(e.code).toBe('url_forbidden');
    expect(e.status).toBe(400);
    expect(srv.hits.length).toBe(before);
  });

  it('refuses a host name that resolves to loopback, checked at connect time', async () => {
    const before = srv.hits.length;
    const e = await failure(
      fetchImageUrl(`http://innocent.test:${srv.port}/image.png`, deny, { ...opts, resolve: table({ 'innocent.test': ['127.0.0.1'] }) }),
    );
    expect(e.code).toBe('url_forbidden');
    expect(e.message).toMatch(/loopback/);
    expect(srv.hits.length).toBe(before);
  });

  it('refuses a host name when any of its addresses is refused (mixed answers, IPv4-mapped)', async () => {
    for (const addrs of [['93.184.216.34', '127.0.0.1'], ['::ffff:127.0.0.1'], ['169.254.169.254']]) {
      const e = await failure(
        fetchImageUrl(`http://mixed.test:${srv.port}/image.png`, deny, { ...opts, resolve: table({ 'mixed.test': addrs }) }),
      );
      expect(e.code, addrs.join(',')).toBe('url_forbidden');
    }
  });

  it('fetches from a local server allowed by CIDR', async () => {
    const got = await fetchImageUrl(`${srv.url}/image.png`, new UrlPolicy({ allow: ['127.0.0.0/8'] }), opts);
    expect(Buffer.compare(got.bytes, image)).toBe(0);
    expect(got.redirects).toBe(0);
  });

  it('fetches from a local server allowed by host name (resolved at connect time)', async () => {
    const got = await fetchImageUrl(`http://pacs.test:${srv.port}/image.png`, new UrlPolicy({ allow: ['pacs.test'] }), {
      ...opts,
      resolve: table({ 'pacs.test': ['127.0.0.1'] }),
    });
    expect(Buffer.compare(got.bytes, image)).toBe(0);
  });

  it('follows up to 3 redirects, each one checked, and refuses a 4th', async () => {
    const allow = new UrlPolicy({ allow: ['127.0.0.1'] });
    const ok = await fetchImageUrl(`${srv.url}/redirect/3`, allow, opts);
    expect(ok.redirects).toBe(3);
    expect(Buffer.compare(ok.bytes, image)).toBe(0);
    const e = await failure(fetchImageUrl(`${srv.url}/redirect/4`, allow, opts));
    expect(e.code).toBe('url_fetch_failed');
    expect(e.status).toBe(502);
    expect(e.message).toMatch(/more than 3 redirects/);
  });

  it('re-checks the target of a redirect (an allowed host cannot bounce to a refused one)', async () => {
    const allow = new UrlPolicy({ allow: ['pacs.test'] });
    const resolve = table({ 'pacs.test': ['127.0.0.1'], 'evil.test': ['127.0.0.1'] });
    for (const target of [
      `http://evil.test:${srv.port}/image.png`,
      `http://127.0.0.1:${srv.port}/image.png`,
      'http://169.254.169.254/',
      'file:///etc/passwd',
    ]) {
      const e = await failure(fetchImageUrl(`http://pacs.test:${srv.port}/to?${encodeURIComponent(target)}`, allow, { ...opts, resolve }));
      expect(e.code, target).toBe('url_forbidden');
    }
  });

  it('caps the bytes read (413) even without a Content-Length', async () => {
    const e = await failure(fetchImageUrl(`${srv.url}/big`, new UrlPolicy({ allow: ['127.0.0.1'] }), { ...opts, maxBytes: 100_000 }));
    expect(e.status).toBe(413);
    expect(e.code).toBe('payload_too_large');
  });

  it('caps by Content-Length before reading', async () => {
    const e = await failure(fetchImageUrl(`${srv.url}/image.png`, new UrlPolicy({ allow: ['127.0.0.1'] }), { ...opts, maxBytes: 10 }));
    expect(e.status).toBe(413);
  });

  it('times out (504 url_fetch_failed)', async () => {
    const t0 = Date.now();
    const e = await failure(fetchImageUrl(`${srv.url}/slow`, new UrlPolicy({ allow: ['127.0.0.1'] }), { ...opts, timeoutMs: 200 }));
    expect(e.code).toBe('url_fetch_failed');
    expect(e.status).toBe(504);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('reports upstream errors and unknown hosts as url_fetch_failed', async () => {
    const allow = new UrlPolicy({ allow: ['127.0.0.1', 'nowhere.test'] });
    const e404 = await failure(fetchImageUrl(`${srv.url}/missing`, allow, opts));
    expect(e404).toMatchObject({ status: 502, code: 'url_fetch_failed' });
    expect(e404.message).toMatch(/HTTP 404/);
    const nx = await failure(fetchImageUrl('http://nowhere.test/x.png', allow, { ...opts, resolve: table({}) }));
    expect(nx).toMatchObject({ status: 502, code: 'url_fetch_failed' });
  });
});
