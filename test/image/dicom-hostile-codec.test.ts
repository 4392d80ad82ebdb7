/**
 * Hostile compressed DICOM: a stream whose own header claims a larger image than the DICOM header,
 * huge declared sizes, corrupted and truncated streams of every codec, and a decode that outlasts
 * its deadline. Each must end in a clear 4xx, never a crash, and the event loop must stay free
 * while a frame decodes (the codecs run in a worker thread).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { PneumoError } from '../../src/errors.ts';
import { decodeImage } from '../../src/image/decode.ts';
import { decodeFrame, type FrameInfo } from '../../src/image/dicom-codec.ts';
import { skipWithoutDicomTools, transcode, xrayDicom, type SyntaxName } from '../fixtures/dicom-tools.ts';
import { grayDicom, makeDicom, TS, type DicomElement } from '../fixtures/make-dicom.ts';

const statusOf = async (p: Promise<unknown>): Promise<number | 'ok'> => {
  try {
    await p;
    return 'ok';
  } catch (e) {
    if (e instanceof PneumoError) return e.status;
    throw e; // anything else is a bug
  }
};

/** An encapsulated DICOM of `frame` declaring rows x cols x bits. */
function encapsulated(transferSyntax: string, frame: Uint8Array, rows: number, cols: number, bits = 8): Buffer {
  const els: DicomElement[] = [
    { tag: [0x0028, 0x0002], vr: 'US', value: [1] },
    { tag: [0x0028, 0x0004], vr: 'CS', value: 'MONOCHROME2' },
    { tag: [0x0028, 0x0010], vr: 'US', value: [rows] },
    { tag: [0x0028, 0x0011], vr: 'US', value: [cols] },
    { tag: [0x0028, 0x0100], vr: 'US', value: [bits] },
    { tag: [0x0028, 0x0101], vr: 'US', value: [bits] },
    { tag: [0x0028, 0x0102], vr: 'US', value: [bits - 1] },
    { tag: [0x7fe0, 0x0010], vr: 'OB', value: frame },
  ];
  return makeDicom({ transferSyntax, elements: els });
}

/** SOI, a baseline SOF0 claiming width x height, EOI. */
function jpegClaiming(width: number, height: number): Uint8Array {
  return Uint8Array.from([0xff, 0xd8, 0xff, 0xc0, 0, 11, 8, height >> 8, height & 255, width >> 8, width & 255, 1, 1, 0x11, 0, 0xff, 0xd9]);
}

/** SOC + SIZ claiming width x height, one 8-bit component, one tile. */
function j2kClaiming(width: number, height: number): Uint8Array {
  const siz = Buffer.alloc(4 + 38 + 3);
  siz.writeUInt16BE(0xff4f, 0);
  siz.writeUInt16BE(0xff51, 2);
  siz.writeUInt16BE(41, 4); // Lsiz
  siz.writeUInt32BE(width, 8);
  siz.writeUInt32BE(height, 12);
  siz.writeUInt32BE(width, 24); // one tile
  siz.writeUInt32BE(height, 28);
  siz.writeUInt16BE(1, 40);
  siz.set([7, 1, 1], 42);
  return siz;
}

describe('compressed streams that lie about their size', () => {
  it('a JPEG or JPEG 2000 stream claiming 60000x60000 inside a 16x16 DICOM is 422 before the codec allocates', async () => {
    for (const [ts, frame] of [
      [TS.jpegBaseline, jpegClaiming(60000, 60000)],
      [TS.jpeg2000, j2kClaiming(60000, 60000)],
    ] as const) {
      const e = await decodeImage(encapsulated(ts, frame, 16, 16)).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(PneumoError);
      expect((e as PneumoError).status).toBe(422);
      expect((e as PneumoError).message).toContain('60000x60000');
    }
  });

  it('a DICOM header declaring a compressed image over the byte budget is 413 before any decoding', async () => {
    const file = encapsulated('1.2.840.10008.1.2.4.80', jpegClaiming(1000, 1000), 1000, 1000, 16); // 2 MB of samples
    const e = await decodeImage(file, { maxDecodedBytes: 1024 * 1024 }).catch((x: unknown) => x);
    expect((e as PneumoError).status).toBe(413);
  });

  it('a JPEG 2000 stream of 1x1 tiles is refused', async () => {
    const frame = j2kClaiming(200, 200);
    Buffer.from(frame.buffer).writeUInt32BE(1, 24);
    Buffer.from(frame.buffer).writeUInt32BE(1, 28);
    const e = await decodeImage(encapsulated(TS.jpeg2000, frame, 200, 200)).catch((x: unknown) => x);
    expect((e as PneumoError).status).toBe(422);
    expect((e as PneumoError).message).toContain('tiles');
  });

  it('an RLE frame with out-of-bounds segment offsets is 422', async () => {
    const frame = Buffer.alloc(100);
    frame.writeUInt32LE(1, 0);
    frame.writeUInt32LE(5000, 4);
    expect(await statusOf(decodeImage(encapsulated(TS.rle, frame, 16, 16)))).toBe(422);
  });
});

