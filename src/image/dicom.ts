/**
 * DICOM decoding (dicom-parser; compressed frames through dicom-codec.ts) to RawImage: first frame,
 * modality rescale, VOI (first window preset, else the first VOI LUT, else min-max; min-max with a
 * warning also when the VOI maps nearly every pixel to pure black or white) to 0..255,
 * MONOCHROME1 / Presentation LUT Shape INVERSE inverted, Pixel Padding Value black and out of the
 * min-max, RGB / YBR colour. Rules in docs/model-contract.md.
 * Patient and study tags are never read: only the image pixel module, the transfer syntax and the
 * non-identifying attributes SOP Class UID, Modality, Body Part Examined and View Position
 * (checkScope), each by its keyword (dicom-tags.ts).
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import type { DataSet } from 'dicom-parser';
import { PneumoError } from '../errors.ts';
import type { DecodedImage, RawImage } from './raw.ts';
import { inflateDataSet } from './dicom-inflate.ts';
import { DICOM_WARNING, dicomScope } from './dicom-scope.ts';
import { TAG, tagText, type Keyword } from './dicom-tags.ts';
import { CODEC_OF_SYNTAX, decodeFrame, type FrameInfo } from './dicom-codec.ts';
import { checkAnalysisCost, checkDecodeCost, defaultMaxAnalysisBytes, workSize, type DecodeLimits } from './limits.ts';
import { reduceSamples } from './sharp-io.ts';

// dicom-parser is a UMD bundle: load it through require so its exports are visible from ESM.
const dicomParser = createRequire(import.meta.url)('dicom-parser') as typeof import('dicom-parser');

const IMPLICIT_LE = '1.2.840.10008.1.2';
const EXPLICIT_LE = '1.2.840.10008.1.2.1';
const DEFLATED_LE = '1.2.840.10008.1.2.1.99';
const EXPLICIT_BE = '1.2.840.10008.1.2.2';
const UNCOMPRESSED = new Set([IMPLICIT_LE, EXPLICIT_LE, DEFLATED_LE, EXPLICIT_BE]);

/** Names of the compressed transfer syntaxes we recognise (for a helpful 415 message). */
const COMPRESSED_NAMES: Record<string, string> = {
  '1.2.840.10008.1.2.4.50': 'JPEG Baseline (Process 1)',
  '1.2.840.10008.1.2.4.51': 'JPEG Extended (Process 2 & 4)',
  '1.2.840.10008.1.2.4.57': 'JPEG Lossless, Non-Hierarchical (Process 14)',
  '1.2.840.10008.1.2.4.70': 'JPEG Lossless, Non-Hierarchical, First-Order Prediction',
  '1.2.840.10008.1.2.4.80': 'JPEG-LS Lossless',
  '1.2.840.10008.1.2.4.81': 'JPEG-LS Lossy (Near-Lossless)',
  '1.2.840.10008.1.2.4.90': 'JPEG 2000 Image Compression (Lossless Only)',
  '1.2.840.10008.1.2.4.91': 'JPEG 2000 Image Compression',
  '1.2.840.10008.1.2.4.92': 'JPEG 2000 Part 2 Multi-component (Lossless Only)',
  '1.2.840.10008.1.2.4.93': 'JPEG 2000 Part 2 Multi-component',
  '1.2.840.10008.1.2.4.100': 'MPEG2 Main Profile / Main Level',
  '1.2.840.10008.1.2.4.102': 'MPEG-4 AVC/H.264 High Profile',
  '1.2.840.10008.1.2.4.110': 'JPEG XL Lossless',
  '1.2.840.10008.1.2.4.112': 'JPEG XL',
  '1.2.840.10008.1.2.4.201': 'High-Throughput JPEG 2000 (Lossless Only)',
  '1.2.840.10008.1.2.4.202': 'High-Throughput JPEG 2000 with RPCL (Lossless Only)',
  '1.2.840.10008.1.2.4.203': 'High-Throughput JPEG 2000',
  '1.2.840.10008.1.2.5': 'RLE Lossless',
};

export type DicomLimits = DecodeLimits;

