/**
 * Every common transfer syntax, made at test time from a real X-ray with dcmtk and GDCM (the tools
 * PACS software is built on): lossless syntaxes must give exactly the pixels of the uncompressed
 * original, lossy ones stay above a stated PSNR. Skipped loudly where the tools are missing.
 */
import { describe, expect, it } from 'vitest';
import { decodeImage } from '../../src/image/decode.ts';
import { metaTransferSyntax, skipWithoutDicomTools, SYNTAXES, transcode, xrayDicom, type SyntaxName } from '../fixtures/dicom-tools.ts';

const skip = skipWithoutDicomTools('DICOM transfer syntax tests');

/** PSNR in dB of two images in 0..255. */
function psnr(a: Float32Array, b: Float32Array): number {
  let se = 0;
  for (let i = 0; i < a.length; i++) se += (a[i] - b[i]) ** 2;
  return se === 0 ? Infinity : 10 * Math.log10((255 * 255) / (se / a.length));
}

/** Lossy syntaxes: the least PSNR accepted (dB, on the decoded 0..255 image vs the uncompressed original). */
const MIN_PSNR: Partial<Record<SyntaxName, number>> = { jpegBaseline: 35, jpegExtended: 35, jpegLsNear: 40, j2kLossy: 35 };

describe.skipIf(skip)('compressed and alternative transfer syntaxes decode', () => {
  for (const bits of [8, 12, 16] as const) {
    it(`${bits}-bit X-ray: every syntax the tools write`, async () => {
      const { file } = await xrayDicom({ bits });
      const original = await decodeImage(file);
      for (const [name, spec] of Object.entries(SYNTAXES) as [SyntaxName, (typeof SYNTAXES)[SyntaxName]][]) {
        if (!(spec.bits as readonly number[]).includes(bits)) continue;
        const converted = transcode(file, name);
        expect(metaTransferSyntax(converted), name).toBe(spec.uid);
        const d = await decodeImage(converted);
        expect([d.image.width, d.image.height, d.image.channels], name).toEqual([200, 240, 1]);
        if (spec.lossless) expect(d.image.data, `${name} ${bits}-bit is lossless`).toEqual(original.image.data);
        else expect(psnr(d.image.data, original.image.data), `${name} ${bits}-bit PSNR`).toBeGreaterThan(MIN_PSNR[name]!);
      }
    });
  }
});

describe('HTJ2K (1.2.840.10008.1.2.4.201), made with the dcmjs-codecs encoder: no Debian tool writes it', () => {
  it('decodes losslessly, 12-bit', async () => {
    const { createRequire } = await import('node:module');
    const { NativeCodecs, Transcoder, constants } = createRequire(import.meta.url)('dcmjs-codecs');
    await NativeCodecs.initializeAsync();
    const { file } = await xrayDicom({ bits: 12 });
    const t = new Transcoder(file.buffer.slice(file.byteOffset, file.byteOffset + file.length));
    t.transcode(constants.TransferSyntax.HtJpeg2000Lossless);
    const htj2k = Buffer.from(t.getDicomPart10());
    expect(metaTransferSyntax(htj2k)).toBe('1.2.840.10008.1.2.4.201');
    expect((await decodeImage(htj2k)).image.data).toEqual((await decodeImage(file)).image.data);
  });
});
