/**
 * Compressed DICOM frames: JPEG (baseline, extended 12-bit, lossless .57/.70), JPEG-LS, JPEG 2000,
 * HTJ2K and RLE, decoded by the dcmjs-codecs WebAssembly (libjpeg, CharLS, OpenJPEG, OpenJPH) in
 * one worker thread (codec-worker.mjs):
 * - loaded lazily, once, on the first compressed file; idle, it does not keep the process alive;
 * - the event loop never runs a codec, so the server's request timeout and other requests go on
 *   while a frame decodes, and a frame that takes longer than the decode deadline
 *   (PNEUMOLENS_DECODE_TIMEOUT_MS, default 20 s) ends the worker: 422, and a fresh worker next time;
 * - before anything is decoded, the codestream's own header (JPEG SOF, JPEG-LS SOF55, JPEG 2000
 *   SIZ, RLE segment table) must describe the image the DICOM header declared, which the decode
 *   budget already admitted: a small file cannot make the codec allocate for a larger image;
 * - a codec error or trap ends the worker too (its heap may be inconsistent) and is a 422.
 */
import { Worker } from 'node:worker_threads';
import { PneumoError } from '../errors.ts';

export type CodecMethod = 'decodeJpeg' | 'decodeJpegLs' | 'decodeJpeg2000' | 'decodeHtJpeg2000' | 'decodeRle';

/** Encapsulated transfer syntaxes we decode, and the codec of each. */
export const CODEC_OF_SYNTAX: Record<string, CodecMethod> = {
  '1.2.840.10008.1.2.4.50': 'decodeJpeg',
  '1.2.840.10008.1.2.4.51': 'decodeJpeg',
  '1.2.840.10008.1.2.4.57': 'decodeJpeg',
  '1.2.840.10008.1.2.4.70': 'decodeJpeg',
  '1.2.840.10008.1.2.4.80': 'decodeJpegLs',
  '1.2.840.10008.1.2.4.81': 'decodeJpegLs',
  '1.2.840.10008.1.2.4.90': 'decodeJpeg2000',
  '1.2.840.10008.1.2.4.91': 'decodeJpeg2000',
  '1.2.840.10008.1.2.4.201': 'decodeHtJpeg2000',
  '1.2.840.10008.1.2.4.202': 'decodeHtJpeg2000',
  '1.2.840.10008.1.2.4.203': 'decodeHtJpeg2000',
  '1.2.840.10008.1.2.5': 'decodeRle',
};

/** What the DICOM header declares about the frame (and the codec needs). */
export interface FrameInfo {
  width: number;
  height: number;
  bitsAllocated: number;
  bitsStored: number;
  samplesPerPixel: number;
  pixelRepresentation: number;
  planarConfiguration: number;
  photometricInterpretation: string;
}

export const DEFAULT_DECODE_TIMEOUT_MS = 10_000;
/** A codec worker that returned a frame larger than this is replaced, so that its heap's memory is returned. */
const RECYCLE_AFTER_BYTES = 16 * 1024 * 1024;
/** More tiles than this in a JPEG 2000 frame is refused (real files have 1 to a few hundred). */
export const MAX_J2K_TILES = 4096;

const undecodable = (why: string) => new PneumoError('undecodable_image', `The DICOM file could not be decoded: ${why}.`);
const damaged = (why: string) => new PneumoError('damaged_image', `The DICOM file is damaged: ${why}; a damaged image is not analysed.`);

/**
 * JPEG, JPEG-LS and JPEG 2000 codestreams end with their end marker (EOI / EOC, FF D9), followed at
 * most by the zero bytes a writer pads the fragment with: without it the stream was cut short, and
 * the codecs would decode what is there and fill the rest.
 */
function checkEndMarker(frame: Uint8Array, what: string): void {
  let end = frame.length;
  while (end > 2 && frame[end - 1] === 0 && frame.length - end < 16) end--;
  if (!(end >= 2 && frame[end - 2] === 0xff && frame[end - 1] === 0xd9)) {
    throw damaged(`the ${what} stream has no end-of-image marker (it was cut short)`);
  }
}

export function decodeTimeoutMs(env: Record<string, string | undefined> = process.env): number {
  const raw = env.PNEUMOLENS_DECODE_TIMEOUT_MS;
  if (raw === undefined || raw.trim() === '') return DEFAULT_DECODE_TIMEOUT_MS;
  const v = Number(raw);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`PNEUMOLENS_DECODE_TIMEOUT_MS must be a number > 0, got '${raw}'`);
  return v;
}

interface StreamHeader {
  width: number;
  height: number;
  components: number;
  precision: number;
}

