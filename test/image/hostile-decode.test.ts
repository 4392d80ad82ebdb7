/**
 * Hostile inputs at the decoder (issue 10): small files that declare or inflate to huge images.
 * Everything is generated in memory, small (a few MB at most) and fast; memory is asserted with the
 * process's RSS high-water mark, which would jump by gigabytes if a bomb were inflated or decoded.
 */
import { describe, expect, it } from 'vitest';
import { PneumoError } from '../../src/errors.ts';
import { decodeImage } from '../../src/image/decode.ts';
import { deflateBombDicom, deflatedDicom, pixelTags, type DicomElement } from '../fixtures/make-dicom.ts';
import { grayDicom } from '../fixtures/make-dicom.ts';
import { zeroPng } from '../fixtures/zero-png.ts';
import { testTmp } from '../fixtures/paths.ts';

const MB = 1024 * 1024;
const maxRssMb = () => process.resourceUsage().maxRSS / 1024;

async function rejection(p: Promise<unknown>): Promise<PneumoError> {
  const e = await p.then(
    () => null,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(PneumoError);
  return e as PneumoError;
}

/** Runs fn and reports the largest event-loop stall seen meanwhile (5 ms ticks). */
async function withLoopLag<T>(fn: () => Promise<T>): Promise<{ value: T; lagMs: number; ms: number }> {
  let lag = 0;
  let last = performance.now();
  const tick = setInterval(() => {
    const now = performance.now();
    lag = Math.max(lag, now - last - 5);
    last = now;
  }, 5);
  const t0 = performance.now();
  try {
    const value = await fn();
    return { value, lagMs: lag, ms: performance.now() - t0 };
  } finally {
    clearInterval(tick);
  }
}

describe('deflated DICOM bombs', () => {
  it('a 2 MB file declaring a 32768x32768 16-bit image (2 GB of zeros) is refused with 413, without inflating it', async () => {
    const bomb = deflateBombDicom({ rows: 32768, cols: 32768, zerosMb: 2048 });
    expect(bomb.length).toBeLessThan(3 * MB);
    const before = maxRssMb();
    const { value: e, ms, lagMs } = await withLoopLag(() => rejection(decodeImage(bomb)));
    expect(e.status).toBe(413);
    expect(e.code).toBe('payload_too_large');
    expect(e.message).toMatch(/2048 MB.*limit of 128 MB/);
    expect(maxRssMb() - before).toBeLessThan(150);
    expect(ms).toBeLessThan(2000);
    expect(lagMs).toBeLessThan(250);
  });

  it('2 GB of zeros behind a small declared image: inflation stops after the first frame', async () => {
    const bomb = deflateBombDicom({ rows: 512, cols: 512, zerosMb: 2048 });
    const before = maxRssMb();
    const d = await decodeImage(bomb);
    expect(d.image).toMatchObject({ width: 512, height: 512, channels: 1 });
    expect(maxRssMb() - before).toBeLessThan(150);
  });

  it('zeros hidden in a large element before the image stop at the budget with 413 (budget lowered to 8 MB)', async () => {
    const bomb = deflateBombDicom({ rows: 64, cols: 64, zerosMb: 256, where: 'private' });
    const before = maxRssMb();
    const e = await rejection(decodeImage(bomb, { maxDecodedBytes: 8 * MB }));
    expect(e.status).toBe(413);
    expect(e.message).toMatch(/inflates to more than 9 MB/);
    expect(maxRssMb() - before).toBeLessThan(100);
  });

  it('an ordinary deflated DICOM still decodes, multi-frame keeping only the first frame', async () => {
    const frame = (v: number) => Array.from({ length: 32 * 32 }, (_, i) => (i % 32) * 4 + v);
    const one = grayDicom(32, 32, frame(0));
    const els: DicomElement[] = [
      ...pixelTags({ width: 32, height: 32, frames: 3, signed: null }),
      { tag: [0x7fe0, 0x0010], vr: 'OB', value: Uint8Array.from([...frame(0), ...frame(1), ...frame(2)]) },
    ];
    const d = await decodeImage(deflatedDicom(els));
    const ref = await decodeImage(one);
    expect(d.image).toMatchObject({ width: 32, height: 32, channels: 1 });
    expect(Array.from(d.image.data)).toEqual(Array.from(ref.image.data));
    expect(d.notes.join(' ')).toMatch(/3 frames/);
  });

  it('a corrupt deflate stream is 422, not a crash', async () => {
    const good = deflatedDicom([{ tag: [0x0028, 0x0010], vr: 'US', value: [32] }]);
    const bad = Buffer.concat([good.subarray(0, good.length - 8), Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])]);
    const e = await rejection(decodeImage(bad));
    expect([422, 415]).toContain(e.status);
  });

  it('RescaleSlope 1e308 is 422 unusable_image, not an internal error', async () => {
    const dcm = grayDicom(16, 16, [0, 100, 200, 300], { bits: 16, slope: 1e308 });
    const e = await rejection(decodeImage(dcm));
    expect(e.status).toBe(422);
    expect(e.code).toBe('unusable_image');
  });
});