const undecodable = (why: string) => new PneumoError('undecodable_image', `The DICOM file could not be decoded: ${why}.`);
const damaged = (why: string) => new PneumoError('damaged_image', `The DICOM file is damaged: ${why}; a damaged image is not analysed.`);
const unsupported = (why: string) => new PneumoError('unsupported_media_type', `Unsupported DICOM: ${why}.`);

function parse(bytes: Uint8Array, inflated?: Buffer): DataSet {
  // dicom-parser needs a Buffer on Node (deflate path uses Buffer#copy); this wraps without copying.
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const hasPreamble = buf.length >= 132 && buf.toString('latin1', 128, 132) === 'DICM';
  // Without the Part-10 preamble, guess the VR encoding from the first element (2 letters = explicit).
  const rawSyntax = /^[A-Z]{2}$/.test(buf.toString('latin1', 4, 6)) ? EXPLICIT_LE : IMPLICIT_LE;
  try {
    // A deflated data set was inflated beforehand, with a bound (never by dicom-parser's own inflateRawSync).
    if (inflated) return dicomParser.parseDicom(buf, { inflater: () => inflated });
    return dicomParser.parseDicom(buf, hasPreamble ? {} : { TransferSyntaxUID: rawSyntax });
  } catch {
    // dicom-parser throws strings or Errors; its messages describe structure only, but stay generic.
    throw damaged('the data set is malformed or truncated');
  }
}

/**
 * For the deflated transfer syntax: the meta header followed by the inflated data set, inflated
 * under the decode budget (see dicom-inflate.ts). Undefined for every other file.
 */
async function inflateIfDeflated(bytes: Uint8Array, limits: DicomLimits): Promise<Buffer | undefined> {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (!(buf.length >= 132 && buf.toString('latin1', 128, 132) === 'DICM')) return undefined;
  let meta: DataSet & { position?: number };
  try {
    meta = dicomParser.readPart10Header(buf);
  } catch {
    throw damaged('the data set is malformed or truncated');
  }
  if (transferSyntax(meta) !== DEFLATED_LE || meta.position === undefined) return undefined;
  // The whole-analysis budget of the declared image, before its pixels are inflated.
  const checkImage = ({ rows, cols, samples, bits }: { rows: number; cols: number; samples: number; bits: number }) => {
    const bitsAllocated = bits <= 8 ? 8 : bits <= 16 ? 16 : 32;
    const work = workSize(cols, rows);
    const reduced = work.width !== cols || work.height !== rows;
    const extra = fullResExtra(bitsAllocated, reduced, DEFLATED_LE);
    checkAnalysisCost(
      { width: cols, height: rows, channels: samples, bytesPerSample: bitsAllocated / 8, fullResExtraPerSample: extra },
      limits.maxAnalysisBytes ?? defaultMaxAnalysisBytes(),
    );
  };
  const dataSet = await inflateDataSet(buf.subarray(meta.position), limits.maxDecodedBytes, checkImage);
  return Buffer.concat([buf.subarray(0, meta.position), dataSet]);
}

function transferSyntax(ds: DataSet): string {
  const el = ds.elements[TAG.TransferSyntaxUID] as { Value?: string } | undefined;
  return (el?.Value ?? ds.string(TAG.TransferSyntaxUID) ?? IMPLICIT_LE).replace(/\0/g, '').trim();
}

/** Required unsigned short attribute of the image pixel module. */
function us(ds: DataSet, k: Keyword): number {
  const v = ds.uint16(TAG[k]);
  if (v === undefined) throw undecodable(`missing ${k} ${tagText(k)}`);
  return v;
}

