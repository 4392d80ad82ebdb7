/**
 * Analysis on the device (issue 21), in real Chromium (test/fixtures/browser.ts): the static build of
 * `npm run build:web`, served by a plain loopback static server; every request that is not a GET
 * to that origin, and every request to /api/, is refused by the test. The page's answers are
 * compared with the Node engine's, run in this test on the same bytes (no number of the shipped
 * model is written here): probability within 1e-4, the Grad-CAM map within 1e-3, the same label,
 * gate outcome and warnings; what the device cannot decode says so.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Browser, BrowserContext } from 'playwright-core';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildWeb } from '../../scripts/build-web.ts';
import { intendedPopulation } from '../../src/eval/card.ts';
import { collect, Engine } from '../../src/pipeline.ts';
import type { Outcome } from '../../src/types.ts';
import { launchChromium, SCREENSHOTS } from '../fixtures/browser.ts';
import { closeAll } from '../fixtures/app.ts';
import { xrayDicom } from '../fixtures/dicom-tools.ts';
import { deflatedDicom, pixelTags } from '../fixtures/make-dicom.ts';
import { colourPhotoPng, constantPng } from '../fixtures/non-cxr.ts';
import { serveStatic, type StaticServer } from '../fixtures/static-server.ts';
import { GOLDEN, NIH, testTmp } from '../fixtures/paths.ts';

interface Fixture {
  name: string;
  bytes: Buffer;
  /** Larger than the working size (WORK_MAX_SIDE): reduced before the model's own resize. */
  reduced?: boolean;
}

/** What the page answered for one file (DeviceEngine.predict, the server's answer shape). */
interface DeviceAnswer {
  status: number;
  label?: string;
  probability?: number;
  map?: number[];
  warnings?: string[];
  code?: string;
  message?: string;
  analysed_on?: string;
}

let out: string;
let site: StaticServer;
let browser: Browser;
let engine: Engine;
let fixtures: Fixture[];

beforeAll(async () => {
  out = mkdtempSync(join(testTmp(), 'pneumolens-web-'));
  await buildWeb({ out });
  writeFileSync(join(out, 'blank.html'), '<!doctype html><title>engine only</title>');
  site = await serveStatic(out);
  browser = await launchChromium();
  engine = await Engine.load({ threads: 1 });
  const png = (f: string) => ({ name: f, bytes: readFileSync(join(GOLDEN, f)) });
  fixtures = [
    ...['normal_gray_200x240.png', 'normal_rgb_300x256.png', 'pneumonia_gray_224.png', 'pneumonia_rgba_180.png'].map(png),
    ...['adult_normal_ap.jpeg', 'adult_pneumonia_pa.jpeg'].map((f) => ({ name: f, bytes: readFileSync(join(NIH, f)) })),
    { name: 'xray-8bit.dcm', bytes: (await xrayDicom()).file },
    { name: 'xray-16bit.dcm', bytes: (await xrayDicom({ bits: 16 })).file },
    { name: 'holiday.png', bytes: await colourPhotoPng(120, 90, 2) },
    { name: 'blank.png', bytes: constantPng(200, 240, 128) },
    // Larger than the working size (WORK_MAX_SIDE): reduced before the model's resize, on both sides.
    {
      reduced: true,
      name: 'xray-1600x1920.png',
      bytes: await sharp(join(GOLDEN, 'normal_gray_200x240.png')).resize(1600, 1920).png().toBuffer(),
    },
    {
      name: 'xray-1792.jpeg',
      bytes: await sharp(join(GOLDEN, 'pneumonia_gray_224.png')).resize(1792, 1792).jpeg({ quality: 90 }).toBuffer(),
    },
  ];
}, 240_000);

afterAll(async () => {
  await closeAll(browser, site, engine);
  if (out) rmSync(out, { recursive: true, force: true });
});

interface Traffic {
  allowed: Array<{ method: string; path: string; bodyBytes: number }>;
  refused: string[];
}

/** A context whose every request is checked: GET to the static origin outside /api/ only. */
async function guardedContext(): Promise<{ context: BrowserContext; traffic: Traffic }> {
  const context = await browser.newContext({ viewport: { width: 1024, height: 900 }, reducedMotion: 'reduce' });
  const traffic: Traffic = { allowed: [], refused: [] };
  await context.route('**/*', (route) => {
    const req = route.request();
    const url = new URL(req.url());
    const bodyBytes = req.postDataBuffer()?.length ?? 0;
    if (url.origin !== site.url || req.method() !== 'GET' || url.pathname.startsWith('/api/') || bodyBytes > 0) {
      traffic.refused.push(`${req.method()} ${url.origin === site.url ? url.pathname : url.href}`);
      return route.abort('blockedbyclient');
    }
    traffic.allowed.push({ method: req.method(), path: url.pathname, bodyBytes });
    return route.continue();
  });
  return { context, traffic };
}

