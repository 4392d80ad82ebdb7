/** The HTTP API with the shipped model (fails, does not skip, when the model is missing). */
import { describe, expect, it } from 'vitest';
import sharp from 'sharp';
import { grayDicom } from '../fixtures/make-dicom.ts';
import { chestPng } from '../fixtures/server-helpers.ts';
import { useApp } from '../fixtures/app.ts';

const t = useApp();
const { predict } = t;

describe('with the shipped model', () => {
  it('health and model card name the loaded model', async () => {
    const health = await t.app.inject('/api/health');
    expect(health.statusCode).toBe(200);
    expect(health.json().model).toEqual({ name: t.engine.card.name, version: t.engine.card.version });
    const card = (await t.app.inject('/api/model')).json();
    expect(card.name).toBe(t.engine.card.name);
    expect(card.labels).toEqual(t.engine.card.labels);
    expect(card.postprocessing.threshold).toBe(t.engine.card.postprocessing.threshold);
    expect(JSON.stringify(card)).not.toContain(t.engine.card.modelPath);
  });

  it('200: a calibrated probability, the card threshold, and a Grad-CAM overlay of the image size', async () => {
    const image = chestPng(320, 360, { opacity: true });
    const res = await predict(image);
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(t.engine.card.labels).toContain(body.label);
    expect(body.probability).toBeGreaterThanOrEqual(0);
    expect(body.probability).toBeLessThanOrEqual(1);
    expect(body.threshold).toBe(t.engine.card.postprocessing.threshold);
    expect(body.label).toBe(body.probability >= body.threshold ? t.engine.card.labels[1] : t.engine.card.labels[0]);
    expect(body.model).toEqual({ name: t.engine.card.name, version: t.engine.card.version });
    expect(body.image).toEqual({ width: 320, height: 360, format: 'png' });
    for (const k of ['decode', 'preprocess', 'infer', 'explain', 'queue', 'server_total'])
      expect(body.timings_ms[k], k).toBeGreaterThanOrEqual(0);
    const overlay = Buffer.from(body.gradcam.replace(/^data:image\/png;base64,/, ''), 'base64');
    const meta = await sharp(overlay).metadata();
    expect(meta.format).toBe('png');
    expect((meta.width ?? 0) / (meta.height ?? 1)).toBeCloseTo(320 / 360, 1);
    const { width, height, data } = body.gradcam_map;
    expect(data).toHaveLength(width * height);
    expect(Math.max(...data)).toBeLessThanOrEqual(1);
    expect(Math.min(...data)).toBeGreaterThanOrEqual(0);

    // The same image through the engine directly gives the same probability.
    const direct = await t.engine.analyse(image, { cam: false });
    expect(body.probability).toBeCloseTo(direct.probability, 6);
  });

  it('threshold override and cam=false', async () => {
    const image = chestPng(320, 360);
    const low = (await predict(image, '?threshold=0&cam=false')).json();
    const high = (await predict(image, '?threshold=1&cam=false')).json();
    expect(low).toMatchObject({ label: t.engine.card.labels[1], threshold: 0, gradcam: null, gradcam_map: null });
    expect(high.threshold).toBe(1);
    if (high.probability < 1) expect(high.label).toBe(t.engine.card.labels[0]);
  });

  it('reads DICOM and maps engine errors to statuses', async () => {
    const px = Array.from({ length: 64 * 64 }, (_, i) => (i * 7) % 256);
    // a sawtooth is no chest X-ray: the model's gate refuses it; forced, the DICOM path still answers
    const refused = await predict(grayDicom(64, 64, px));
    expect([refused.statusCode, refused.json().error.code]).toEqual([422, 'not_a_chest_xray']);
    const dcm = await predict(grayDicom(64, 64, px), '?force=true');
    expect(dcm.statusCode).toBe(200);
    expect(dcm.json().image.format).toBe('dicom');
    expect((await predict(Buffer.from('GIF89a not supported'))).statusCode).toBe(415);
    expect((await predict(chestPng(64, 64).subarray(0, 60))).statusCode).toBe(422);
  });
});