/** The first frame's stored bytes, uncompressed: native pixel data as is, encapsulated data through its codec. */
async function firstFrameBytes(ds: DataSet, syntax: string, info: FrameInfo, frames: number): Promise<Uint8Array> {
  const el = ds.elements[TAG.PixelData];
  if (!el) throw undecodable('no pixel data');
  const frameBytes = info.width * info.height * info.samplesPerPixel * (info.bitsAllocated / 8);
  const method = CODEC_OF_SYNTAX[syntax];
  if (!el.encapsulatedPixelData) {
    if (method) throw undecodable(`the transfer syntax is compressed but the pixel data is not encapsulated`);
    if (el.length < frameBytes || el.dataOffset + frameBytes > ds.byteArray.length) {
      throw damaged('the pixel data is shorter than Rows x Columns x Samples (the file was cut short)');
    }
    // Longer than every frame the header declares (plus the even-length pad byte): the header does not describe these pixels.
    if (el.length > Math.max(1, frames) * frameBytes + 1) {
      throw damaged('the pixel data is longer than Rows x Columns x Samples x Frames declare');
    }
    return ds.byteArray.subarray(el.dataOffset, el.dataOffset + frameBytes);
  }
  if (!method) {
    const name = COMPRESSED_NAMES[syntax] ?? 'unknown transfer syntax';
    throw unsupported(`compressed transfer syntax ${name} (${syntax}) is not supported; export the image uncompressed or as PNG`);
  }
  let frame: Uint8Array;
  try {
    const fragments = el.fragments ?? [];
    if (fragments.length === 0) throw new Error('no fragments');
    if (frames <= 1) frame = dicomParser.readEncapsulatedPixelDataFromFragments(ds, el, 0, fragments.length);
    else if ((el.basicOffsetTable ?? []).length > 0) frame = dicomParser.readEncapsulatedImageFrame(ds, el, 0);
    else if (fragments.length === frames) frame = dicomParser.readEncapsulatedPixelDataFromFragments(ds, el, 0, 1);
    else if (method === 'decodeJpeg')
      frame = dicomParser.readEncapsulatedImageFrame(ds, el, 0, dicomParser.createJPEGBasicOffsetTable(ds, el));
    else throw new Error('frames cannot be told apart');
  } catch {
    throw damaged('the encapsulated pixel data is malformed or truncated');
  }
  return decodeFrame(method, frame, info);
}

/** Reads samples as numbers (stored-bit masking and sign extension applied). */
function readSamples(
  bytes: Uint8Array,
  count: number,
  bitsAllocated: number,
  bitsStored: number,
  highBit: number,
  signed: boolean,
  bigEndian: boolean,
): Float32Array {
  const bytesPer = bitsAllocated / 8;
  const view = new DataView(bytes.buffer, bytes.byteOffset, count * bytesPer);
  const out = new Float32Array(count); // exact for up to 24 bits; enough for 32-bit data mapped to 0..255
  const shift = highBit + 1 - bitsStored;
  const mask = bitsStored >= 32 ? 0xffffffff : 2 ** bitsStored - 1;
  const signBit = 2 ** (bitsStored - 1);
  for (let i = 0; i < count; i++) {
    let raw: number;
    if (bytesPer === 1) raw = view.getUint8(i);
    else if (bytesPer === 2) raw = view.getUint16(i * 2, !bigEndian);
    else raw = view.getUint32(i * 4, !bigEndian);
    let v = Math.floor(raw / 2 ** shift) % (mask + 1);
    if (signed && v >= signBit) v -= 2 * signBit;
    out[i] = v;
  }
  return out;
}

/**
 * The stored samples as one word each (8 or 16 bits), without a copy where the bytes allow:
 * little-endian 16-bit at an even offset is a view; big-endian is swapped natively (Buffer.swap16).
 */
function sampleWords(bytes: Uint8Array, count: number, bitsAllocated: 8 | 16, bigEndian: boolean): Uint8Array | Uint16Array {
  if (bitsAllocated === 8) return bytes.subarray(0, count);
  if (!bigEndian && bytes.byteOffset % 2 === 0) return new Uint16Array(bytes.buffer, bytes.byteOffset, count);
  const copy = Buffer.from(bytes.subarray(0, count * 2)); // a fresh, aligned buffer
  if (bigEndian) copy.swap16();
  return new Uint16Array(copy.buffer, copy.byteOffset, count);
}

/** How often each word occurs (one pass over the pixels). */
function histogram(words: Uint8Array | Uint16Array, size: number): Uint32Array {
  const counts = new Uint32Array(size);
  for (let i = 0; i < words.length; i++) counts[words[i]]++;
  return counts;
}

/**
 * The value of every possible stored word (readSamples' masking and sign extension, applied to the
 * 2^bitsAllocated words instead of to each pixel): every later step (rescale, VOI, inversion,
 * padding) is computed once per word, and the pixels are one table lookup each.
 */