/** JPEG and JPEG-LS: the frame header (SOFn, or SOF55 for JPEG-LS), found by walking the marker segments. */
function jpegHeader(b: Uint8Array, jpegLs: boolean): StreamHeader {
  if (b.length < 4 || b[0] !== 0xff || b[1] !== 0xd8) throw undecodable('the JPEG stream does not start with SOI');
  let pos = 2;
  while (pos + 4 <= b.length) {
    if (b[pos] !== 0xff) throw undecodable('the JPEG stream has a malformed marker');
    const marker = b[pos + 1];
    if (marker === 0xff) {
      pos++; // fill byte
      continue;
    }
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      pos += 2;
      continue;
    }
    const length = (b[pos + 2] << 8) | b[pos + 3];
    const isSof = jpegLs ? marker === 0xf7 : marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker);
    if (isSof) {
      if (pos + 10 > b.length || length < 8) break;
      return {
        precision: b[pos + 4],
        height: (b[pos + 5] << 8) | b[pos + 6],
        width: (b[pos + 7] << 8) | b[pos + 8],
        components: b[pos + 9],
      };
    }
    if (marker === 0xda || marker === 0xd9 || length < 2) break; // scan or end before a frame header
    pos += 2 + length;
  }
  throw undecodable('the JPEG stream has no frame header');
}

/** JPEG 2000 / HTJ2K: the SIZ segment right after SOC (raw codestream, or inside a JP2 'jp2c' box). */
function j2kHeader(b: Uint8Array): StreamHeader {
  let pos = -1;
  for (let i = 0; i + 4 <= Math.min(b.length, 64 * 1024); i++) {
    if (b[i] === 0xff && b[i + 1] === 0x4f && b[i + 2] === 0xff && b[i + 3] === 0x51) {
      pos = i + 4;
      break;
    }
  }
  if (pos < 0 || pos + 38 > b.length) throw undecodable('the JPEG 2000 stream has no SIZ header');
  const v = new DataView(b.buffer, b.byteOffset + pos, b.length - pos);
  const [xs, ys, xo, yo, xt, yt, xto, yto] = [4, 8, 12, 16, 20, 24, 28, 32].map((o) => v.getUint32(o));
  const components = v.getUint16(36);
  if (xs <= xo || ys <= yo || xt === 0 || yt === 0 || components === 0 || pos + 38 + components * 3 > b.length) {
    throw undecodable('the JPEG 2000 SIZ header is inconsistent');
  }
  const tiles = Math.ceil((xs - xto) / xt) * Math.ceil((ys - yto) / yt);
  if (tiles > MAX_J2K_TILES) throw undecodable(`the JPEG 2000 stream has ${tiles} tiles (at most ${MAX_J2K_TILES})`);
  let precision = 0;
  for (let c = 0; c < components; c++) precision = Math.max(precision, (v.getUint8(38 + c * 3) & 0x7f) + 1);
  return { width: xs - xo, height: ys - yo, components, precision };
}

/** RLE (PS3.5 G): a 64-byte header of segment count and increasing offsets, one segment per byte plane. */
function checkRle(b: Uint8Array, info: FrameInfo): void {
  if (b.length < 64) throw undecodable('the RLE frame is shorter than its header');
  const v = new DataView(b.buffer, b.byteOffset, 64);
  const segments = v.getUint32(0, true);
  const expected = info.samplesPerPixel * (info.bitsAllocated / 8);
  if (segments !== expected) throw undecodable(`the RLE frame has ${segments} segments, ${expected} expected`);
  let last = 63;
  for (let s = 0; s < segments; s++) {
    const offset = v.getUint32(4 + s * 4, true);
    if (offset <= last || offset >= b.length) throw undecodable('the RLE segment offsets are out of order or out of bounds');
    last = offset;
  }
}

/** Refuses a codestream whose own header disagrees with the DICOM header (before the codec allocates anything). */
export function checkCodestream(method: CodecMethod, frame: Uint8Array, info: FrameInfo): void {
  if (method === 'decodeRle') return checkRle(frame, info);
  const j2k = method === 'decodeJpeg2000' || method === 'decodeHtJpeg2000';
  const h = j2k ? j2kHeader(frame) : jpegHeader(frame, method === 'decodeJpegLs');
  if (h.width !== info.width || h.height !== info.height) {
    throw undecodable(`the compressed stream is ${h.width}x${h.height} but the DICOM header says ${info.width}x${info.height}`);
  }
  if (h.components !== info.samplesPerPixel) {
    throw undecodable(`the compressed stream has ${h.components} components but SamplesPerPixel is ${info.samplesPerPixel}`);
  }
  if (h.precision > info.bitsAllocated) {
    throw undecodable(`the compressed stream has ${h.precision}-bit samples but BitsAllocated is ${info.bitsAllocated}`);
  }
  checkEndMarker(frame, j2k ? 'JPEG 2000' : method === 'decodeJpegLs' ? 'JPEG-LS' : 'JPEG');
}

