/**
 * One real-browser test on top of the API tests: the shipped model behind the real server on
 * 127.0.0.1, Chromium (test/fixtures/browser.ts) driven by playwright-core. Screenshots go to test-results/.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { SCREENSHOTS, serveWithBrowser } from '../fixtures/browser.ts';
import { closeAll } from '../fixtures/app.ts';
import sharp from 'sharp';
import { intendedPopulation } from '../../src/eval/card.ts';
import { Engine } from '../../src/pipeline.ts';
import type { RunningServer } from '../../src/server/start.ts';
import { grayDicom } from '../fixtures/make-dicom.ts';
import { chestPng } from '../fixtures/server-helpers.ts';
import { ctSlicePng } from '../fixtures/non-cxr.ts';
import { GOLDEN } from '../fixtures/paths.ts';

const OUT = SCREENSHOTS;
/** A real 224 x 224 pediatric chest X-ray (golden fixture written by the Python exporter). */
const XRAY = readFileSync(resolve(GOLDEN, 'pneumonia_gray_224.png'));

let engine: Engine;
let server: RunningServer;
let browser: Browser;

beforeAll(async () => {
  engine = await Engine.load(); // the shipped model: fails (does not skip) when it is missing
  ({ server, browser } = await serveWithBrowser(engine));
});

