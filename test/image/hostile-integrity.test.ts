/**
 * Issue 18: damaged images are refused (422 damaged_image), never analysed as if intact, and the
 * whole analysis is budgeted from the header. The fuzz corpus (test/fixtures/hostile.ts mutants:
 * truncations, single bit flips, runs of 1-16 random bytes, seeded) is a test: every mutant is
 * refused with a 4xx, or decodes to the intact image's size with at most TOLERANCE of its pixels
 * more than 32 grey levels off.
 *
 * Formats whose damage the bytes themselves reveal (PNG chunk CRCs, TIFF strip lengths, DICOM
 * element lengths, JPEG-LS) are held to that for every mutant. Baseline JPEG and JPEG 2000 carry no
 * checksum: a bit flipped inside the entropy-coded data often decodes without any decoder warning
 * (Huffman codes resynchronise), so for them every truncation must be refused and the share of the
 * other mutants that slip through is bounded at what was measured (regression bound, not a claim).
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { PneumoError } from '../../src/errors.ts';
import { decodeImage } from '../../src/image/decode.ts';
import { analysisBytes, DEFAULT_MAX_ANALYSIS_BYTES, workSize, WORK_MAX_SIDE } from '../../src/image/limits.ts';
import { resizeAntialias } from '../../src/image/resample.ts';
import type { DecodedImage } from '../../src/types.ts';
import { xrayDicom } from '../fixtures/dicom-tools.ts';
import {
  deflatedZeroDicom,
  encapsulatedDicom,
  encodeFrame,
  HOSTILE_TS,
  jpegDicomOf,
  manyPageTiff,
  mutants,
  uncompressedTiff,
  type FrameSpec,
} from '../fixtures/hostile.ts';
import { GOLDEN } from '../fixtures/paths.ts';

const XRAY = join(GOLDEN, 'normal_gray_200x240.png');
/** Share of pixels that may be more than 32 grey levels off in a mutant that is accepted. */
const TOLERANCE = 0.01;

const refusal = async (p: Promise<unknown>): Promise<PneumoError> => {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e, 'expected a refusal').toBeInstanceOf(PneumoError);
  return e as PneumoError;
};

function grayOf(d: DecodedImage): { g: Float32Array; width: number; height: number } {
  const { data, channels, width, height } = d.image;
  const g = new Float32Array(width * height);
  for (let p = 0; p < g.length; p++) {
    g[p] =
      channels >= 3 ? 0.299 * data[p * channels] + 0.587 * data[p * channels + 1] + 0.114 * data[p * channels + 2] : data[p * channels];
  }
  return { g, width, height };
}

interface Verdict {
  refused: number;
  close: number;
  far: string[];
  truncationsAccepted: number;
}

/** Decodes every mutant: refused (a 4xx PneumoError; anything else fails the test), close to the intact image, or far. */
async function judge(good: Buffer, n: number, seed: number, protect: number): Promise<Verdict> {
  const ref = grayOf(await decodeImage(good));
  const v: Verdict = { refused: 0, close: 0, far: [], truncationsAccepted: 0 };
  for (const m of mutants(good, n, seed, protect)) {
    let d: DecodedImage;
    try {
      d = await decodeImage(m.bytes);
    } catch (e) {
      expect(e, 'a mutant must fail as a PneumoError').toBeInstanceOf(PneumoError);
      expect((e as PneumoError).status).toBeGreaterThanOrEqual(400);
      expect((e as PneumoError).status).toBeLessThan(500);
      v.refused++;
      continue;
    }
    if (m.kind === 'truncate') v.truncationsAccepted++;
    const got = grayOf(d);
    let off = 1;
    if (got.width === ref.width && got.height === ref.height) {
      let c = 0;
      for (let i = 0; i < got.g.length; i++) if (Math.abs(got.g[i] - ref.g[i]) > 32) c++;
      off = c / got.g.length;
    }
    if (off <= TOLERANCE) v.close++;
    else v.far.push(`${m.kind} ${(off * 100).toFixed(1)}%`);
  }
  return v;
}

async function xrayGray(): Promise<{ pixels: Uint8Array; spec: FrameSpec }> {
  const { data, info } = await sharp(XRAY).greyscale().raw().toBuffer({ resolveWithObject: true });
  return { pixels: new Uint8Array(data), spec: { width: info.width, height: info.height, samples: 1, bits: 8 } };
}

