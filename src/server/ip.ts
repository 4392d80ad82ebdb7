/**
 * IP address classification and CIDR matching for the SSRF guard of the URL fetcher.
 *
 * Every address is held as 16 bytes; an IPv4 address becomes its IPv4-mapped IPv6 form
 * (::ffff:a.b.c.d), so one set of rules covers IPv4, IPv6 and IPv4-mapped IPv6 alike. Addresses
 * that carry an IPv4 address inside (IPv4-compatible, NAT64 64:ff9b::/96, 6to4 2002::/16) are
 * judged by the IPv4 address they lead to.
 */
import { isIPv4, isIPv6 } from 'node:net';

export type AddressKind =
  | 'public'
  | 'unspecified'
  | 'loopback'
  | 'private'
  | 'cgnat'
  | 'link_local'
  | 'metadata'
  | 'unique_local'
  | 'multicast'
  | 'broadcast'
  | 'documentation'
  | 'reserved'
  | 'invalid';

export interface AddressClass {
  kind: AddressKind;
  /** The address in canonical text form (IPv4 dotted quad for IPv4 and IPv4-mapped IPv6). */
  address: string;
}

type Bytes16 = Uint8Array; // length 16

function parseIPv4(s: string): Uint8Array | null {
  if (!isIPv4(s)) return null;
  return Uint8Array.from(s.split('.').map(Number));
}