afterAll(() => closeAll(browser, server, engine));

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
  it('before any image: no preview box and no "Analyse again"; after one, the image fills its frame', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, reducedMotion: 'reduce' });
    await page.goto(server.url);
    await page.locator('#model-card .model-name').waitFor();
    await expect(page.locator('#preview').isVisible()).resolves.toBe(false);
    await expect(page.getByRole('button', { name: 'Analyse again' }).isVisible()).resolves.toBe(false);
    // no visible image without pixels (a broken image shows its alt text in a box)
    const broken = await page.$$eval('img', (imgs) =>
      imgs.filter((i) => i.getBoundingClientRect().width > 0 && !(i.complete && i.naturalWidth > 0)).map((i) => i.id || i.alt),
    );
    expect(broken).toEqual([]);

    await page.setInputFiles('#file', { name: 'xray.png', mimeType: 'image/png', buffer: XRAY });
    await page.locator('#result').waitFor({ state: 'visible', timeout: 30_000 });
    await expect(page.getByRole('button', { name: 'Analyse again' }).isVisible()).resolves.toBe(true);
    // a square 224 x 224 film drawn in its square frame fills it (the frame is about 500 px wide)
    for (const [frame, image] of [
      ['#zoom-original', '#original'],
      ['#zoom-overlay', '#overlay-canvas'],
    ]) {
      const f = (await page.locator(frame).boundingBox())!;
      const i = (await page.locator(image).boundingBox())!;
      expect(f.width).toBeGreaterThan(400);
      expect(i.width / f.width, image).toBeGreaterThan(0.97);
      expect(i.height / f.height, image).toBeGreaterThan(0.97);
    }
    // keyboard and screen readers land on the new result, and the status line says what it is
    await expect(page.evaluate(() => document.activeElement?.id)).resolves.toBe('result-title');
    await expect(page.locator('#status').textContent()).resolves.toMatch(/^Done: (NORMAL|PNEUMONIA), probability of pneumonia \d/);
    await page.close();
  });

  it('phone: after scrolling to the result, the sticky disclaimer does not cover its heading or label', async () => {
    const page = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, reducedMotion: 'reduce' });
    await page.goto(server.url);
    await page.setInputFiles('#file', { name: 'xray.png', mimeType: 'image/png', buffer: XRAY });
    await page.locator('#result').waitFor({ state: 'visible', timeout: 30_000 });
    await page.waitForFunction(() => window.scrollY > 0);
    const banner = (await page.locator('.banner').boundingBox())!;
    const heading = (await page.locator('#result-title').boundingBox())!;
    const label = (await page.locator('#label').boundingBox())!;
    expect(banner.y).toBe(0); // still stuck at the top
    expect(heading.y).toBeGreaterThanOrEqual(banner.y + banner.height);
    expect(label.y).toBeGreaterThanOrEqual(banner.y + banner.height);
    await page.screenshot({ path: resolve(OUT, 'e2e-phone-result.png') });
    await page.close();
  });

  it('200 % zoom (640 x 450 CSS px) and dark mode: no sideways scrolling, banner scrolls away, dark colours', async () => {
    const page = await browser.newPage({
      viewport: { width: 640, height: 450 },
      deviceScaleFactor: 2,
      colorScheme: 'dark',
      reducedMotion: 'reduce',
    });
    await page.goto(server.url);
    await page.setInputFiles('#file', { name: 'xray.png', mimeType: 'image/png', buffer: XRAY });
    await page.locator('#result').waitFor({ state: 'visible', timeout: 30_000 });
    expect(await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)).toBeLessThanOrEqual(0);
    expect(await page.locator('.banner').evaluate((b) => getComputedStyle(b).position)).toBe('static');
    const luminance = (css: string) => {
      const [r, g, b] = css.match(/\d+/g)!.map(Number);
      return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
    };
    const bg = await page.evaluate(() => getComputedStyle(document.documentElement).backgroundColor);
    const fg = await page.evaluate(() => getComputedStyle(document.documentElement).color);
    expect(luminance(bg)).toBeLessThan(0.15);
    expect(luminance(fg)).toBeGreaterThan(0.8);
    await page.screenshot({ path: resolve(OUT, 'e2e-zoom200-dark.png') });
    await page.close();
  });

  it('keyboard only: reaches the result controls, opens and closes the enlarged image', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, reducedMotion: 'reduce' });
    await page.goto(server.url);
    await page.setInputFiles('#file', { name: 'xray.png', mimeType: 'image/png', buffer: XRAY });
    await page.locator('#result').waitFor({ state: 'visible', timeout: 30_000 });
    const seen: string[] = [];
    for (let i = 0; i < 12; i++) {
      await page.keyboard.press('Tab');
      seen.push(await page.evaluate(() => document.activeElement?.id ?? ''));
    }
    expect(seen.slice(0, 6)).toEqual(['zoom-original', 'zoom-overlay', 'cam-on', 'opacity', 'download-png', 'download-json']);
    await page.locator('#zoom-overlay').focus();
    await page.keyboard.press('Enter');
    await expect(page.locator('#zoom-dialog').isVisible()).resolves.toBe(true);
    await page.keyboard.press('Escape');
    await expect(page.locator('#zoom-dialog').isVisible()).resolves.toBe(false);
    await expect(page.evaluate(() => document.activeElement?.id)).resolves.toBe('zoom-overlay');
    await page.close();
  });

  it('About the model: results outside the training hospital beside validation, or one line saying there are none', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(server.url);
    await page.locator('#model-card .model-name').waitFor(); // the card has loaded (slow on a busy machine)
    const outside = page.getByRole('region', { name: 'Other hospitals and sources' });
    await expect(page.getByRole('region', { name: 'Training hospital: validation patients' }).isVisible()).resolves.toBe(true);
    // The shipped card's own per-source table and the independent grading of the previous version.
    const shipped = page.getByRole('table', { name: 'Performance by image source' });
    await expect(shipped.getByRole('row', { name: /^Kermany validation patients/ }).isVisible()).resolves.toBe(true);
    // the other hospital's row carries its AUC
    await expect(
      shipped
        .getByRole('row', { name: /^NIH validation patients/ })
        .first()
        .textContent(),
    ).resolves.toMatch(/\d\.\d{3}/);
    // the previous model's table and the leave-one-source-out levers, when the card carries them (3.0.0 does)
    const metrics = engine.card.metrics as { previous?: { version: string }; leave_one_source_out?: { rows: Array<{ lever: string }> } };
    if (metrics.previous) {
      await expect(outside.textContent()).resolves.toContain(`The previous model (version ${metrics.previous.version})`);
      await expect(page.getByRole('table', { name: 'Previous model by image source' }).isVisible()).resolves.toBe(true);
    }
    for (const r of metrics.leave_one_source_out?.rows ?? []) {
      const lever = page
        .getByRole('table', { name: 'Hospital never seen, by lever' })
        .getByRole('row', { name: new RegExp(`^${r.lever.replaceAll('_', ' ')} `) }); // shown with spaces, so that it wraps
      await expect(lever.textContent()).resolves.toMatch(/\d\.\d{3}/);
    }
    const graded = (engine.card.metrics as { independent?: { model_version?: string } }).independent?.model_version;
    if (graded && graded !== engine.card.version) {
      await expect(outside.textContent()).resolves.toContain(`These results are for version ${graded}, not for the version served here`);
    }

    // A card without those fields: one line says validation overstates performance elsewhere.
    await page.route('**/api/model', async (route) => {
      const card = await (await route.fetch()).json();
      delete card.metrics.by_source;
      delete card.metrics.independent;
      await route.fulfill({ json: card });
    });
    await page.reload();
    await page.locator('#model-card .model-name').waitFor();
    await expect(outside.textContent()).resolves.toMatch(
      /Validation comes from the training hospital and overstates performance elsewhere/,
    );
    await page.unroute('**/api/model');

    // The fields the retrained model's card will carry.
    await page.route('**/api/model', async (route) => {
      const card = await (await route.fetch()).json();
      card.metrics.by_source = [
        { source: 'NIH AP view', n: 600, auc: 0.79, auc_ci: [0.75, 0.83], sensitivity: 0.66, specificity: 0.8, ece: 0.14, note: 'adults' },
      ];
      card.metrics.independent = {
        model_version: '0.9.0',
        note: 'Graded by someone else.',
        rows: [{ set: 'Hidden A', n: '624', result: 'AUC 0.93' }],
      };
      await route.fulfill({ json: card });
    });
    await page.reload();
    await page.locator('#model-card .model-name').waitFor();
    await expect(outside.textContent()).resolves.not.toMatch(/has no results/);
    const source = page.getByRole('table', { name: 'Performance by image source' });
    await expect(source.getByRole('row', { name: /NIH AP view/ }).textContent()).resolves.toMatch(
      /600.*0\.790.*\(0\.750–0\.830\).*0\.660.*0\.800.*0\.140/,
    );
    await expect(page.getByRole('table', { name: 'Independent grading on hidden sets' }).textContent()).resolves.toMatch(
      /Hidden A.*624.*AUC 0\.93/,
    );
    await expect(outside.textContent()).resolves.toContain(
      `These results are for version 0.9.0, not for the version served here (${engine.card.version})`,
    );
    await page.close();
  });

  it('"outside_intended_use" refusal: its own title and words, distinct from "not a chest X-ray", with "Analyse anyway"', async () => {
    const page = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    await page.goto(server.url);
    // A radiograph-like image that passes the image checks but is unlike every chest X-ray the gate was
    // fitted on (a synthetic CT slice): declined as outside the intended use (basis gate_score).
    const ct = await ctSlicePng(256, 1);
    await page.setInputFiles('#file', { name: 'slice.png', mimeType: 'image/png', buffer: ct });
    await page.locator('#rejected').waitFor({ state: 'visible' });
    await expect(page.locator('#rejected-title').textContent()).resolves.toBe("Outside the model's intended use");
    // who the model is for, in the card's words (issue 19 item 8)
    await expect(page.locator('#rejected-text').textContent()).resolves.toContain(`validated only for ${intendedPopulation(engine.card)}`);
    await expect(page.locator('#rejected-reasons').textContent()).resolves.toMatch(/unlike the (chest X-rays|population)/);
    await expect(page.locator('#force-hint').textContent()).resolves.toMatch(/"Analyse anyway" runs the model with a warning/);
    await expect(page.locator('#status').textContent()).resolves.toMatch(/^Declined: outside the model's intended use/);
    await expect(page.locator('#error').isVisible()).resolves.toBe(false);
    const title = (await page.locator('#rejected-title').boundingBox())!;
    const banner = (await page.locator('.banner').boundingBox())!;
    expect(title.y).toBeGreaterThanOrEqual(banner.y + banner.height);
    const forced = page.waitForRequest((r) => r.url().includes('/api/predict') && r.url().includes('force=true'));
    await page.getByRole('button', { name: 'Analyse anyway' }).click();
    await forced;
    await page.close();
  });
});
