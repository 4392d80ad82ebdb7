/**
 * Issue 19 item 4: a VOI that misses the pixels. A 16-bit DX whose Window Center/Width (2725/5310)
 * lies above every stored value decoded to a flat black image and was refused as a "document or
 * screenshot"; now the window is not used, min-max is (the rule for files without VOI), with a
 * warning. A window that shows the film is still applied.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { rmSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { decodeImage } from '../../src/image/decode.ts';
import { DICOM_WARNING } from '../../src/image/dicom-scope.ts';
import { checkImage } from '../../src/gate/image-checks.ts';
import { Engine } from '../../src/pipeline.ts';
import { makeDicom, pixelTags, sequence, TS, type DicomElement } from '../fixtures/make-dicom.ts';
import { writeTinyModel } from '../fixtures/make-onnx.ts';
import { GOLDEN } from '../fixtures/paths.ts';

/** A 16-bit DX of a real chest X-ray whose stored values are the 8-bit film / 4 (0..63). */
async function dimDx(extra: DicomElement[]): Promise<{ file: Buffer; stored: Uint16Array; width: number; height: number }> {
  const { data, info } = await sharp(readFileSync(join(GOLDEN, 'pneumonia_gray_224.png')))
    .toColourspace('b-w')
    .raw()
    .toBuffer({ resolveWithObject: true });
  const stored = new Uint16Array(info.width * info.height);
  for (let i = 0; i < stored.length; i++) stored[i] = data[i * info.channels] >> 2;
  const px = Buffer.alloc(stored.length * 2);
  stored.forEach((v, i) => px.writeUInt16LE(v, i * 2));
  const file = makeDicom({
    transferSyntax: TS.explicitLE,
    elements: [
      { tag: [0x0008, 0x0060], vr: 'CS', value: 'DX' },
      ...pixelTags({ width: info.width, height: info.height, allocated: 16, stored: 12 }),
      ...extra,
      { tag: [0x7fe0, 0x0010], vr: 'OW', value: px },
    ],
  });
  return { file, stored, width: info.width, height: info.height };
}

const window = (center: string, width: string): DicomElement[] => [
  { tag: [0x0028, 0x1050], vr: 'DS', value: center },
  { tag: [0x0028, 0x1051], vr: 'DS', value: width },
];

const std = (a: Float32Array) => {
  const m = a.reduce((s, v) => s + v, 0) / a.length;
  return Math.sqrt(a.reduce((s, v) => s + (v - m) ** 2, 0) / a.length);
};

describe('a VOI window that misses the stored values (issue 19 item 4)', () => {
  it('falls back to min-max with a warning instead of decoding a blank', async () => {
    const { file, stored } = await dimDx(window('2725', '5310'));
    const d = await decodeImage(file);
    const lo = Math.min(...stored);
    const hi = Math.max(...stored);
    // Exactly the min-max rule of the contract.
    for (const i of [0, 1000, 20000, stored.length - 1]) expect(d.image.data[i]).toBeCloseTo(((stored[i] - lo) / (hi - lo)) * 255, 3);
    expect(std(d.image.data)).toBeGreaterThan(20);
    const warning = d.notes.find((n) => n.startsWith(DICOM_WARNING));
    expect(warning).toMatch(/Window Center\/Width of the file maps 100% of the pixels to pure black or white/);
    expect(warning).toMatch(/min-max/);
    expect(d.notes).not.toContain('DICOM VOI window applied (LINEAR)');
    // The image checks see the film, not a blank "document".
    expect(checkImage(d.image).failures).toEqual([]);
  });

  it('the pipeline analyses it and carries the warning (tiny model)', async () => {
    const { cardPath, dir } = writeTinyModel({ size: 32, channels: 4, stride: 4 });
    const engine = await Engine.load({ card: cardPath, threads: 1 });
    try {
      const { file } = await dimDx(window('2725', '5310'));
      const r = await engine.analyse(file, { cam: false });
      expect(r.gate.checks.failures).toEqual([]);
      expect(r.warnings.some((w) => /maps 100% of the pixels to pure black or white/.test(w))).toBe(true);
    } finally {
      await engine.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a window that shows the film is applied as before; so is one that clips part of it', async () => {
    const fits = await decodeImage((await dimDx(window('32', '64'))).file);
    expect(fits.notes).toContain('DICOM VOI window applied (LINEAR)');
    expect(fits.notes.some((n) => n.startsWith(DICOM_WARNING))).toBe(false);
    // Clipping the darker half of the values still leaves the film: the window is kept.
    const clips = await decodeImage((await dimDx(window('48', '32'))).file);
    expect(clips.notes).toContain('DICOM VOI window applied (LINEAR)');
  });

  it('a VOI LUT that covers none of the stored values falls back too', async () => {
    const table = Array.from({ length: 16 }, (_, i) => i * 4096);
    const data = Buffer.alloc(table.length * 2);
    table.forEach((v, i) => data.writeUInt16LE(Math.min(v, 65535), i * 2));
    const lut: DicomElement = {
      tag: [0x0028, 0x3010],
      vr: 'SQ',
      value: sequence([
        [
          { tag: [0x0028, 0x3002], vr: 'US', value: [table.length, 3000, 16] },
          { tag: [0x0028, 0x3006], vr: 'OW', value: data },
        ],
      ]),
    };
    const d = await decodeImage((await dimDx([lut])).file);
    expect(d.notes.find((n) => n.startsWith(DICOM_WARNING))).toMatch(/the VOI LUT of the file maps 100% of the pixels/);
    expect(std(d.image.data)).toBeGreaterThan(20);
  });
});