function parseIPv6(s: string): Bytes16 | null {
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  if (!isIPv6(s)) return null;
  let tail: number[] = [];
  const lastColon = s.lastIndexOf(':');
  const last = s.slice(lastColon + 1);
  if (last.includes('.')) {
    const v4 = parseIPv4(last);
    if (!v4) return null;
    tail = [(v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]];
    s = s.slice(0, lastColon + 1) + '0:0'; // placeholder groups, replaced below
  }
  const [head, rest] = s.split('::') as [string, string | undefined];
  const groupsOf = (part: string): number[] => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  let groups: number[];
  if (rest === undefined) {
    groups = groupsOf(head);
  } else {
    const h = groupsOf(head);
    const r = groupsOf(rest);
    groups = [...h, ...new Array<number>(8 - h.length - r.length).fill(0), ...r];
  }
  if (groups.length !== 8) return null;
  if (tail.length) groups.splice(6, 2, ...tail);
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/** Parses an IPv4 or IPv6 address (brackets and zone id allowed) into 16 bytes, or null. */
export function parseAddress(input: string): Bytes16 | null {
  let s = input.trim();
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  const v4 = parseIPv4(s);
  if (v4) return mapped(v4);
  return parseIPv6(s);
}

function mapped(v4: Uint8Array): Bytes16 {
  const out = new Uint8Array(16);
  out[10] = 0xff;
  out[11] = 0xff;
  out.set(v4, 12);
  return out;
}

function isMapped(b: Bytes16): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

function prefixMatch(b: Bytes16, net: Bytes16, bits: number): boolean {
  const full = bits >> 3;
  for (let i = 0; i < full; i++) if (b[i] !== net[i]) return false;
  const rem = bits & 7;
  if (rem === 0) return true;
  const mask = (0xff << (8 - rem)) & 0xff;
  return (b[full] & mask) === (net[full] & mask);
}

export interface Cidr {
  net: Bytes16;
  bits: number; // prefix length over the 128-bit form
  text: string;
}

/** Parses "a.b.c.d/n", "v6/n" or a bare address (= /32 or /128). Throws on malformed input. */
export function parseCidr(text: string): Cidr {
  const [addr, len, ...more] = text.trim().split('/');
  const net = parseAddress(addr ?? '');
  const v4 = net !== null && isIPv4(addr.replace(/^\[|\]$/g, ''));
  const max = v4 ? 32 : 128;
  const n = len === undefined ? max : Number(len);
  if (!net || more.length || !Number.isInteger(n) || n < 0 || n > max || (len !== undefined && !/^\d+$/.test(len))) {
    throw new Error(`not an IP address or CIDR: "${text}"`);
  }
  return { net, bits: v4 ? 96 + n : n, text: text.trim() };
}

export function cidrContains(cidr: Cidr, address: string): boolean {
  const b = parseAddress(address);
  if (!b) return false;
  if (prefixMatch(b, cidr.net, cidr.bits)) return true;
  // An IPv4 address written as an IPv6 with the IPv4 inside (e.g. 6to4) is matched by its IPv4.
  const inner = embeddedIPv4(b);
  return inner !== null && prefixMatch(mapped(inner), cidr.net, cidr.bits);
}

interface Rule {
  cidr: Cidr;
  kind: AddressKind;
}

const rule = (text: string, kind: AddressKind): Rule => ({ cidr: parseCidr(text), kind });

/** IPv4 special-purpose ranges (RFC 6890 and friends). The first match wins, so specific first. */
const V4_RULES: Rule[] = [
  rule('169.254.169.254/32', 'metadata'), // cloud instance metadata (AWS, GCP, Azure, ...)
  rule('255.255.255.255/32', 'broadcast'),
  rule('0.0.0.0/32', 'unspecified'),
  rule('0.0.0.0/8', 'reserved'), // "this network"
  rule('10.0.0.0/8', 'private'),
  rule('100.64.0.0/10', 'cgnat'),
  rule('127.0.0.0/8', 'loopback'),
  rule('169.254.0.0/16', 'link_local'),
  rule('172.16.0.0/12', 'private'),
  rule('192.0.0.0/24', 'reserved'), // IETF protocol assignments
  rule('192.0.2.0/24', 'documentation'),
  rule('192.88.99.0/24', 'reserved'), // 6to4 relay anycast
  rule('192.168.0.0/16', 'private'),
  rule('198.18.0.0/15', 'reserved'), // benchmarking
  rule('198.51.100.0/24', 'documentation'),
  rule('203.0.113.0/24', 'documentation'),
  rule('224.0.0.0/4', 'multicast'),
  rule('240.0.0.0/4', 'reserved'),
];

const V6_RULES: Rule[] = [
  rule('fd00:ec2::254/128', 'metadata'), // AWS IMDS over IPv6
  rule('::/128', 'unspecified'),
  rule('::1/128', 'loopback'),
  rule('100::/64', 'reserved'), // discard prefix
  rule('64:ff9b:1::/48', 'reserved'), // local-use NAT64
  rule('2001::/32', 'reserved'), // Teredo: the client address inside is obfuscated, refuse it
  rule('2001:db8::/32', 'documentation'),
  rule('fc00::/7', 'unique_local'),
  rule('fe80::/10', 'link_local'),
  rule('fec0::/10', 'reserved'), // deprecated site-local
  rule('ff00::/8', 'multicast'),
];

/** The IPv4 address carried inside an IPv6 address, for the forms that route to it. */
function embeddedIPv4(b: Bytes16): Uint8Array | null {
  if (isMapped(b)) return b.slice(12);
  // IPv4-compatible ::a.b.c.d (deprecated) - but not :: and ::1 themselves.
  let zeros = true;
  for (let i = 0; i < 12; i++) if (b[i] !== 0) zeros = false;
  if (zeros && ((b[12] | b[13] | b[14]) !== 0 || b[15] > 1)) return b.slice(12);
  // NAT64 well-known prefix 64:ff9b::/96.
  const nat64 = [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0];
  if (nat64.every((v, i) => b[i] === v)) return b.slice(12);
  // 6to4 2002:a.b.c.d::/48.
  if (b[0] === 0x20 && b[1] === 0x02) return b.slice(2, 6);
  return null;
}

function v4Text(v4: Uint8Array): string {
  return Array.from(v4).join('.');
}

function v6Text(b: Bytes16): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i] << 8) | b[i + 1]);
  // RFC 5952: compress the longest run (>= 2) of zero groups, the first one on a tie.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (g: number[]) => g.map((x) => x.toString(16)).join(':');
  if (best < 0) return hex(groups);
  return `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLen))}`;
}

/**
 * Classifies an IP address. Anything that is not a plain public unicast address gets a kind other
 * than 'public' (including malformed input: 'invalid').
 */
export function classifyAddress(input: string): AddressClass {
  const b = parseAddress(input);
  if (!b) return { kind: 'invalid', address: input };
  const v4 = embeddedIPv4(b);
  if (v4) {
    const asMapped = mapped(v4);
    const hit = V4_RULES.find((r) => prefixMatch(asMapped, r.cidr.net, r.cidr.bits));
    return { kind: hit ? hit.kind : 'public', address: isMapped(b) ? v4Text(v4) : v6Text(b) };
  }
  const hit = V6_RULES.find((r) => prefixMatch(b, r.cidr.net, r.cidr.bits));
  return { kind: hit ? hit.kind : 'public', address: v6Text(b) };
}

export function isPublicAddress(input: string): boolean {
  return classifyAddress(input).kind === 'public';
}