function wordValues(bitsAllocated: 8 | 16, bitsStored: number, highBit: number, signed: boolean): Float32Array {
  const size = 2 ** bitsAllocated;
  const words = new Uint8Array(size * (bitsAllocated / 8));
  const view = new DataView(words.buffer);
  for (let k = 0; k < size; k++)
    if (bitsAllocated === 8) view.setUint8(k, k);
    else view.setUint16(k * 2, k, true);
  return readSamples(words, size, bitsAllocated, bitsStored, highBit, signed, false);
}

/**
 * Pixels from a table indexed by their stored word: Float32 at the image's own size, or, for an
 * image larger than the working size, 16-bit (value x 257) reduced in native code (libvips) and
 * then scaled back, so that no full-size float copy is ever made.
 */
async function expand(
  words: Uint8Array | Uint16Array,
  table: Float32Array,
  width: number,
  height: number,
  channels: 1 | 3,
): Promise<{ data: Float32Array; width: number; height: number }> {
  const work = workSize(width, height);
  if (work.width === width && work.height === height) {
    const data = new Float32Array(words.length);
    for (let i = 0; i < words.length; i++) data[i] = table[words[i]];
    return { data, width, height };
  }
  const table16 = new Uint16Array(table.length);
  for (let k = 0; k < table.length; k++) table16[k] = Math.round(Math.min(255, Math.max(0, table[k])) * 257);
  const full = new Uint16Array(words.length);
  for (let i = 0; i < words.length; i++) full[i] = table16[words[i]];
  const reduced = await reduceSamples(full, width, height, channels, work.width, work.height);
  const data = new Float32Array(reduced);
  for (let i = 0; i < data.length; i++) data[i] /= 257;
  return { data, ...work };
}

/**
 * Bytes per sample the analysis holds at full size besides the frame itself (see analysisBytes):
 * the table output (16-bit when reduced, float otherwise; float copies for 32-bit samples), the
 * inflated data set of a deflated file, and a codec's output, the copy out of its heap and, for
 * OpenJPEG / OpenJPH, the 32-bit value it keeps per sample.
 */
function fullResExtra(bitsAllocated: number, reduced: boolean, syntax: string): number {
  const method = CODEC_OF_SYNTAX[syntax];
  const bytesPer = bitsAllocated / 8;
  let extra = bitsAllocated === 32 ? 8 : reduced ? 2 : 4;
  if (syntax === DEFLATED_LE) extra += bytesPer;
  if (method) extra += bytesPer + (method === 'decodeJpeg2000' || method === 'decodeHtJpeg2000' ? 4 : 0);
  return extra;
}

/**
 * Share of the pixels a VOI may map to pure black or white (the ends of its range) before it is
 * judged to miss the image: a window that leaves fewer than 1% of the pixels any gray level shows
 * a blank, not the film (e.g. a DX whose Window Center/Width 2725/5310 lies above every stored value).
 */
export const MAX_VOI_SATURATION = 0.99;

/** A VOI's output with how many of the (non-padding) pixels it pinned to an end of its range. */
interface Voi {
  data: Float32Array;
  saturated: number;
}

/** VOI LUT per PS3.3 C.11.2.1.2 (LINEAR, LINEAR_EXACT, SIGMOID) to 0..255. */
function applyWindow(values: Float32Array, center: number, width: number, fn: string, padding?: Uint8Array, counts?: Uint32Array): Voi {
  const out = new Float32Array(values.length);
  let saturated = 0;
  for (let i = 0; i < values.length; i++) {
    const x = values[i];
    let y: number;
    if (fn === 'SIGMOID') y = 1 / (1 + Math.exp((-4 * (x - center)) / width));
    else if (fn === 'LINEAR_EXACT') y = (x - center) / width + 0.5;
    else y = (x - (center - 0.5)) / (width - 1) + 0.5;
    const v = Math.min(1, Math.max(0, y)) * 255;
    // SIGMOID never reaches the ends: count what rounds to them.
    if (!padding?.[i] && (v < 0.5 || v > 254.5)) saturated += counts ? counts[i] : 1;
    out[i] = v;
  }
  return { data: out, saturated };
}