/** The Node engine's outcome in the fields the page's answer has. */
function nodeAnswer(o: Outcome): DeviceAnswer {
  if (o.status === 'analysed') {
    return {
      status: 200,
      label: o.result.label,
      probability: o.result.probability,
      map: Array.from(o.result.cam!.map),
      warnings: o.result.warnings,
    };
  }
  const e = o.error as Error & { status?: number; code?: string };
  return { status: e.status ?? 500, code: e.code, message: e.message };
}

describe('on-device analysis in Chromium (static build, no server)', () => {
  it('gives the Node engine answers (probability within 1e-4, Grad-CAM within 1e-3; 1e-3 and 1e-2 above the working size), gate and intended-use outcomes; no request carries image bytes', async () => {
    const { context, traffic } = await guardedContext();
    const page = await context.newPage();
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    await page.goto(`${site.url}/`);
    await page.waitForFunction(() => ['ready', 'failed'].includes(document.body.dataset.device ?? ''), undefined, { timeout: 120_000 });
    expect(await page.evaluate(() => document.body.dataset.device)).toBe('ready');
    await expect(page.locator('#device-status').textContent()).resolves.toMatch(/^Ready: the model runs in this browser/);
    await expect(page.locator('#mode-server').isDisabled()).resolves.toBe(true); // no server behind a static host

    // The module itself, one thread, in a page of its own (the app's engine above chose its threads
    // first), reached from a module script: vitest rewrites an import() inside the evaluated function.
    await page.goto(`${site.url}/blank.html`);
    await page.addScriptTag({ type: 'module', content: "import * as m from '/device/device.js'; window.deviceModule = m;" });
    await page.waitForFunction(() => 'deviceModule' in window);
    const {
      answers: device,
      phases,
      cached,
    } = await page.evaluate(
      async (files) => {
        const { DeviceEngine } = (window as unknown as { deviceModule: { DeviceEngine: any } }).deviceModule;
        const phases: string[] = [];
        const eng = await DeviceEngine.load({ threads: 1, onProgress: (p: { phase: string }) => phases.push(p.phase) });
        const answers: DeviceAnswer[] = [];
        for (const f of files) {
          const a = await eng.predict(
            Uint8Array.from(atob(f.base64), (c) => c.charCodeAt(0)),
            'cam=true',
          );
          const b = a.body;
          answers.push({
            status: a.status,
            label: b.label,
            probability: b.probability,
            map: b.gradcam_map?.data,
            warnings: b.warnings,
            code: b.error?.code,
            message: b.error?.message,
            analysed_on: b.analysed_on,
          });
        }
        return { answers, phases: [...new Set(phases)], cached: eng.cached as boolean };
      },
      fixtures.map((f) => ({ name: f.name, base64: f.bytes.toString('base64') })),
    );
    const node = (
      await collect(
        engine.analyseStream(
          fixtures.map((f) => f.bytes),
          { cam: true },
        ),
      )
    ).map(nodeAnswer);

    // Images larger than the working size are reduced first: by libvips on the server, by the
    // contract's triangle filter in the browser (src/web/canvas-io.ts), hence their own bound.
    const report: string[] = [];
    fixtures.forEach((f, i) => {
      const [d, n] = [device[i], node[i]];
      expect(d.analysed_on, f.name).toBe('device');
      expect(d.status, `${f.name}: ${d.message}`).toBe(n.status);
      if (n.status !== 200) {
        expect(d.code, f.name).toBe(n.code);
        report.push(`${f.name}: ${n.code}`);
        return;
      }
      expect(d.label, f.name).toBe(n.label);
      const dp = Math.abs(d.probability! - n.probability!);
      expect(d.map!.length, f.name).toBe(n.map!.length);
      const dc = Math.max(...d.map!.map((v, k) => Math.abs(v - n.map![k])));
      report.push(`${f.name}: ${n.label} |dp| ${dp.toExponential(1)} |dcam| ${dc.toExponential(1)}`);
      const [pTol, camTol] = f.reduced ? [1e-3, 1e-2] : [1e-4, 1e-3];
      expect(dp, f.name).toBeLessThanOrEqual(pTol);
      expect(dc, f.name).toBeLessThanOrEqual(camTol);
      expect(d.warnings, f.name).toEqual(n.warnings);
    });
    console.log(`on-device vs Node engine:\n  ${report.join('\n  ')}`);
    // The gate's refusal is reproduced (the blank image at least fails the image checks on any model).
    expect(node.filter((n) => n.code === 'not_a_chest_xray').length).toBeGreaterThan(0);

    // The model was downloaded once (by the page), then read from the browser's cache.
    expect(phases).toEqual(['card', 'model', 'runtime', 'ready']);
    expect(cached).toBe(true);
    expect(traffic.allowed.filter((r) => r.path.endsWith('.onnx'))).toHaveLength(1);

    // Nothing but GETs of the site's own files.
    expect(traffic.allowed.every((r) => r.method === 'GET' && r.bodyBytes === 0 && !r.path.startsWith('/api/'))).toBe(true);
    expect(traffic.refused).toEqual([]); // the static page does not even ask for /api/
    expect(pageErrors).toEqual([]);
    await context.close();
  }, 300_000);

  it('the page analyses a held-out X-ray chosen in the file input: label and probability as the CLI engine, nothing uploaded', async () => {
    const { context, traffic } = await guardedContext();
    const page = await context.newPage();
    await page.goto(`${site.url}/`);
    await page.waitForFunction(() => document.body.dataset.device === 'ready', undefined, { timeout: 120_000 });
    // who the model is for, from the card the device loaded (issue 19 item 8), as the server's page says it
    const population = intendedPopulation(engine.card);
    await page.locator('#population').waitFor();
    await expect(page.locator('#population').textContent()).resolves.toBe(
      population
        ? `Validated only for ${population}. Results on other patients are not validated.`
        : 'The model card does not say which population this model is validated for: treat every result as unvalidated.',
    );
    const before = traffic.allowed.length;
    const xray = fixtures.find((f) => f.name === 'normal_gray_200x240.png')!;
    await page.setInputFiles('#file', { name: 'chest.png', mimeType: 'image/png', buffer: xray.bytes });
    await page.locator('#result[data-probability]').waitFor({ state: 'visible', timeout: 60_000 });
    const [o] = await collect(engine.analyseStream([xray.bytes]));
    expect(o.status).toBe('analysed');
    const r = o.status === 'analysed' ? o.result : null;
    const probability = Number(await page.locator('#result').getAttribute('data-probability'));
    expect(await page.locator('#result').getAttribute('data-label')).toBe(r!.label);
    expect(Math.abs(probability - r!.probability)).toBeLessThanOrEqual(1e-4);
    await expect(page.locator('#timings').textContent()).resolves.toMatch(/ms on this device\.$/);
    await page.screenshot({ path: resolve(SCREENSHOTS, 'device-result.png'), fullPage: true });
    // the analysis itself asked for nothing (the model and the page were already loaded)
    expect(traffic.allowed.slice(before)).toEqual([]);

    // The gate's refusal, on the device: explained, and "Analyse anyway" analyses with a warning.
    await page.setInputFiles('#file', {
      name: 'blank.png',
      mimeType: 'image/png',
      buffer: fixtures.find((f) => f.name === 'blank.png')!.bytes,
    });
    await page.locator('#rejected').waitFor({ state: 'visible', timeout: 60_000 });
    await expect(page.locator('#rejected-title').textContent()).resolves.toBe('This does not look like a chest X-ray');
    await page.getByRole('button', { name: 'Analyse anyway' }).click();
    await page.locator('#result').waitFor({ state: 'visible', timeout: 60_000 });
    await expect(page.locator('#warnings').textContent()).resolves.toMatch(/^Analysed anyway \(forced\)/);

    // A deflated DICOM cannot be inflated on the device: the page says so instead of guessing.
    const deflated = deflatedDicom([
      ...pixelTags({ width: 32, height: 32 }),
      { tag: [0x7fe0, 0x0010], vr: 'OB', value: Buffer.alloc(32 * 32, 100) },
    ]);
    await page.setInputFiles('#file', { name: 'deflated.dcm', mimeType: 'application/dicom', buffer: deflated });
    await page.locator('#error').waitFor({ state: 'visible', timeout: 30_000 });
    await expect(page.locator('#error').textContent()).resolves.toMatch(/cannot be decoded on this device/);
    expect(traffic.refused).toEqual([]);
    await context.close();
  }, 180_000);
});
