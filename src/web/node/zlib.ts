/** Browser stand-in for node:zlib (see README.md): crc32 as Node's; no inflating on the device. */
import { notOnDevice } from '../canvas-io.ts';

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (IEEE, as zlib.crc32 and PNG): the unsigned checksum of `data`, continuing from `value`. */
export function crc32(data: Uint8Array | string, value = 0): number {
  const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
  let c = ~value >>> 0;
  for (let i = 0; i < bytes.length; i++) c = TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

export function createInflateRaw(): never {
  throw notOnDevice('A deflated DICOM (transfer syntax 1.2.840.10008.1.2.1.99)');
}

export default { crc32, createInflateRaw };