const skip = skipWithoutDicomTools('hostile compressed DICOM tests');

describe.skipIf(skip)('corrupted streams of every codec', () => {
  afterEach(() => {
    delete process.env.PNEUMOLENS_DECODE_TIMEOUT_MS;
  });

  it('truncated or byte-flipped JPEG, JPEG-LS, JPEG 2000 and RLE frames give 4xx or an image, never a crash', async () => {
    const { file } = await xrayDicom({ bits: 12 });
    let seed = 12345;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const seen: Record<string, Array<number | 'ok'>> = {};
    for (const name of ['jpegExtended', 'jpegLossless70', 'jpegLsLossless', 'j2kLossless', 'rle'] as SyntaxName[]) {
      const good = transcode(file, name);
      const pixelStart = good.indexOf(Buffer.from([0xe0, 0x7f, 0x10, 0x00])) + 12; // the encapsulated items follow
      const variants: Buffer[] = [good.subarray(0, Math.floor(pixelStart + (good.length - pixelStart) / 2))];
      for (let k = 0; k < 6; k++) {
        const bad = Buffer.from(good);
        for (let j = 0; j < 20; j++) bad[pixelStart + 40 + Math.floor(rand() * (bad.length - pixelStart - 40))] = Math.floor(rand() * 256);
        variants.push(bad);
      }
      seen[name] = [];
      for (const v of variants) {
        const s = await statusOf(decodeImage(v));
        if (s !== 'ok') expect(s, name).toBeGreaterThanOrEqual(400);
        if (s !== 'ok') expect(s, name).toBeLessThan(500);
        seen[name].push(s);
      }
    }
    // Every codec refused its truncated stream or decoded a partial image, and the worker recovered after each error.
    expect(await statusOf(decodeImage(transcode(file, 'j2kLossless')))).toBe('ok');
  });

  it('a frame that outlasts the decode deadline is 422, and the next one decodes in a fresh worker', async () => {
    const { file } = await xrayDicom({ bits: 12 });
    const j2k = transcode(file, 'j2kLossless');
    process.env.PNEUMOLENS_DECODE_TIMEOUT_MS = '0.001';
    const e = await decodeImage(j2k).catch((x: unknown) => x);
    expect((e as PneumoError).status).toBe(422);
    expect((e as PneumoError).message).toContain('took longer than');
    delete process.env.PNEUMOLENS_DECODE_TIMEOUT_MS;
    expect((await decodeImage(j2k)).image.width).toBe(200);
  });

  it('the event loop stays free while a 1200x1200 12-bit JPEG 2000 frame decodes', async () => {
    const { file } = await xrayDicom({ bits: 12, width: 1200, height: 1200 });
    const j2k = transcode(file, 'j2kLossless');
    await decodeImage(transcode((await xrayDicom({ bits: 12 })).file, 'j2kLossless')); // the worker is warm
    let last = performance.now();
    let maxGap = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
    }, 5);
    const t0 = performance.now();
    const d = await decodeImage(j2k);
    const took = performance.now() - t0;
    clearInterval(timer);
    expect(d.source).toEqual({ width: 1200, height: 1200 }); // reduced to the working size in libvips
    expect(d.image.width).toBe(1024);
    expect(j2k.length).toBeGreaterThan(0); // the caller's bytes are not moved to the worker
    // The codec's time is spent off the loop: the loop's longest pause is a fraction of the decode.
    expect(maxGap).toBeLessThan(Math.max(250, took / 2));
  });
});

describe('decodeFrame checks the stream before the worker sees it', () => {
  it('refuses an empty JPEG-LS frame', async () => {
    const info: FrameInfo = {
      width: 16,
      height: 16,
      bitsAllocated: 8,
      bitsStored: 8,
      samplesPerPixel: 1,
      pixelRepresentation: 0,
      planarConfiguration: 0,
      photometricInterpretation: 'MONOCHROME2',
    };
    expect(await statusOf(decodeFrame('decodeJpegLs', new Uint8Array(0), info))).toBe(422);
    expect(await statusOf(decodeImage(grayDicom(16, 16, [1, 2, 3], { transferSyntax: '1.2.840.10008.1.2.4.80' })))).toBe(422);
  });
});