/** Min-max to 0..255 over the pixels that are not padding (over the stored values present, with `counts`). */
function minMax(values: Float32Array, padding?: Uint8Array, counts?: Uint32Array): Float32Array {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < values.length; i++) {
    if (padding?.[i] || counts?.[i] === 0) continue;
    const v = values[i];
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const out = new Float32Array(values.length);
  if (hi > lo) for (let i = 0; i < values.length; i++) out[i] = Math.min(255, Math.max(0, ((values[i] - lo) / (hi - lo)) * 255));
  return out;
}

/**
 * Pixels equal to Pixel Padding Value (0028,0120), or within it and Pixel Padding Range Limit
 * (0028,0121), compared as stored values (before rescale); undefined when the tag is absent or
 * matches nothing.
 */
function paddingMask(ds: DataSet, values: Float32Array, signed: boolean): Uint8Array | undefined {
  const read = (k: Keyword) => (ds.elements[TAG[k]] ? (signed ? ds.int16(TAG[k]) : ds.uint16(TAG[k])) : undefined);
  const pad = read('PixelPaddingValue');
  if (pad === undefined) return undefined;
  const limit = read('PixelPaddingRangeLimit') ?? pad;
  const [lo, hi] = [Math.min(pad, limit), Math.max(pad, limit)];
  const mask = new Uint8Array(values.length);
  let any = false;
  for (let i = 0; i < values.length; i++) {
    if (values[i] >= lo && values[i] <= hi) {
      mask[i] = 1;
      any = true;
    }
  }
  return any ? mask : undefined;
}

interface Lut {
  first: number;
  table: Float32Array; // already in 0..255
}

/** The first item of the VOI LUT Sequence (0028,3010): LUT Descriptor and LUT Data (PS3.3 C.11.2.1.1). */
function readVoiLut(ds: DataSet, signed: boolean): Lut | undefined {
  const item = (ds.elements[TAG.VOILUTSequence] as { items?: Array<{ dataSet?: DataSet }> } | undefined)?.items?.[0]?.dataSet;
  if (!item || !item.elements[TAG.LUTDescriptor] || !item.elements[TAG.LUTData]) return undefined;
  const entries = item.uint16(TAG.LUTDescriptor, 0) || 65536;
  let first = item.uint16(TAG.LUTDescriptor, 1) ?? 0;
  if (signed && first > 32767) first -= 65536;
  const bits = item.uint16(TAG.LUTDescriptor, 2) ?? 16;
  const data = item.elements[TAG.LUTData];
  if (bits < 1 || bits > 16 || data.length < entries * 2) return undefined; // malformed: fall back to min-max
  const max = 2 ** bits - 1;
  const table = new Float32Array(entries);
  for (let i = 0; i < entries; i++) table[i] = (Math.min(item.uint16(TAG.LUTData, i) ?? 0, max) / max) * 255;
  return { first, table };
}

function applyLut(values: Float32Array, lut: Lut, padding?: Uint8Array, counts?: Uint32Array): Voi {
  const out = new Float32Array(values.length);
  const last = lut.table.length - 1;
  let saturated = 0;
  for (let i = 0; i < values.length; i++) {
    const k = Math.round(values[i]) - lut.first;
    // Outside the table's range (clamped to its first or last entry) is saturated.
    if (!padding?.[i] && (k <= 0 || k >= last)) saturated += counts ? counts[i] : 1;
    out[i] = lut.table[Math.min(last, Math.max(0, k))];
  }
  return { data: out, saturated };
}

/**
 * The scope rule (dicom-scope.ts, shared with the PACS watcher) over the file's Modality, SOP Class
 * UID, View Position and Body Part Examined: a non-radiograph is refused with 422
 * outside_intended_use before any pixel is decoded; what may not be one, a lateral view or a
 * non-chest body part is a warning, and the image-based input gate decides.
 */
function checkScope(ds: DataSet, notes: string[]): void {
  const read = (k: 'Modality' | 'SOPClassUID' | 'ViewPosition' | 'BodyPartExamined') => ds.string(TAG[k]);
  const scope = dicomScope({
    Modality: read('Modality'),
    SOPClassUID: read('SOPClassUID'),
    ViewPosition: read('ViewPosition'),
    BodyPartExamined: read('BodyPartExamined'),
  });
  if (scope.verdict === 'refuse') throw new PneumoError('outside_intended_use', scope.reason);
  notes.push(...scope.warnings);
}

