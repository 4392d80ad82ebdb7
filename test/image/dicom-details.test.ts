/**
 * The details real DICOM files carry (issue 9 part 2): Presentation LUT Shape INVERSE, window
 * presets, the VOI LUT Sequence, Pixel Padding Value, and the scope tags (Modality, View Position,
 * Body Part Examined). MONOCHROME1, rescale, signed pixels, junk high bits and multi-frame are in
 * engine-decode.test.ts. The rules are written in docs/model-contract.md.
 */
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { PneumoError } from '../../src/errors.ts';
import { decodeImage } from '../../src/image/decode.ts';
import { DICOM_WARNING } from '../../src/image/dicom-scope.ts';
import { RADIOGRAPH_SOP_CLASS, RADIOGRAPH_SOP_CLASSES } from '../../src/image/dicom-scope.ts';
import { TAG } from '../../src/image/dicom-tags.ts';
import { makeDicom, pixelTags, sequence, TS, type DicomElement } from '../fixtures/make-dicom.ts';

const W = 16;
const H = 16;
/** Stored values 0..255 as a ramp. */
const ramp = Array.from({ length: W * H }, (_, i) => i % 256);

function dicom(extra: DicomElement[], o: { bits?: 8 | 16; pixels?: number[]; photometric?: string } = {}): Buffer {
  const bits = o.bits ?? 8;
  const pixels = o.pixels ?? ramp;
  const data = Buffer.alloc(W * H * (bits / 8));
  pixels.forEach((v, i) => (bits === 8 ? (data[i] = v) : data.writeUInt16LE(v, i * 2)));
  return makeDicom({
    transferSyntax: TS.explicitLE,
    elements: [
      ...pixelTags({ width: W, height: H, allocated: bits, photometric: o.photometric }),
      ...extra,
      { tag: [0x7fe0, 0x0010], vr: bits === 8 ? 'OB' : 'OW', value: data },
    ],
  });
}

const inverse: DicomElement = { tag: [0x2050, 0x0020], vr: 'CS', value: 'INVERSE' };

describe('presentation: inversion', () => {
  it('Presentation LUT Shape INVERSE inverts MONOCHROME2, and undoes the inversion of MONOCHROME1', async () => {
    const plain = (await decodeImage(dicom([]))).image.data;
    const inv = await decodeImage(dicom([inverse]));
    expect(Array.from(inv.image.data)).toEqual(Array.from(plain).map((v) => 255 - v));
    expect(inv.notes).toContain('DICOM Presentation LUT Shape INVERSE applied');
    const mono1 = (await decodeImage(dicom([], { photometric: 'MONOCHROME1' }))).image.data;
    expect(Array.from(mono1)).toEqual(Array.from(plain).map((v) => 255 - v));
    expect((await decodeImage(dicom([inverse], { photometric: 'MONOCHROME1' }))).image.data).toEqual(plain);
  });
});

describe('VOI: first window preset, else the first VOI LUT, else min-max', () => {
  const lutItem = (first: number, table: number[], bits = 8): DicomElement[] => {
    const data = Buffer.alloc(table.length * 2);
    table.forEach((v, i) => data.writeUInt16LE(v, i * 2));
    return [
      { tag: [0x0028, 0x3002], vr: 'US', value: [table.length, first, bits] },
      { tag: [0x0028, 0x3006], vr: 'OW', value: data },
    ];
  };
  const voiLut = (first: number, table: number[]): DicomElement => ({
    tag: [0x0028, 0x3010],
    vr: 'SQ',
    value: sequence([lutItem(first, table)]),
  });

  it('takes the first of several window presets', async () => {
    const d = await decodeImage(
      dicom([
        { tag: [0x0028, 0x1050], vr: 'DS', value: '64\\128' },
        { tag: [0x0028, 0x1051], vr: 'DS', value: '128\\256' },
      ]),
    );
    expect(d.image.data[0]).toBe(0); // 0 is below 64 - 64
    expect(d.image.data[200]).toBe(255); // 200 is above 64 + 64
    expect(d.notes.join(' ')).toContain('first of 2 presets');
  });

  it('applies the first VOI LUT of the sequence when there is no window', async () => {
    const table = Array.from({ length: 256 }, (_, i) => 255 - i); // an inverting LUT, 8-bit output
    const d = await decodeImage(dicom([voiLut(0, table)]));
    expect(d.image.data[0]).toBe(255);
    expect(d.image.data[255]).toBe(0);
    expect(d.notes).toContain('DICOM VOI LUT applied (first of the VOI LUT Sequence)');
    // Values outside the LUT's range take its first or last entry.
    const shifted = await decodeImage(
      dicom([
        voiLut(
          100,
          Array.from({ length: 10 }, (_, i) => i * 28),
        ),
      ]),
    );
    expect([shifted.image.data[0], shifted.image.data[105], shifted.image.data[200]]).toEqual([0, 140, 252]);
  });

  it('prefers the window when both a window and a VOI LUT are present', async () => {
    const d = await decodeImage(
      dicom([
        { tag: [0x0028, 0x1050], vr: 'DS', value: '128' },
        { tag: [0x0028, 0x1051], vr: 'DS', value: '256' },
        voiLut(
          0,
          Array.from({ length: 256 }, (_, i) => 255 - i),
        ),
      ]),
    );
    expect(d.image.data[0]).toBe(0);
    expect(d.notes.join(' ')).toContain('VOI window applied');
  });
});

