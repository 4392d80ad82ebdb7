import { describe, expect, it } from 'vitest';
import { cidrContains, classifyAddress, isPublicAddress, parseAddress, parseCidr } from '../../src/server/ip.ts';

describe('classifyAddress', () => {
  const cases: Array<[string, string]> = [
    // IPv4
    ['8.8.8.8', 'public'],
    ['1.1.1.1', 'public'],
    ['93.184.216.34', 'public'],
    ['0.0.0.0', 'unspecified'],
    ['0.1.2.3', 'reserved'],
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['10.0.0.1', 'private'],
    ['10.255.255.255', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['172.15.255.255', 'public'],
    ['172.32.0.0', 'public'],
    ['192.168.1.10', 'private'],
    ['192.169.0.1', 'public'],
    ['100.64.0.1', 'cgnat'],
    ['100.127.255.255', 'cgnat'],
    ['100.128.0.0', 'public'],
    ['100.63.255.255', 'public'],
    ['169.254.0.1', 'link_local'],
    ['169.254.169.254', 'metadata'],
    ['169.254.169.253', 'link_local'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['255.255.255.255', 'broadcast'],
    ['240.0.0.1', 'reserved'],
    ['192.0.2.5', 'documentation'],
    ['198.51.100.7', 'documentation'],
    ['203.0.113.9', 'documentation'],
    ['198.18.0.1', 'reserved'],
    ['192.0.0.170', 'reserved'],
    // IPv6
    ['2606:4700:4700::1111', 'public'],
    ['2a00:1450:4001:82b::200e', 'public'],
    ['::', 'unspecified'],
    ['::1', 'loopback'],
    ['0:0:0:0:0:0:0:1', 'loopback'],
    ['fe80::1', 'link_local'],
    ['fe80::1%eth0', 'link_local'],
    ['febf:ffff::1', 'link_local'],
    ['fc00::1', 'unique_local'],
    ['fd12:3456:789a::1', 'unique_local'],
    ['fd00:ec2::254', 'metadata'],
    ['ff02::1', 'multicast'],
    ['ff05::1:3', 'multicast'],
    ['2001:db8::1', 'documentation'],
    ['2001:0:4136:e378:8000:63bf:3fff:fdd2', 'reserved'], // Teredo
    ['fec0::1', 'reserved'],
    ['100::1', 'reserved'],
    ['[::1]', 'loopback'],
    // IPv4 inside IPv6
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:7f00:1', 'loopback'],
    ['::ffff:10.1.2.3', 'private'],
    ['::ffff:169.254.169.254', 'metadata'],
    ['::ffff:8.8.8.8', 'public'],
    ['0:0:0:0:0:ffff:c0a8:0101', 'private'],
    ['::127.0.0.1', 'loopback'], // IPv4-compatible (deprecated)
    ['::0.0.0.2', 'reserved'],
    ['64:ff9b::7f00:1', 'loopback'], // NAT64 of 127.0.0.1
    ['64:ff9b::808:808', 'public'],
    ['2002:7f00:1::', 'loopback'], // 6to4 of 127.0.0.1
    ['2002:a9fe:a9fe::1', 'metadata'], // 6to4 of 169.254.169.254
    ['2002:808:808::1', 'public'],
    // not addresses
    ['localhost', 'invalid'],
    ['', 'invalid'],
    ['256.1.1.1', 'invalid'],
    ['1.2.3', 'invalid'],
    ['::ffff:300.1.1.1', 'invalid'],
    ['2130706433', 'invalid'],
  ];
  it.each(cases)('%s is %s', (addr, kind) => {
    expect(classifyAddress(addr).kind).toBe(kind);
  });

  it('only public unicast addresses are public', () => {
    const publics = cases.filter(([, k]) => k === 'public').map(([a]) => a);
    for (const [a] of cases) expect(isPublicAddress(a)).toBe(publics.includes(a));
  });

  it('gives IPv4-mapped addresses in dotted form', () => {
    expect(classifyAddress('::ffff:7f00:1').address).toBe('127.0.0.1');
    expect(classifyAddress('0:0:0:0:0:0:0:1').address).toBe('::1');
    expect(classifyAddress('fe80:0:0:0:0:0:0:1').address).toBe('fe80::1');
    expect(classifyAddress('2001:db8:0:1:0:0:0:1').address).toBe('2001:db8:0:1::1');
  });
});

describe('parseAddress', () => {
  it('expands IPv6 forms to the same bytes', () => {
    const a = parseAddress('::ffff:192.168.0.1');
    const b = parseAddress('0:0:0:0:0:ffff:c0a8:1');
    const c = parseAddress('192.168.0.1');
    expect(a).toEqual(b);
    expect(a).toEqual(c);
  });
});

describe('CIDR', () => {
  it('matches IPv4 ranges, including IPv4-mapped IPv6', () => {
    const c = parseCidr('10.20.0.0/16');
    expect(cidrContains(c, '10.20.30.40')).toBe(true);
    expect(cidrContains(c, '::ffff:10.20.1.1')).toBe(true);
    expect(cidrContains(c, '10.21.0.1')).toBe(false);
    expect(cidrContains(c, 'not an ip')).toBe(false);
  });
  it('matches IPv6 ranges and bare addresses', () => {
    expect(cidrContains(parseCidr('fd00:1234::/32'), 'fd00:1234:5::1')).toBe(true);
    expect(cidrContains(parseCidr('fd00:1234::/32'), 'fd00:1235::1')).toBe(false);
    expect(cidrContains(parseCidr('127.0.0.1'), '127.0.0.1')).toBe(true);
    expect(cidrContains(parseCidr('127.0.0.1'), '127.0.0.2')).toBe(false);
    expect(cidrContains(parseCidr('10.0.0.0/9'), '10.127.255.255')).toBe(true);
    expect(cidrContains(parseCidr('10.0.0.0/9'), '10.128.0.0')).toBe(false);
  });
  it('rejects malformed CIDRs', () => {
    for (const bad of ['10.0.0.0/33', '10.0.0.0/', '10.0.0/8', 'fd00::/129', 'host/8', '10.0.0.0/8/1', '10.0.0.0/-1', '10.0.0.0/1.5']) {
      expect(() => parseCidr(bad), bad).toThrow();
    }
  });
});