describe('small files, huge decodes', () => {
  it('a ~400 KB 7000x7000 16-bit RGBA PNG is refused with 413 from its header, in milliseconds', async () => {
    const png = zeroPng(7000, 7000, 6, 16);
    expect(png.length).toBeLessThan(600 * 1024);
    const before = maxRssMb();
    const { value: e, ms, lagMs } = await withLoopLag(() => rejection(decodeImage(png)));
    expect(e.status).toBe(413);
    expect(e.message).toMatch(/373.8 MB.*limit of 128 MB/);
    expect(maxRssMb() - before).toBeLessThan(100);
    expect(ms).toBeLessThan(1000);
    expect(lagMs).toBeLessThan(200);
  });

  it('the byte budget counts channels and bit depth: the same pixels in 8-bit gray pass', async () => {
    const gray = zeroPng(1000, 1000, 0, 8); // 1 MB decoded
    const rgba16 = zeroPng(1000, 1000, 6, 16); // 8 MB decoded
    const limits = { maxDecodedBytes: 4 * MB };
    expect((await decodeImage(gray, limits)).image.width).toBe(1000);
    expect((await rejection(decodeImage(rgba16, limits))).status).toBe(413);
  });
});

describe('damaged files', () => {
  it('a PNG with a bad chunk CRC is refused with 422 (decided: damaged images are not analysed)', async () => {
    const good = zeroPng(64, 64, 0, 8);
    expect((await decodeImage(good)).image.width).toBe(64);
    const badIend = Buffer.from(good);
    badIend[badIend.length - 1] ^= 0xff; // the IEND CRC: libpng alone accepts this file
    const e = await rejection(decodeImage(badIend));
    expect(e.status).toBe(422);
    expect(e.code).toBe('damaged_image');
    expect(e.message).toMatch(/IEND/);
    const badIdat = Buffer.from(good);
    badIdat[badIdat.length - 12 - 1] ^= 0xff; // last byte of the IDAT CRC (IEND is the final 12 bytes)
    expect((await rejection(decodeImage(badIdat))).message).toMatch(/IDAT/);
  });
});

describe('CLI input size', () => {
  it('a file over the CLI limit is reported as payload_too_large without being read', async () => {
    const { analyseFiles } = await import('../../src/cli/batch.ts');
    const { mkdtemp, writeFile, rm } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const dir = await mkdtemp(join(testTmp(), 'pneumolens-'));
    try {
      await writeFile(join(dir, 'big.png'), Buffer.alloc(2 * MB));
      // The engine reads each file through its source function (the size check is in that function).
      const engine = {
        async *analyseStream(sources: Array<() => Promise<Uint8Array>>) {
          yield await Promise.all(
            sources.map((s) =>
              s().then(
                () => ({ status: 'analysed' }),
                (error: Error) => ({ status: 'failed', error }),
              ),
            ),
          );
        },
      } as unknown as Parameters<typeof analyseFiles>[0];
      const outcomes = [];
      for await (const batch of analyseFiles(engine, ['big.png'], dir, {}, 8, MB)) outcomes.push(...batch);
      expect(outcomes[0].error).toEqual({ code: 'payload_too_large', message: expect.stringMatching(/2 MB.*limit of 1 MB/) });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
