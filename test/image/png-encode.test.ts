/**
 * The engine's PNG encoder (src/image/png-encode.ts): every layout round-trips exactly through an
 * independent decoder (sharp/libvips), indexed colour gives palette[index], bad arguments throw.
 */
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { colormapLut } from '../../src/explain/colormaps.ts';
import { decodeImage } from '../../src/image/decode.ts';
import { encodePngFast, encodePngIndexed, upFiltered } from '../../src/image/png-encode.ts';
import { prng } from '../fixtures/make-onnx.ts';

const decode = async (png: Buffer) => {
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data), width: info.width, height: info.height, channels: info.channels };
};
/** The engine's decoder keeps gray (and gray + alpha) as such. */
const decodeKeepingGray = async (png: Buffer) => {
  const { image } = await decodeImage(png);
  return { data: Uint8Array.from(image.data), width: image.width, height: image.height, channels: image.channels };
};

/** Noise over a gradient: every byte value occurs, Up residuals wrap around 256 both ways. */
function pixels(n: number, seed: number): Uint8Array {
  const r = prng(seed);
  return Uint8Array.from({ length: n }, (_, i) => (i * 7 + Math.floor((r() + 1) * 128)) & 255);
}

describe('encodePngFast', () => {
  it.each([1, 2, 3, 4] as const)('%i channel(s): lossless round trip', async (channels) => {
    const [w, h] = [37, 23];
    const px = pixels(w * h * channels, channels);
    const png = await encodePngFast(px, w, h, channels);
    expect(png.subarray(1, 4).toString('latin1')).toBe('PNG');
    const back = await decodeKeepingGray(png);
    expect([back.width, back.height, back.channels]).toEqual([w, h, channels]);
    expect((await sharp(png).metadata()).channels).toBe(channels);
    expect(Buffer.from(back.data).equals(Buffer.from(px))).toBe(true);
  });

  it('one row and one column', async () => {
    for (const [w, h] of [
      [1, 1],
      [50, 1],
      [1, 50],
    ]) {
      const px = pixels(w * h * 3, w + h);
      expect(Buffer.from((await decode(await encodePngFast(px, w, h, 3))).data).equals(Buffer.from(px))).toBe(true);
    }
  });

  it('the Up filter: row 0 as is, then the difference to the row above mod 256', () => {
    const f = upFiltered(Uint8Array.from([10, 200, 5, 250]), 2, 2, 1);
    expect(Array.from(f)).toEqual([0, 10, 200, 2, (5 - 10) & 255, (250 - 200) & 255]);
  });

  it('refuses a wrong length, size or channel count', async () => {
    await expect(encodePngFast(new Uint8Array(11), 2, 2, 3)).rejects.toThrow(/expected 12 values/);
    await expect(encodePngFast(new Uint8Array(0), 0, 2, 3)).rejects.toThrow(/bad size/);
    await expect(encodePngFast(new Uint8Array(10), 2, 1, 5 as never)).rejects.toThrow(/channels/);
  });
});

describe('encodePngIndexed', () => {
  it('decodes to palette[index] (the colour map of the heatmap)', async () => {
    const [w, h] = [64, 40];
    const index = pixels(w * h, 9);
    const lut = colormapLut('viridis');
    const back = await decode(await encodePngIndexed(index, w, h, lut));
    expect([back.width, back.height, back.channels]).toEqual([w, h, 3]);
    const want = new Uint8Array(w * h * 3);
    index.forEach((k, p) => want.set(lut.subarray(k * 3, k * 3 + 3), p * 3));
    expect(Buffer.from(back.data).equals(Buffer.from(want))).toBe(true);
  });

  it('refuses an index outside a short palette and a malformed palette', async () => {
    const palette = Uint8Array.from([0, 0, 0, 255, 255, 255]);
    await expect(encodePngIndexed(Uint8Array.from([0, 1, 2, 1]), 2, 2, palette)).rejects.toThrow(/index 2 outside the palette of 2/);
    await expect(encodePngIndexed(new Uint8Array(4), 2, 2, new Uint8Array(5))).rejects.toThrow(/RGB triples/);
    await expect(encodePngIndexed(new Uint8Array(3), 2, 2, palette)).rejects.toThrow(/expected 4 indices/);
  });
});