interface Job {
  resolve: (data: Uint8Array) => void;
  reject: (e: Error) => void;
  timer?: NodeJS.Timeout;
}

/** One lazily started worker; jobs are sent one at a time so that each deadline is the codec's own time. */
class CodecWorker {
  private worker?: Worker;
  private readonly queue: Array<{ id: number; method: CodecMethod; frame: Uint8Array; info: FrameInfo; timeoutMs: number; job: Job }> = [];
  private current?: { id: number; job: Job; worker: Worker };
  private nextId = 1;

  decode(method: CodecMethod, frame: Uint8Array, info: FrameInfo, timeoutMs: number): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve, reject) => {
      this.queue.push({ id: this.nextId++, method, frame, info, timeoutMs, job: { resolve, reject } });
      this.pump();
    });
  }

  private start(): Worker {
    const w = new Worker(new URL('./codec-worker.mjs', import.meta.url));
    w.on('message', (msg: { id: number; data?: Uint8Array; error?: string; warning?: string }) => {
      const cur = this.current;
      if (!cur || cur.worker !== w || cur.id !== msg.id) return;
      if (msg.data) {
        // A large frame grew the WebAssembly heap, which never shrinks: a fresh worker returns it.
        if (msg.data.byteLength > RECYCLE_AFTER_BYTES) this.stop();
        this.settle(null, Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength));
      } else {
        this.stop(); // the codec's heap may be inconsistent after an error or a trap
        // A codec that fails on, or warns about, the stream (a warning is damage too: see codec-worker.mjs).
        this.settle(damaged(`the compressed pixel data is corrupt (${msg.warning ?? msg.error ?? 'codec error'})`));
      }
    });
    w.on('error', () => {
      if (this.worker === w) this.stop();
      if (this.current?.worker === w) this.settle(undecodable('the codec failed'));
    });
    w.on('exit', () => {
      if (this.worker === w) this.worker = undefined;
      if (this.current?.worker === w) this.settle(undecodable('the codec stopped'));
    });
    w.unref();
    return w;
  }

  private stop(): void {
    const w = this.worker;
    this.worker = undefined;
    if (w) void w.terminate();
  }

  private settle(err: Error | null, data?: Uint8Array): void {
    const cur = this.current;
    if (!cur) return;
    this.current = undefined;
    clearTimeout(cur.job.timer);
    this.worker?.unref();
    if (err) cur.job.reject(err);
    else cur.job.resolve(data!);
    this.pump();
  }

  private pump(): void {
    if (this.current) return;
    const next = this.queue.shift();
    if (!next) return;
    const worker = (this.worker ??= this.start());
    worker.ref(); // keep the process alive while a frame decodes
    this.current = { id: next.id, job: next.job, worker };
    next.job.timer = setTimeout(() => {
      this.stop();
      this.settle(undecodable(`decoding the compressed pixel data took longer than ${next.timeoutMs / 1000} s`));
    }, next.timeoutMs);
    // A copy of the frame alone (it is a view into the upload) is moved to the worker. Not
    // frame.slice(): on a Buffer that is a view, and moving it would detach the caller's upload.
    const frame = new Uint8Array(next.frame);
    worker.postMessage({ id: next.id, method: next.method, frame, info: next.info }, [frame.buffer]);
  }
}

let codecWorker: CodecWorker | undefined;

/**
 * Decodes one frame: little-endian samples, BitsAllocated wide, interleaved when colour (the codec
 * converts JPEG YCbCr to RGB). Throws 422 for a stream that disagrees with the header, is corrupt,
 * or takes longer than the deadline.
 */
export async function decodeFrame(
  method: CodecMethod,
  frame: Uint8Array,
  info: FrameInfo,
  timeoutMs = decodeTimeoutMs(),
): Promise<Uint8Array> {
  checkCodestream(method, frame, info);
  codecWorker ??= new CodecWorker();
  const data = await codecWorker.decode(method, frame, info, timeoutMs);
  const expected = info.width * info.height * info.samplesPerPixel * (info.bitsAllocated / 8);
  if (data.length < expected) throw undecodable(`the codec returned ${data.length} bytes, ${expected} expected`);
  return data;
}