describe('damaged files are 422 damaged_image in every container', () => {
  it('a JPEG-baseline DICOM holding half (or 90%, or 99%) of its codestream', async () => {
    for (const keep of [0.5, 0.9, 0.99]) {
      const e = await refusal(decodeImage((await jpegDicomOf(XRAY, keep)).file));
      expect(e.code, String(keep)).toBe('damaged_image');
    }
    expect((await decodeImage((await jpegDicomOf(XRAY)).file)).image.width).toBe(200); // the intact file decodes
  });

  it('the same codestream cut in half with an end marker appended (the codec warns: premature end of data segment)', async () => {
    const { jpeg } = await jpegDicomOf(XRAY);
    const spec: FrameSpec = { width: 200, height: 240, samples: 1, bits: 8 };
    const cut = Buffer.concat([jpeg.subarray(0, Math.floor(jpeg.length / 2)), Buffer.from([0xff, 0xd9])]);
    const e = await refusal(decodeImage(encapsulatedDicom(HOSTILE_TS.jpegBaseline, cut, spec)));
    expect(e.code).toBe('damaged_image');
    expect(e.message).toMatch(/Corrupt JPEG data/);
    // As a .jpg (sharp, failOn warning): the same.
    expect((await refusal(decodeImage(cut))).code).toBe('damaged_image');
  });

  it('an uncompressed TIFF missing its last 1%, 5% or 15%', async () => {
    const tiff = await uncompressedTiff(XRAY);
    expect((await decodeImage(tiff)).image.width).toBe(200);
    for (const missing of [0.01, 0.05, 0.15]) {
      const e = await refusal(decodeImage(tiff.subarray(0, Math.floor(tiff.length * (1 - missing)))));
      expect(e.code, String(missing)).toBe('damaged_image');
    }
  });

  it('uncompressed DICOM pixel data shorter, or longer, than the header declares', async () => {
    const { file } = await xrayDicom({});
    expect((await refusal(decodeImage(file.subarray(0, file.length - 100)))).code).toBe('damaged_image');
    // Rows 240 -> 232 in the header: 1600 bytes more pixel data than declared.
    const rows = Buffer.from([0x28, 0x00, 0x10, 0x00, 0x55, 0x53, 0x02, 0x00, 240, 0]);
    const at = file.indexOf(rows);
    const lying = Buffer.from(file);
    lying[at + 8] = 232;
    expect((await refusal(decodeImage(lying))).message).toMatch(/longer/);
  });

  it('JPEG-LS and JPEG 2000 frames cut short (no end marker)', async () => {
    const { pixels, spec } = await xrayGray();
    for (const [method, ts] of [
      ['encodeJpegLs', HOSTILE_TS.jpegLs],
      ['encodeJpeg2000', HOSTILE_TS.jpeg2000],
    ] as const) {
      const frame = await encodeFrame(method, pixels, spec);
      expect((await decodeImage(encapsulatedDicom(ts, frame, spec))).image.width).toBe(200);
      for (const keep of [0.1, 0.5, 0.95]) {
        const e = await refusal(decodeImage(encapsulatedDicom(ts, frame.subarray(0, Math.floor(frame.length * keep)), spec)));
        expect(e.code, `${method} ${keep}`).toBe('damaged_image');
      }
    }
  });
});

describe('the fuzz corpus', () => {
  it(`PNG, TIFF, uncompressed DICOM and JPEG-LS DICOM: every mutant is a 4xx or within ${TOLERANCE * 100}% of far pixels`, async () => {
    const { pixels, spec } = await xrayGray();
    const corpus: Array<[string, Buffer, number]> = [
      ['PNG', readFileSync(XRAY), 8],
      ['TIFF', await uncompressedTiff(XRAY), 8],
      ['DICOM', (await xrayDicom({})).file, 132],
      ['JPEG-LS DICOM', encapsulatedDicom(HOSTILE_TS.jpegLs, await encodeFrame('encodeJpegLs', pixels, spec), spec), 132],
    ];
    for (const [name, good, protect] of corpus) {
      const v = await judge(good, 60, 7, protect);
      expect(v.far, name).toEqual([]);
      expect(v.refused, name).toBeGreaterThan(10); // the corpus does damage these files
    }
  }, 120_000);

  it('JPEG (file and DICOM) and JPEG 2000 DICOM: every truncation refused; slip-through of in-stream damage bounded', async () => {
    const { pixels, spec } = await xrayGray();
    const { file, jpeg } = await jpegDicomOf(XRAY);
    // Measured with this corpus (seed 7, 60 mutants; the run of 100 in the note of issue 18): far
    // mutants accepted were about 25% (JPEG), 10% (JPEG DICOM), 1% (JPEG 2000). The bounds below
    // leave room for codec versions; a decoder that stops warning would exceed them.
    const bounds: Array<[string, Buffer, number, number]> = [
      ['JPEG', jpeg, 4, 0.35],
      ['JPEG DICOM', file, 132, 0.2],
      ['JPEG 2000 DICOM', encapsulatedDicom(HOSTILE_TS.jpeg2000, await encodeFrame('encodeJpeg2000', pixels, spec), spec), 132, 0.05],
    ];
    for (const [name, good, protect, bound] of bounds) {
      const v = await judge(good, 60, 7, protect);
      expect(v.truncationsAccepted, name).toBe(0);
      expect(v.far.length / 60, `${name}: ${v.far.join(', ')}`).toBeLessThanOrEqual(bound);
    }
  }, 120_000);
});

