import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { decodeImage } from '../../src/image/decode.ts';
import { toGray } from '../../src/image/raw.ts';
import { PneumoError } from '../../src/errors.ts';
import { grayDicom, makeDicom, rgbDicom, TS } from '../fixtures/make-dicom.ts';
import { makePng } from '../fixtures/make-png.ts';

/** Asserts that the promise rejects with a PneumoError of this status and code; returns it. */
async function rejection(p: Promise<unknown>, status: number, code: string): Promise<PneumoError> {
  const e = await p.then(
    () => null,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(PneumoError);
  expect((e as PneumoError).status).toBe(status);
  expect((e as PneumoError).code).toBe(code);
  return e as PneumoError;
}

const ramp = (n: number, f: (i: number) => number) => Array.from({ length: n }, (_, i) => f(i));

describe('decodeImage: raster formats (sharp)', () => {
  it('decodes an 8-bit gray PNG exactly', async () => {
    const samples = ramp(16 * 16, (i) => i % 256);
    const { image, format } = await decodeImage(makePng({ width: 16, height: 16, channels: 1, bitDepth: 8, samples }));
    expect(format).toBe('png');
    expect(image).toMatchObject({ width: 16, height: 16, channels: 1 });
    expect(Array.from(image.data)).toEqual(samples);
  });

  it('maps a 16-bit PNG to 0..255 by value/257', async () => {
    const samples = ramp(16 * 16, (i) => i * 256 + (i % 7));
    const { image } = await decodeImage(makePng({ width: 16, height: 16, channels: 1, bitDepth: 16, samples }));
    expect(image.channels).toBe(1);
    image.data.forEach((v, i) => expect(v).toBeCloseTo(samples[i] / 257, 4));
  });

  it('maps 16-bit RGB and 16-bit gray+alpha PNGs by value/257, keeping channels', async () => {
    const rgb = ramp(16 * 16 * 3, (i) => 257 * (i % 256));
    const a = await decodeImage(makePng({ width: 16, height: 16, channels: 3, bitDepth: 16, samples: rgb }));
    expect(a.image.channels).toBe(3);
    expect(Array.from(a.image.data.subarray(0, 4))).toEqual([0, 1, 2, 3]);
    const ga = ramp(16 * 16 * 2, (i) => (i % 2 ? 65535 : 257 * (i % 200)));
    const b = await decodeImage(makePng({ width: 16, height: 16, channels: 2, bitDepth: 16, samples: ga }));
    expect(b.image.channels).toBe(2);
    expect(Array.from(b.image.data.subarray(0, 4))).toEqual([0, 255, 2, 255]);
  });

  it('keeps alpha for RGBA and gray+alpha PNGs', async () => {
    const rgba = ramp(16 * 16 * 4, (i) => (i * 37) % 256);
    const a = await decodeImage(makePng({ width: 16, height: 16, channels: 4, bitDepth: 8, samples: rgba }));
    expect(a.image.channels).toBe(4);
    expect(Array.from(a.image.data)).toEqual(rgba);
    const ga = ramp(16 * 16 * 2, (i) => (i * 11) % 256);
    const b = await decodeImage(makePng({ width: 16, height: 16, channels: 2, bitDepth: 8, samples: ga }));
    expect(b.image.channels).toBe(2);
    expect(Array.from(b.image.data)).toEqual(ga);
  });

  it('reads an 8-bit RGB file whose channels are all equal as one channel: the gray_bt601 values of its RGB, bit for bit', async () => {
    const levels = ramp(16 * 16, (i) => i); // every level 0..255 (toGray does not give 15 for (15, 15, 15))
    const rgb = levels.flatMap((v) => [v, v, v]);
    const { image } = await decodeImage(makePng({ width: 16, height: 16, channels: 3, bitDepth: 8, samples: rgb }));
    expect(image.channels).toBe(1);
    const asRgb = toGray({ data: Float32Array.from(rgb), width: 16, height: 16, channels: 3 });
    expect(Array.from(image.data)).toEqual(Array.from(asRgb));
    expect(image.data[15]).not.toBe(15);
    // one pixel off the gray axis: the file is colour, and stays three channels
    rgb[3 * 100 + 2] = (rgb[3 * 100 + 2] + 1) % 256;
    const colour = await decodeImage(makePng({ width: 16, height: 16, channels: 3, bitDepth: 8, samples: rgb }));
    expect(colour.image.channels).toBe(3);
    expect(Array.from(colour.image.data)).toEqual(rgb);
  });

  it('decodes JPEG, WebP and TIFF (sniffed from bytes, not names)', async () => {
    const base = sharp({ create: { width: 24, height: 20, channels: 3, background: { r: 200, g: 100, b: 50 } } });
    for (const [fmt, bytes] of [
      ['jpeg', await base.clone().jpeg({ quality: 95 }).toBuffer()],
      ['webp', await base.clone().webp({ lossless: true }).toBuffer()],
      ['tiff', await base.clone().tiff().toBuffer()],
    ] as const) {
      const { image, format } = await decodeImage(bytes);
      expect(format).toBe(fmt);
      expect(image).toMatchObject({ width: 24, height: 20, channels: 3 });
      expect(Math.abs(image.data[0] - 200)).toBeLessThan(4);
      expect(Math.abs(image.data[2] - 50)).toBeLessThan(4);
    }
  });

  it('applies the EXIF orientation, as a browser does (phone photos of films)', async () => {
    // Stored 40 wide x 20 high: left half dark, right half bright. Orientation 6 means "rotate 90
    // degrees clockwise to display", so the upright image is 20 x 40 with the dark half on top.
    // (withMetadata also tags it sRGB, so it decodes as RGB, like a phone camera's JPEG.)
    const stored = new Uint8Array(40 * 20).map((_, i) => (i % 40 < 20 ? 30 : 220));
    const raw = { raw: { width: 40, height: 20, channels: 1 as const } };
    const jpeg = await sharp(stored, raw).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toBuffer();
    expect((await sharp(jpeg).metadata()).orientation).toBe(6); // the tag is really there
    const { image } = await decodeImage(jpeg);
    expect(image).toMatchObject({ width: 20, height: 40 });
    const at = (x: number, y: number) => image.data[(y * image.width + x) * image.channels];
    expect(at(10, 5)).toBeLessThan(60); // top: the stored left half
    expect(at(10, 35)).toBeGreaterThan(190); // bottom: the stored right half
    // Without a tag nothing turns.
    const plain = await sharp(stored, raw).jpeg().toBuffer();
    expect((await decodeImage(plain)).image).toMatchObject({ width: 40, height: 20 });
  });

  it('rejects a truncated JPEG with 422 damaged_image', async () => {
    const jpeg = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#808080' } })
      .jpeg()
      .toBuffer();
    await rejection(decodeImage(jpeg.subarray(0, Math.floor(jpeg.length / 2))), 422, 'damaged_image');
  });

  it('rejects a text file named .png with 415', async () => {
    const e = await rejection(decodeImage(Buffer.from('hello, I am not an image.png\n')), 415, 'unsupported_media_type');
    expect(e.message).toMatch(/JPEG, PNG/);
  });

  it('rejects an empty upload with 400', async () => {
    await rejection(decodeImage(new Uint8Array(0)), 400, 'bad_request');
  });

  it('rejects a 1x1 image with 422 unusable_image and says why', async () => {
    const e = await rejection(decodeImage(makePng({ width: 1, height: 1, channels: 1, bitDepth: 8, samples: [9] })), 422, 'unusable_image');
    expect(e.message).toMatch(/1x1/);
  });

  it('rejects a header claiming 100000x100000 pixels without allocating it', async () => {
    const png = makePng({
      width: 4,
      height: 4,
      channels: 1,
      bitDepth: 8,
      samples: ramp(16, () => 1),
      headerSize: { width: 100000, height: 100000 },
    });
    const before = process.memoryUsage().rss;
    const t0 = performance.now();
    const e = await rejection(decodeImage(png), 422, 'unusable_image');
    expect(e.message).toMatch(/too many pixels/);
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(process.memoryUsage().rss - before).toBeLessThan(200 * 2 ** 20); // 10 GP would be >= 10 GB
  });
});

describe('decodeImage: DICOM', () => {
  const px = ramp(16 * 16, (i) => [0, 50, 100, 200][i % 4]);

  it('decodes explicit VR LE 8-bit MONOCHROME2 with min-max scaling, no patient data', async () => {
    const d = await decodeImage(grayDicom(16, 16, px));
    expect(d.format).toBe('dicom');
    expect(d.image).toMatchObject({ width: 16, height: 16, channels: 1 });
    expect(Array.from(d.image.data.subarray(0, 4))).toEqual([0, 63.75, 127.5, 255]);
    expect(JSON.stringify(d.notes)).not.toMatch(/DOE|JANE|12345/);
  });

  it('decodes implicit VR LE identically', async () => {
    const a = await decodeImage(grayDicom(16, 16, px, { transferSyntax: TS.implicitLE }));
    const b = await decodeImage(grayDicom(16, 16, px));
    expect(Array.from(a.image.data)).toEqual(Array.from(b.image.data));
  });

  it('decodes a raw data set without the Part-10 preamble', async () => {
    const a = await decodeImage(grayDicom(16, 16, px, { raw: true, transferSyntax: TS.implicitLE }));
    expect(a.format).toBe('dicom');
    expect(Array.from(a.image.data.subarray(0, 4))).toEqual([0, 63.75, 127.5, 255]);
  });

  it('inverts MONOCHROME1', async () => {
    const d = await decodeImage(grayDicom(16, 16, px, { photometric: 'MONOCHROME1' }));
    expect(Array.from(d.image.data.subarray(0, 4))).toEqual([255, 191.25, 127.5, 0]);
    expect(d.notes.join(' ')).toMatch(/MONOCHROME1/);
  });

  it('applies 16-bit rescale slope/intercept then the VOI window (LINEAR)', async () => {
    // stored [312, 512, 712, 1000] -> HU [-400, 0, 400, 976]; window c=0 w=400
    const stored = ramp(16 * 16, (i) => [312, 512, 712, 1000][i % 4]);
    const d = await decodeImage(grayDicom(16, 16, stored, { bits: 16, slope: 2, intercept: -1024, window: { center: 0, width: 400 } }));
    const [a, b, c, e] = d.image.data;
    expect(a).toBe(0);
    expect(b).toBeCloseTo((0.5 / 399 + 0.5) * 255, 4);
    expect(c).toBe(255);
    expect(e).toBe(255);
  });

  it('reads signed 16-bit and masks bits above BitsStored (12-bit)', async () => {
    const signed = ramp(16 * 16, (i) => [-100 & 0xffff, 0, 100][i % 3]);
    const s = await decodeImage(grayDicom(16, 16, signed, { bits: 16, signed: true }));
    expect(Array.from(s.image.data.subarray(0, 3))).toEqual([0, 127.5, 255]);
    const twelve = ramp(16 * 16, (i) => [0x8000 | 0, 0xf000 | 4095, 2048][i % 3]); // junk in bits 12..15
    const t = await decodeImage(grayDicom(16, 16, twelve, { bits: 16, bitsStored: 12 }));
    expect(t.image.data[0]).toBe(0);
    expect(t.image.data[1]).toBe(255);
    expect(t.image.data[2]).toBeCloseTo((2048 / 4095) * 255, 4);
  });

  it('takes the first frame of a multi-frame object', async () => {
    const frames = [...ramp(256, () => 10), ...ramp(256, (i) => (i % 2 ? 200 : 0))];
    const d = await decodeImage(grayDicom(16, 16, frames, { frames: 2, window: { center: 127.5, width: 256 } }));
    expect(new Set(d.image.data).size).toBe(1);
    expect(d.notes.join(' ')).toMatch(/first frame/);
  });

  it('decodes RGB, interleaved and planar', async () => {
    const rgb = ramp(16 * 16 * 3, (i) => [255, 128, 0][i % 3]);
    for (const planar of [false, true]) {
      const d = await decodeImage(rgbDicom(16, 16, rgb, planar));
      expect(d.image.channels).toBe(3);
      expect(Array.from(d.image.data.subarray(0, 6))).toEqual([255, 128, 0, 255, 128, 0]);
    }
  });

  it('rejects video and other unsupported compressed transfer syntaxes with 415 naming the syntax and UID', async () => {
    for (const [uid, name] of [
      ['1.2.840.10008.1.2.4.100', 'MPEG2'],
      ['1.2.840.10008.1.2.4.102', 'H.264'],
      ['1.2.840.10008.1.2.4.110', 'JPEG XL'],
    ]) {
      const e = await rejection(decodeImage(grayDicom(16, 16, px, { transferSyntax: uid })), 415, 'unsupported_media_type');
      expect(e.message).toContain(name);
      expect(e.message).toContain(uid);
      expect(e.message).not.toMatch(/DOE|JANE/);
    }
  });

  it('a compressed syntax whose pixel data is not a valid stream of that syntax is 422, naming no patient data', async () => {
    for (const uid of [TS.jpegBaseline, TS.jpeg2000, TS.rle]) {
      const e = await rejection(decodeImage(grayDicom(16, 16, px, { transferSyntax: uid })), 422, 'undecodable_image');
      expect(e.message).not.toMatch(/DOE|JANE/);
    }
  });

  it('rejects truncated pixel data with 422', async () => {
    const full = grayDicom(16, 16, px);
    await rejection(decodeImage(full.subarray(0, full.length - 40)), 422, 'damaged_image');
  });

  it('rejects a DICOM too small to analyse', async () => {
    await rejection(
      decodeImage(
        grayDicom(
          4,
          4,
          ramp(16, (i) => i),
        ),
      ),
      422,
      'unusable_image',
    );
  });

  it('rejects a DICOM whose Rows x Columns exceed the pixel limit', async () => {
    const e = await rejection(decodeImage(grayDicom(16, 16, px), { maxPixels: 100 }), 422, 'unusable_image');
    expect(e.message).toMatch(/too many pixels/);
  });

  it('never puts patient tags into errors', async () => {
    const broken = makeDicom({ transferSyntax: TS.explicitLE, elements: [{ tag: [0x0010, 0x0010], vr: 'PN', value: 'DOE^JANE' }] });
    const e = await rejection(decodeImage(broken), 422, 'undecodable_image');
    expect(e.message).not.toMatch(/DOE|JANE/);
  });
});