describe('Pixel Padding Value', () => {
  it('padding pixels are black and left out of the min-max', async () => {
    // A 12-bit image in a padded frame of 4095 (a MONOCHROME1 device's "white" border).
    const pixels = Array.from({ length: W * H }, (_, i) => (i % W < 4 ? 4095 : 1000 + (i % W) * 10));
    const padValue: DicomElement = { tag: [0x0028, 0x0120], vr: 'US', value: [4095] };
    const d = await decodeImage(dicom([padValue], { bits: 16, pixels }));
    expect(d.image.data[0]).toBe(0); // padding
    expect(d.image.data[4]).toBe(0); // the darkest real pixel (1040)
    expect(d.image.data[15]).toBe(255); // the brightest real pixel (1150)
    expect(d.notes).toContain('DICOM Pixel Padding Value pixels set to black');
    // Without the tag the padding would be the maximum and squash the image.
    expect((await decodeImage(dicom([], { bits: 16, pixels }))).image.data[15]).toBeLessThan(10);
  });
});

describe('scope: Modality refuses, View Position and Body Part warn', () => {
  const cs = (tag: [number, number], value: string): DicomElement => ({ tag, vr: 'CS', value });
  const modality = (m: string) => cs([0x0008, 0x0060], m);

  it('CT, MR, US, MG and other non-radiograph modalities are 422 outside_intended_use before decoding', async () => {
    for (const m of ['CT', 'MR', 'US', 'MG', 'NM', 'XA']) {
      const e = await decodeImage(dicom([modality(m)])).catch((x: unknown) => x);
      expect(e, m).toBeInstanceOf(PneumoError);
      expect([(e as PneumoError).status, (e as PneumoError).code]).toEqual([422, 'outside_intended_use']);
      expect((e as PneumoError).message).toContain(m);
    }
  });

  it('CR, DX, DR and RG pass silently; OT and SC pass with a warning', async () => {
    for (const m of ['CR', 'DX', 'DR', 'RG', 'cr']) {
      expect(
        (await decodeImage(dicom([modality(m), cs([0x0018, 0x0015], 'CHEST'), cs([0x0018, 0x5101], 'PA')]))).notes.join(' '),
      ).not.toContain(DICOM_WARNING);
    }
    for (const m of ['OT', 'SC']) {
      expect((await decodeImage(dicom([modality(m)]))).notes.join(' ')).toContain(`${DICOM_WARNING}Modality ${m}`);
    }
  });

  it('the SOP Class UID: a radiograph class makes an OT image or one without Modality a radiograph; another class without Modality warns', async () => {
    const sopClass = (uid: string): DicomElement => ({ tag: [0x0008, 0x0016], vr: 'UI', value: uid });
    const notes = async (els: DicomElement[]) => (await decodeImage(dicom(els))).notes.join(' ');
    for (const uid of RADIOGRAPH_SOP_CLASSES.keys()) {
      expect(await notes([sopClass(uid)]), uid).not.toContain(DICOM_WARNING);
      expect(await notes([modality('OT'), sopClass(uid)]), uid).not.toContain(DICOM_WARNING);
    }
    const secondaryCapture = '1.2.840.10008.5.1.4.1.1.7';
    expect(await notes([sopClass(secondaryCapture)])).toContain(
      `${DICOM_WARNING}no Modality, and the SOP Class UID ${secondaryCapture} is not a radiograph's`,
    );
    expect(await notes([modality('OT'), sopClass(secondaryCapture)])).toContain(`${DICOM_WARNING}Modality OT`);
    // A non-radiograph Modality is refused whatever the SOP class says.
    const e = await decodeImage(dicom([modality('CT'), sopClass(RADIOGRAPH_SOP_CLASS.computedRadiography)])).catch((x: unknown) => x);
    expect((e as PneumoError).code).toBe('outside_intended_use');
  });

  it('a lateral View Position or a non-chest Body Part Examined is a warning', async () => {
    const lateral = await decodeImage(dicom([modality('DX'), cs([0x0018, 0x5101], 'LL')]));
    expect(lateral.notes.join(' ')).toContain(`${DICOM_WARNING}View Position LL is a lateral view`);
    const hand = await decodeImage(dicom([modality('DX'), cs([0x0018, 0x0015], 'HAND')]));
    expect(hand.notes.join(' ')).toContain(`${DICOM_WARNING}Body Part Examined is HAND`);
    for (const part of ['CHEST', 'THORAX', 'PORT CHEST', 'LUNG']) {
      expect((await decodeImage(dicom([cs([0x0018, 0x0015], part)]))).notes.join(' ')).not.toContain(DICOM_WARNING);
    }
  });
});

describe('one vocabulary: the tags read by keyword', () => {
  it("every keyword the decoder reads names the tag dcmjs's dictionary gives it (the names src/pacs writes)", () => {
    const dcmjs = createRequire(import.meta.url)('dcmjs') as {
      data: { DicomMetaDictionary: { nameMap: Record<string, { tag: string }> } };
    };
    const { nameMap } = dcmjs.data.DicomMetaDictionary;
    for (const [keyword, tag] of Object.entries(TAG)) {
      expect(nameMap[keyword]?.tag, keyword).toBe(`(${tag.slice(1, 5).toUpperCase()},${tag.slice(5).toUpperCase()})`);
    }
  });
});
