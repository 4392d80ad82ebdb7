/**
 * One real-browser test on top of the API tests: the shipped model behind the real server on
 * 127.0.0.1, Chromium (test/browser.ts) driven by playwright-core. Screenshots go to test-results/.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolve } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { launchChromium, SCREENSHOTS } from './browser.ts';
import sharp from 'sharp';
import { Engine } from '../src/pipeline.ts';
import { serve, type RunningServer } from '../src/server/start.ts';
import { grayDicom } from './fixtures/make-dicom.ts';
import { chestPng } from './server-helpers.ts';

const OUT = SCREENSHOTS;

let engine: Engine;
let server: RunningServer;
let browser: Browser;

beforeAll(async () => {
  engine = await Engine.load(); // the shipped model: fails (does not skip) when it is missing
  server = await serve({ engine, port: 0, host: '127.0.0.1', maxConcurrent: 1 });
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  await server?.close();
  await engine?.dispose();
});

/** Pixels of the overlay canvas that are clearly coloured (heatmap), out of all. */
async function colouredFraction(page: Page): Promise<number> {
  return page.$eval('#overlay-canvas', (c) => {
    const canvas = c as HTMLCanvasElement;
    const d = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height).data;
    let coloured = 0;
    for (let i = 0; i < d.length; i += 4) {
      const max = Math.max(d[i], d[i + 1], d[i + 2]);
      const min = Math.min(d[i], d[i + 1], d[i + 2]);
      if (max - min > 40) coloured++;
    }
    return coloured / (d.length / 4);
  });
}

describe('web page, end to end', () => {
  it('uploads an image and shows the label, the probability bar and the Grad-CAM heatmap', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, reducedMotion: 'reduce' });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    await page.goto(server.url);
    await expect(page.locator('.banner').textContent()).resolves.toContain('Research and education tool, not a medical device.');
    await page.locator('#model-card .model-name').waitFor(); // the card summary came from /api/model

    await page.setInputFiles('#file', {
      name: 'synthetic-chest.png',
      mimeType: 'image/png',
      buffer: chestPng(320, 360, { opacity: true }),
    });
    await page.locator('#result').waitFor({ state: 'visible', timeout: 30_000 });
    const label = (await page.locator('#label').textContent())?.trim();
    expect(engine.card.labels).toContain(label);
    expect(await page.locator('#probability').textContent()).toMatch(/^\d+\.\d %$/);
    const barLabel = await page.locator('#bar').getAttribute('aria-label');
    expect(barLabel).toMatch(/Probability .* threshold/);

    // The heatmap is drawn over the original, and the opacity slider and toggle act on it.
    const canvas = page.locator('#overlay-canvas');
    await expect(canvas.isVisible()).resolves.toBe(true);
    const withHeat = await colouredFraction(page);
    expect(withHeat).toBeGreaterThan(0.05);
    await page.getByLabel('Show heatmap').uncheck();
    expect(await colouredFraction(page)).toBeLessThan(0.01);
    await page.getByLabel('Show heatmap').check();
    await page.getByLabel('Heatmap opacity').fill('1');
    expect(await colouredFraction(page)).toBeGreaterThanOrEqual(withHeat);
    await page.getByLabel('Heatmap opacity').fill('0.45');

    // Click to enlarge, Escape to close.
    await page.locator('#zoom-overlay').click();
    await expect(page.locator('#zoom-dialog').isVisible()).resolves.toBe(true);
    await page.keyboard.press('Escape');
    await expect(page.locator('#zoom-dialog').isVisible()).resolves.toBe(false);

    // Downloads: the overlay PNG and the JSON report.
    const [png] = await Promise.all([page.waitForEvent('download'), page.locator('#download-png').click()]);
    expect(png.suggestedFilename()).toMatch(/\.png$/);
    const [json] = await Promise.all([page.waitForEvent('download'), page.locator('#download-json').click()]);
    const report = JSON.parse(await (await json.createReadStream()).toArray().then((b) => Buffer.concat(b).toString('utf8')));
    expect(report).toMatchObject({ label, disclaimer: 'Research and education tool, not a medical device.' });

    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: resolve(OUT, 'e2e.png'), fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
  });

  it('is usable at phone width and shows API errors clearly', async () => {
    const page = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, reducedMotion: 'reduce' });
    await page.goto(server.url);
    await page.setInputFiles('#file', { name: 'notes.png', mimeType: 'image/png', buffer: Buffer.from('this is not an image') });
    const error = page.locator('#error');
    await error.waitFor({ state: 'visible' });
    expect(await error.textContent()).toMatch(/Unsupported file type.*415 unsupported_media_type/);

    await page.setInputFiles('#file', { name: 'synthetic-chest.png', mimeType: 'image/png', buffer: chestPng(320, 360) });
    await page.locator('#result').waitFor({ state: 'visible', timeout: 30_000 });
    await expect(error.isHidden()).resolves.toBe(true);
    // Nothing wider than the screen.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow).toBeLessThanOrEqual(0);
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: resolve(OUT, 'e2e-phone.png'), fullPage: true });
    await page.close();
  });

  it('DICOM (no browser preview): shows the server-rendered overlay and re-requests it for a new opacity', async () => {
    const page = await browser.newPage({ viewport: { width: 1024, height: 800 }, reducedMotion: 'reduce' });
    await page.goto(server.url);
    // chest-like pixels (a sawtooth would be refused by the input gate as not a chest X-ray)
    const px = Array.from(await sharp(chestPng(96, 96)).extractChannel(0).raw().toBuffer());
    await page.setInputFiles('#file', { name: 'study.dcm', mimeType: 'application/dicom', buffer: grayDicom(96, 96, px) });
    await page.locator('#result').waitFor({ state: 'visible', timeout: 30_000 });
    await expect(page.locator('#original-missing').isVisible()).resolves.toBe(true);
    const overlay = page.locator('#overlay-img');
    await expect(overlay.isVisible()).resolves.toBe(true);
    const first = await overlay.getAttribute('src');
    expect(first).toMatch(/^data:image\/png;base64,/);
    const answered = page.waitForResponse((r) => r.url().includes('/api/predict') && r.url().includes('alpha=0.9'));
    await page.getByLabel('Heatmap opacity').fill('0.9');
    await page.getByLabel('Heatmap opacity').dispatchEvent('change');
    expect((await answered).status()).toBe(200);
    await page.waitForFunction((prev) => (document.getElementById('overlay-img') as HTMLImageElement).src !== prev, first);
    await page.close();
  });

  it('every control is reachable by keyboard and labelled', async () => {
    const page = await browser.newPage({ viewport: { width: 1024, height: 800 } });
    await page.goto(server.url);
    for (const name of ['…or an image URL', 'Heatmap colours', 'Decision threshold']) {
      expect(await page.getByLabel(name).count(), name).toBe(1);
    }
    const focused: string[] = [];
    for (let i = 0; i < 8; i++) {
      await page.keyboard.press('Tab');
      focused.push(await page.evaluate(() => document.activeElement?.id || document.activeElement?.tagName || ''));
    }
    expect(focused).toEqual(expect.arrayContaining(['file', 'url', 'url-go']));
    await page.close();
  });
});
