/**
 * The on-device page behind `pneumolens serve` (issue 21), in real Chromium: the server sends
 * COOP/COEP, so the page is cross-origin isolated and the WASM model runs multi-threaded; the page
 * offers "on this device" (the default) and "on the server", and the two give the same answer.
 * In device mode nothing is posted; every off-origin request is refused by the test.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildWeb } from '../../scripts/build-web.ts';
import { Engine } from '../../src/pipeline.ts';
import type { RunningServer } from '../../src/server/start.ts';
import { serveWithBrowser } from '../fixtures/browser.ts';
import { closeAll } from '../fixtures/app.ts';
import { GOLDEN, testTmp } from '../fixtures/paths.ts';

const XRAY = readFileSync(resolve(GOLDEN, 'pneumonia_gray_224.png'));

let out: string;
let engine: Engine;
let server: RunningServer;
let browser: Browser;

beforeAll(async () => {
  out = mkdtempSync(join(testTmp(), 'pneumolens-web-'));
  await buildWeb({ out });
  engine = await Engine.load({ threads: 1 });
  ({ server, browser } = await serveWithBrowser(engine, { deviceRoot: join(out, 'device') }));
}, 240_000);

afterAll(async () => {
  await closeAll(browser, server, engine);
  if (out) rmSync(out, { recursive: true, force: true });
});

describe('on-device analysis behind pneumolens serve', () => {
  it('sends COOP/COEP, runs the WASM multi-threaded, defaults to the device, and agrees with the server', async () => {
    const origin = new URL(server.url).origin;
    const context = await browser.newContext({ viewport: { width: 1024, height: 900 } });
    const posts: string[] = [];
    const refused: string[] = [];
    await context.route('**/*', (route) => {
      const req = route.request();
      const url = new URL(req.url());
      if (url.origin !== origin) {
        refused.push(req.url());
        return route.abort('blockedbyclient');
      }
      if (req.method() !== 'GET') posts.push(`${req.method()} ${url.pathname}`);
      return route.continue();
    });
    const page = await context.newPage();
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    const res = await page.goto(server.url);
    expect(res?.headers()['cross-origin-embedder-policy']).toBe('require-corp');
    await page.waitForFunction(() => ['ready', 'failed'].includes(document.body.dataset.device ?? ''), undefined, { timeout: 120_000 });
    expect(await page.evaluate(() => document.body.dataset.device)).toBe('ready');
    // (The bundled Chromium runs without site isolation, where crossOriginIsolated reads false even
    // with these headers; it has SharedArrayBuffer forced on, so the threads still start.)
    const device = await page.request.get(`${server.url}/device/device.js`);
    expect(device.headers()['cross-origin-opener-policy']).toBe('same-origin');
    expect(device.headers()['cross-origin-embedder-policy']).toBe('require-corp');
    const threads = Number((await page.locator('#device-status').textContent())?.match(/wasm simd, (\d+) threads?/)?.[1]);
    expect(threads).toBe(Math.min(8, await page.evaluate(() => navigator.hardwareConcurrency)));
    await expect(page.locator('#mode-device').isChecked()).resolves.toBe(true);
    await expect(page.locator('#mode-server').isEnabled()).resolves.toBe(true);

    // On this device: nothing is posted.
    await page.setInputFiles('#file', { name: 'chest.png', mimeType: 'image/png', buffer: XRAY });
    await page.locator('#result[data-probability]').waitFor({ state: 'visible', timeout: 60_000 });
    const onDevice = Number(await page.locator('#result').getAttribute('data-probability'));
    await expect(page.locator('#timings').textContent()).resolves.toMatch(/on this device\.$/);
    expect(posts).toEqual([]);

    // On the server: the same file is posted to /api/predict, and the answers agree.
    await page.locator('#mode-server').check();
    const answered = page.waitForResponse((r) => r.url().includes('/api/predict'));
    await page.getByRole('button', { name: 'Analyse again' }).click();
    const body = await (await answered).json();
    await page.waitForFunction((p) => document.getElementById('result')?.dataset.probability === String(p), body.probability);
    expect(posts).toEqual(['POST /api/predict']);
    expect(Math.abs(onDevice - body.probability)).toBeLessThanOrEqual(1e-4);
    await expect(page.locator('#timings').textContent()).resolves.toMatch(/on the server\.$/);
    expect(refused).toEqual([]);
    expect(pageErrors).toEqual([]);
    await context.close();
  });
});
