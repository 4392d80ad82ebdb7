/**
 * Bounded inflation of a deflated explicit VR little endian DICOM data set (transfer syntax
 * 1.2.840.10008.1.2.1.99). A few megabytes of deflate can expand to gigabytes, so the data set is
 * inflated as a stream (on the thread pool, never blocking the event loop) and stopped:
 * - at the end of the first frame, once the elements read so far declare the image (Rows, Columns,
 *   SamplesPerPixel, BitsAllocated and the pixel data element): that is all the decoder reads;
 * - with a 413 as soon as the declared frame is larger than the decode budget;
 * - with a 413 when the output passes the decode budget plus header slack before the image is
 *   declared (a bomb hidden in a large element before the pixel data, or an unusual layout).
 * Memory is therefore bounded by the budget, whatever the input.
 */
import zlib from 'node:zlib';
import { PneumoError } from '../errors.ts';
import { decodeBudgetError } from './limits.ts';

/** Room for the elements before the pixel data (all of them, not only the image module). */
export const HEADER_SLACK_BYTES = 1024 * 1024;

/** VRs with a reserved 2 bytes and a 4-byte length in explicit VR (PS3.5 7.1.2). */
const LONG_VRS = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'UC', 'UN', 'UR', 'UT', 'SV', 'UV']);
const UNDEFINED_LENGTH = 0xffffffff;

interface PixelData {
  /** Offset of the pixel data value in the inflated data set. */
  valueOffset: number;
  /** Offset of its 4-byte length field. */
  lengthOffset: number;
  length: number;
  /** Bytes of one frame, when the image module declared it. */
  frameBytes?: number;
}

type Scan = { state: 'more'; pos: number } | { state: 'found'; pixel: PixelData } | { state: 'unknown' };

/**
 * Walks the top-level elements of an explicit VR LE data set from `pos`, remembering the image
 * module in `seen`, until the pixel data element. 'more' when the bytes end first, 'unknown' for a
 * layout it does not follow (undefined-length sequences): the global cap then applies alone.
 */
function scanElements(buf: Buffer, end: number, pos: number, seen: Map<string, number>): Scan {
  while (pos + 8 <= end) {
    const group = buf.readUInt16LE(pos);
    const element = buf.readUInt16LE(pos + 2);
    const vr = buf.toString('latin1', pos + 4, pos + 6);
    let length: number;
    let valueOffset: number;
    if (group === 0xfffe || !/^[A-Z]{2}$/.test(vr)) return { state: 'unknown' };
    if (LONG_VRS.has(vr)) {
      if (pos + 12 > end) return { state: 'more', pos };
      length = buf.readUInt32LE(pos + 8);
      valueOffset = pos + 12;
    } else {
      length = buf.readUInt16LE(pos + 6);
      valueOffset = pos + 8;
    }
    if (group === 0x7fe0 && element === 0x0010) {
      if (length === UNDEFINED_LENGTH) return { state: 'unknown' };
      const [rows, cols, bits] = [seen.get('rows'), seen.get('cols'), seen.get('bits')];
      const samples = seen.get('samples') ?? 1;
      const frameBytes = rows !== undefined && cols !== undefined && bits ? rows * cols * samples * Math.ceil(bits / 8) : undefined;
      return { state: 'found', pixel: { valueOffset, lengthOffset: valueOffset - 4, length, frameBytes } };
    }
    if (length === UNDEFINED_LENGTH) return { state: 'unknown' };
    if (group === 0x0028 && vr === 'US' && length >= 2) {
      if (valueOffset + 2 > end) return { state: 'more', pos };
      const name = { 0x0002: 'samples', 0x0010: 'rows', 0x0011: 'cols', 0x0100: 'bits' }[element];
      if (name) seen.set(name, buf.readUInt16LE(valueOffset));
    }
    pos = valueOffset + length;
  }
  return { state: 'more', pos };
}