/** Decodes a DICOM object (Part 10 or raw data set) to an image in 0..255. */
export async function decodeDicom(bytes: Uint8Array, limits: DicomLimits): Promise<DecodedImage> {
  const ds = parse(bytes, await inflateIfDeflated(bytes, limits));
  const notes: string[] = [];
  const syntax = transferSyntax(ds);
  if (!UNCOMPRESSED.has(syntax) && !CODEC_OF_SYNTAX[syntax]) {
    const name = COMPRESSED_NAMES[syntax] ?? 'unknown transfer syntax';
    throw unsupported(`compressed transfer syntax ${name} (${syntax}) is not supported; export the image uncompressed or as PNG`);
  }
  const rows = us(ds, 'Rows');
  const cols = us(ds, 'Columns');
  const samples = ds.uint16(TAG.SamplesPerPixel) ?? 1;
  const bitsAllocated = us(ds, 'BitsAllocated');
  const bitsStored = ds.uint16(TAG.BitsStored) ?? bitsAllocated;
  const highBit = ds.uint16(TAG.HighBit) ?? bitsStored - 1;
  const signed = (ds.uint16(TAG.PixelRepresentation) ?? 0) === 1;
  let photometric = (ds.string(TAG.PhotometricInterpretation) ?? (samples === 3 ? 'RGB' : 'MONOCHROME2')).toUpperCase();
  const frames = ds.intString(TAG.NumberOfFrames) ?? 1;
  checkScope(ds, notes);

  if (![8, 16, 32].includes(bitsAllocated)) throw unsupported(`BitsAllocated ${bitsAllocated}`);
  checkDecodeCost(cols, rows, samples, bitsAllocated / 8, limits);
  if (bitsStored < 1 || bitsStored > bitsAllocated || highBit + 1 < bitsStored || highBit >= bitsAllocated) {
    throw undecodable(`inconsistent BitsStored ${bitsStored} / HighBit ${highBit}`);
  }
  if (samples !== 1 && samples !== 3) throw unsupported(`SamplesPerPixel ${samples}`);
  if (frames > 1) notes.push(`DICOM multi-frame (${frames} frames): first frame used`);
  // The whole analysis, from the header: the frame, the codec's buffers, the table output, the working copies.
  const work = workSize(cols, rows);
  const reduced = work.width !== cols || work.height !== rows;
  const fullResExtraPerSample = fullResExtra(bitsAllocated, reduced, syntax);
  const cost = { width: cols, height: rows, channels: samples, bytesPerSample: bitsAllocated / 8, fullResExtraPerSample };
  checkAnalysisCost(cost, limits.maxAnalysisBytes ?? defaultMaxAnalysisBytes());

  const compressed = CODEC_OF_SYNTAX[syntax] !== undefined;
  const info: FrameInfo = {
    width: cols,
    height: rows,
    bitsAllocated,
    bitsStored,
    samplesPerPixel: samples,
    pixelRepresentation: signed ? 1 : 0,
    planarConfiguration: ds.uint16(TAG.PlanarConfiguration) ?? 0,
    photometricInterpretation: photometric,
  };
  const frameBytes = await firstFrameBytes(ds, syntax, info, frames);
  if (compressed) {
    notes.push(`DICOM ${COMPRESSED_NAMES[syntax]} decoded`);
    // The codecs give interleaved samples, colour already converted to RGB (YBR_* of JPEG / JPEG 2000).
    if (samples === 3 && photometric.startsWith('YBR')) photometric = 'RGB';
  }
  // Compressed codecs put the stored bits in the low bits of each sample.
  const stored = { highBit: compressed ? bitsStored - 1 : highBit, bigEndian: syntax === EXPLICIT_BE };
  const n = rows * cols;
  const source = reduced ? { source: { width: cols, height: rows } } : {};
  // 8 and 16-bit samples: every step below works on the 2^bits possible words (`values`), weighted
  // by how often each occurs (`counts`), and the pixels are one table lookup each (see expand).
  // 32-bit samples: per pixel, as read.
  const perWord = bitsAllocated !== 32;
  const words = perWord ? sampleWords(frameBytes, n * samples, bitsAllocated as 8 | 16, stored.bigEndian) : undefined;
  const counts = words && samples === 1 ? histogram(words, 2 ** bitsAllocated) : undefined;
  const values = perWord
    ? wordValues(bitsAllocated as 8 | 16, bitsStored, stored.highBit, signed)
    : readSamples(frameBytes, n * samples, bitsAllocated, bitsStored, stored.highBit, signed, stored.bigEndian);
  let padding = samples === 1 ? paddingMask(ds, values, signed) : undefined;
  if (padding && counts && !padding.some((p, k) => p === 1 && counts[k] > 0)) padding = undefined; // matches no pixel

  if (samples === 3) {
    if (photometric !== 'RGB' && photometric !== 'YBR_FULL') throw unsupported(`PhotometricInterpretation ${photometric}`);
    const planar = !compressed && info.planarConfiguration === 1;
    const scale = 255 / (2 ** bitsStored - 1);
    // Interleaved stored values scaled to 0..255 (table lookups), reduced in libvips when large.
    let px: { data: Float32Array; width: number; height: number };
    if (words) {
      const table = values.map((v) => v * scale);
      const interleaved = planar ? interleave(words, n) : words;
      px = await expand(interleaved, table, cols, rows, 3);
    } else {
      const data = new Float32Array(n * 3);
      for (let p = 0; p < n; p++) for (let c = 0; c < 3; c++) data[p * 3 + c] = (planar ? values[c * n + p] : values[p * 3 + c]) * scale;
      px = await reduceFloat(data, cols, rows, 3);
    }
    const data = px.data;
    for (let p = 0; p < data.length; p += 3) {
      let [r, g, b] = [data[p], data[p + 1], data[p + 2]];
      if (photometric === 'YBR_FULL') {
        const [y, cb, cr] = [r, g, b];
        r = y + 1.402 * (cr - 128);
        g = y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128);
        b = y + 1.772 * (cb - 128);
      }
      data[p] = Math.min(255, Math.max(0, r));
      data[p + 1] = Math.min(255, Math.max(0, g));
      data[p + 2] = Math.min(255, Math.max(0, b));
    }
    if (photometric === 'YBR_FULL') notes.push('DICOM YBR_FULL converted to RGB');
    return { image: { data, width: px.width, height: px.height, channels: 3 }, format: 'dicom', notes, ...source };
  }

  if (photometric !== 'MONOCHROME1' && photometric !== 'MONOCHROME2') throw unsupported(`PhotometricInterpretation ${photometric}`);
  const slope = ds.floatString(TAG.RescaleSlope) ?? 1;
  const intercept = ds.floatString(TAG.RescaleIntercept) ?? 0;
  // Rescaled values must stay finite in float32 (RescaleSlope 1e308 would make them Infinity, then NaN).
  if (!Number.isFinite(slope) || !Number.isFinite(intercept) || Math.abs(slope) * 2 ** bitsStored + Math.abs(intercept) > 1e37) {
    throw new PneumoError('unusable_image', 'The DICOM rescale slope or intercept is out of range; the pixel values cannot be computed.');
  }
  if (slope !== 1 || intercept !== 0) {
    for (let i = 0; i < values.length; i++) values[i] = values[i] * slope + intercept;
    notes.push('DICOM rescale slope/intercept applied');
  }
  const center = ds.floatString(TAG.WindowCenter, 0);
  const width = ds.floatString(TAG.WindowWidth, 0);
  const fn = (ds.string(TAG.VOILUTFunction) ?? 'LINEAR').toUpperCase();
  const voiLut = readVoiLut(ds, signed);
  let voi: (Voi & { what: string; note: string }) | undefined;
  if (center !== undefined && width !== undefined && Number.isFinite(center) && width >= (fn === 'LINEAR' ? 1 : Number.MIN_VALUE)) {
    const presets = (ds.string(TAG.WindowCenter) ?? '').split('\\').length;
    voi = {
      ...applyWindow(values, center, width, fn, padding, counts),
      what: 'Window Center/Width',
      note: `DICOM VOI window applied (${fn}${presets > 1 ? `, first of ${presets} presets` : ''})`,
    };
  } else if (voiLut) {
    voi = {
      ...applyLut(values, voiLut, padding, counts),
      what: 'VOI LUT',
      note: 'DICOM VOI LUT applied (first of the VOI LUT Sequence)',
    };
  }
  let data: Float32Array;
  const weight = (i: number) => (counts ? counts[i] : 1);
  let counted = 0;
  for (let i = 0; i < values.length; i++) if (!padding?.[i]) counted += weight(i);
  if (voi && !(counted > 0 && voi.saturated / counted >= MAX_VOI_SATURATION)) {
    data = voi.data;
    notes.push(voi.note);
  } else {
    // No VOI, or one that misses the pixels (nearly all pure black or white): the rule for files without VOI.
    if (voi) {
      notes.push(
        `${DICOM_WARNING}the ${voi.what} of the file maps ${Math.floor((voi.saturated / counted) * 1000) / 10}% of the pixels to pure black or white, so it was not used; the image was scaled by the min-max of its pixel values instead (the rule for files without VOI).`,
      );
    }
    data = minMax(values, padding, counts);
    notes.push('DICOM min-max scaled to 0..255');
  }
  const shape = (ds.string(TAG.PresentationLUTShape) ?? '').toUpperCase();
  if ((photometric === 'MONOCHROME1') !== (shape === 'INVERSE')) {
    for (let i = 0; i < data.length; i++) data[i] = 255 - data[i];
    notes.push(photometric === 'MONOCHROME1' ? 'DICOM MONOCHROME1 inverted' : 'DICOM Presentation LUT Shape INVERSE applied');
  }
  if (padding) {
    for (let i = 0; i < data.length; i++) if (padding[i]) data[i] = 0;
    notes.push('DICOM Pixel Padding Value pixels set to black');
  }
  const px = words ? await expand(words, data, cols, rows, 1) : await reduceFloat(data, cols, rows, 1);
  const image: RawImage = { data: px.data, width: px.width, height: px.height, channels: 1 };
  return { image, format: 'dicom', notes, ...source };
}

