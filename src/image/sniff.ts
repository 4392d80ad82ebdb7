/** Format detection from magic bytes only (never from a file name or a declared content type). */
import type { SourceFormat } from './raw.ts';

function startsWith(bytes: Uint8Array, sig: readonly number[], at = 0): boolean {
  if (bytes.length < at + sig.length) return false;
  return sig.every((b, i) => bytes[at + i] === b);
}

const ascii = (s: string): number[] => [...s].map((c) => c.charCodeAt(0));

/** True when the bytes look like a DICOM data set without the Part-10 preamble (group 0x0008 first). */
export function looksLikeRawDicom(bytes: Uint8Array): boolean {
  if (bytes.length < 8) return false;
  // First element tag (LE): group 0x0008 (or 0x0002 meta), element < 0x0100.
  const group = bytes[0] | (bytes[1] << 8);
  if (group !== 0x0008 && group !== 0x0002) return false;
  if (bytes[3] !== 0x00) return false;
  const vr = String.fromCharCode(bytes[4], bytes[5]);
  const explicit = /^[A-Z]{2}$/.test(vr);
  const implicitLength = bytes[4] | (bytes[5] << 8) | (bytes[6] << 16) | (bytes[7] << 24);
  return explicit || (implicitLength >= 0 && implicitLength < 1024);
}

/** Returns the source format, or null when the bytes are not a supported image. */
export function sniffFormat(bytes: Uint8Array): SourceFormat | null {
  if (startsWith(bytes, [0xff, 0xd8, 0xff])) return 'jpeg';
  if (startsWith(bytes, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return 'png';
  if (startsWith(bytes, ascii('RIFF')) && startsWith(bytes, ascii('WEBP'), 8)) return 'webp';
  if (startsWith(bytes, [0x49, 0x49, 0x2a, 0x00]) || startsWith(bytes, [0x4d, 0x4d, 0x00, 0x2a])) return 'tiff';
  if (startsWith(bytes, ascii('DICM'), 128)) return 'dicom';
  if (looksLikeRawDicom(bytes)) return 'dicom';
  return null;
}