/**
 * Inflates `deflated` (raw deflate, as the transfer syntax specifies) under the rules above. The
 * result ends with the first frame of pixel data; when frames were cut off, the pixel data length
 * is rewritten to what is kept, so the parser reads a consistent data set.
 */
export function inflateDataSet(
  deflated: Uint8Array,
  maxDecodedBytes: number,
  /** Called once the image is declared, before its pixels are inflated: throws to refuse it (the whole-analysis budget). */
  checkImage?: (image: { rows: number; cols: number; samples: number; bits: number }) => void,
): Promise<Buffer> {
  const globalCap = maxDecodedBytes + HEADER_SLACK_BYTES;
  return new Promise<Buffer>((resolve, reject) => {
    const inflater = zlib.createInflateRaw({ chunkSize: 64 * 1024 });
    // The output is kept as a list of chunks (never copied while inflating, so the event loop is
    // never held up by a large copy); the first HEADER_SLACK_BYTES are also kept contiguous for the scan.
    const chunks: Buffer[] = [];
    const head = Buffer.allocUnsafe(HEADER_SLACK_BYTES);
    let headLength = 0;
    let total = 0;
    let stopAt = globalCap; // tightened once the image is declared
    let tightened = false;
    let scan: Scan = { state: 'more', pos: 0 };
    let pixel: PixelData | undefined;
    const seen = new Map<string, number>();
    let settled = false;

    const finish = (err: Error | null) => {
      if (settled) return;
      settled = true;
      inflater.removeAllListeners('data');
      inflater.destroy();
      if (err) return reject(err);
      const data = Buffer.concat(chunks, Math.min(total, stopAt));
      if (pixel && data.length >= pixel.valueOffset && pixel.length > data.length - pixel.valueOffset) {
        data.writeUInt32LE(data.length - pixel.valueOffset, pixel.lengthOffset); // frames cut off: say so
      }
      resolve(data);
    };

    inflater.on('data', (chunk: Buffer) => {
      const take = Math.min(chunk.length, stopAt - total);
      chunks.push(take === chunk.length ? chunk : chunk.subarray(0, take));
      total += take;
      if (scan.state === 'more') {
        if (headLength < head.length) headLength += chunk.copy(head, headLength, 0, Math.min(take, head.length - headLength));
        // An element header beyond the contiguous head: a layout we do not follow; the global cap applies.
        scan = scan.pos + 12 > head.length ? { state: 'unknown' } : scanElements(head, headLength, scan.pos, seen);
        if (scan.state === 'found') {
          pixel = scan.pixel;
          if (pixel.frameBytes !== undefined && pixel.frameBytes > maxDecodedBytes) {
            finish(decodeBudgetError(pixel.frameBytes, maxDecodedBytes, 'The DICOM image'));
            return;
          }
          const [rows, cols, bits] = [seen.get('rows'), seen.get('cols'), seen.get('bits')];
          if (checkImage && rows !== undefined && cols !== undefined && bits !== undefined) {
            try {
              checkImage({ rows, cols, bits, samples: seen.get('samples') ?? 1 });
            } catch (e) {
              finish(e as Error);
              return;
            }
          }
          const keep = Math.min(pixel.length, pixel.frameBytes ?? pixel.length);
          if (pixel.valueOffset + keep <= globalCap) {
            stopAt = pixel.valueOffset + keep;
            tightened = true;
          }
        }
      }
      if (total >= stopAt) {
        if (tightened)
          finish(null); // the first frame is complete: the rest is not needed
        else if (take < chunk.length) {
          const limit = `${+(globalCap / (1024 * 1024)).toFixed(1)} MB`;
          finish(new PneumoError('payload_too_large', `The deflated DICOM data set inflates to more than ${limit} before its image.`));
        }
      }
    });
    inflater.on('end', () => finish(null));
    inflater.on('error', () =>
      finish(new PneumoError('undecodable_image', 'The DICOM file could not be decoded: the deflated data set is corrupt.')),
    );
    inflater.end(deflated);
  });
}