/** Planar (RRR..GGG..BBB..) words to interleaved. */
function interleave<T extends Uint8Array | Uint16Array>(words: T, n: number): T {
  const out = new (words.constructor as new (n: number) => T)(n * 3);
  for (let p = 0; p < n; p++) {
    out[p * 3] = words[p];
    out[p * 3 + 1] = words[n + p];
    out[p * 3 + 2] = words[2 * n + p];
  }
  return out;
}

/** A float image (32-bit samples) reduced to the working size in libvips when larger. */
async function reduceFloat(data: Float32Array, width: number, height: number, channels: 1 | 3) {
  const work = workSize(width, height);
  if (work.width === width && work.height === height) return { data, width, height };
  return { data: (await reduceSamples(data, width, height, channels, work.width, work.height)) as Float32Array, ...work };
}

/**
 * The Patient ID (0010,0020) of a DICOM file, for one use only: keeping a patient's films in one
 * fold of `pneumolens site`. Returned as its SHA-256, so that no caller holds the id itself; never
 * logged or written. Null when the file is not DICOM, has no Patient ID, is deflated (never
 * inflated here) or cannot be parsed up to that tag.
 */
export function dicomPatientKey(bytes: Uint8Array): string | null {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const hasPreamble = buf.length >= 132 && buf.toString('latin1', 128, 132) === 'DICM';
  if (hasPreamble && buf.toString('latin1', 132, Math.min(buf.length, 2048)).includes('1.2.840.10008.1.2.1.99')) return null;
  const rawSyntax = /^[A-Z]{2}$/.test(buf.toString('latin1', 4, 6)) ? EXPLICIT_LE : IMPLICIT_LE;
  try {
    const ds = dicomParser.parseDicom(buf, { untilTag: TAG.PatientID, ...(hasPreamble ? {} : { TransferSyntaxUID: rawSyntax }) });
    const id = ds.string(TAG.PatientID)?.trim();
    return id ? createHash('sha256').update(id).digest('hex') : null;
  } catch {
    return null;
  }
}