describe('the whole analysis is budgeted from the header', () => {
  it('a deflated 6688x6688 RGB DICOM of zeros (130 KB) is 413 before its pixels are inflated, in well under a second', async () => {
    const file = deflatedZeroDicom({ width: 6688, height: 6688, samples: 3, bits: 8 });
    expect(file.length).toBeLessThan(200 * 1024);
    const t0 = performance.now();
    const e = await refusal(decodeImage(file));
    expect(e.status).toBe(413);
    expect(e.message).toMatch(/6688x6688/);
    expect(performance.now() - t0).toBeLessThan(1000);
  });

  it('a JPEG 2000 DICOM declaring 6688x6688 RGB is 413 before the codec runs (OpenJPEG would hold 32 bits a sample)', async () => {
    const spec: FrameSpec = { width: 6688, height: 6688, samples: 3, bits: 8 };
    // Only the SIZ header: the budget refuses before the codestream is looked at further.
    const siz = Buffer.alloc(4 + 38 + 9);
    siz.writeUInt16BE(0xff4f, 0);
    siz.writeUInt16BE(0xff51, 2);
    siz.writeUInt16BE(47, 4);
    siz.writeUInt32BE(6688, 8);
    siz.writeUInt32BE(6688, 12);
    siz.writeUInt32BE(6688, 24);
    siz.writeUInt32BE(6688, 28);
    siz.writeUInt16BE(3, 40);
    siz.set([7, 1, 1, 7, 1, 1, 7, 1, 1], 42);
    const e = await refusal(decodeImage(encapsulatedDicom(HOSTILE_TS.jpeg2000, siz, spec)));
    expect(e.status).toBe(413);
    expect(analysisBytes({ width: 6688, height: 6688, channels: 3, bytesPerSample: 1, fullResExtraPerSample: 7 })).toBeGreaterThan(
      DEFAULT_MAX_ANALYSIS_BYTES,
    );
  });

  it('a 3000x3600 16-bit DICOM (a real detector size) passes and is reduced to the working size in libvips', async () => {
    const { file, width, height } = await xrayDicom({ bits: 16, width: 3000, height: 3600 });
    const d = await decodeImage(file);
    expect(d.source).toEqual({ width, height });
    expect([d.image.width, d.image.height]).toEqual([workSize(width, height).width, WORK_MAX_SIDE]);
  });

  it('the native reduction stays within 2.5 grey levels (mean 0.3) of a full-size resize of the model input (224x224)', async () => {
    // A large film (the X-ray upscaled to 2400x2880) through decodeImage (reduced in libvips to 1024
    // px) then the contract's resize, against the contract's resize of the full-size pixels.
    const big = await sharp(XRAY).resize(2400, 2880, { kernel: 'cubic' }).toColourspace('b-w').png().toBuffer();
    const full = await sharp(big).greyscale().raw().toBuffer();
    const direct = resizeAntialias(Float32Array.from(full), 2400, 2880, 224, 224);
    const d = await decodeImage(big);
    expect(d.source).toEqual({ width: 2400, height: 2880 });
    const reduced = resizeAntialias(d.image.data, d.image.width, d.image.height, 224, 224);
    let max = 0;
    let sum = 0;
    for (let i = 0; i < direct.length; i++) {
      const diff = Math.abs(direct[i] - reduced[i]);
      max = Math.max(max, diff);
      sum += diff;
    }
    expect(max).toBeLessThan(2.5); // measured 1.7
    console.log(`native reduction vs full-size resize: max ${max.toFixed(2)}, mean ${(sum / direct.length).toFixed(3)} grey levels`);
    expect(sum / direct.length).toBeLessThan(0.3);
  });

  it('a TIFF of 150,000 page headers is refused in milliseconds', async () => {
    const tiff = manyPageTiff(150_000);
    const t0 = performance.now();
    const e = await refusal(decodeImage(tiff));
    expect(e.code).toBe('unusable_image');
    expect(performance.now() - t0).toBeLessThan(500);
  });
});

describe('DICOM strings echoed back are sanitised', () => {
  it('a View Position carrying markup reaches the warning as letters and digits only', async () => {
    const { file } = await xrayDicom({ viewPosition: 'LATERAL<img src=x onerror=alert(1)>' });
    const d = await decodeImage(file);
    const note = d.notes.find((n) => n.includes('View Position'));
    expect(note).toBeDefined();
    expect(note).toMatch(/View Position [A-Z0-9 _-]{1,16} is a lateral view/);
    expect(note).not.toMatch(/[<>=]|onerror/i);
  });
});
