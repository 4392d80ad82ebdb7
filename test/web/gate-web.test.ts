/**
 * The web page with the input gate and uncertainty (issue 5), in a real browser
 * (test/fixtures/browser.ts, playwright-core), on the real server and engine with a tiny gated model whose
 * uncertainty cutoff is tiny, so every accepted image is "uncertain".
 */
import { resolve } from 'node:path';
import type { Browser } from 'playwright-core';
import { SCREENSHOTS, serveWithBrowser } from '../fixtures/browser.ts';
import { closeAll } from '../fixtures/app.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Engine } from '../../src/pipeline.ts';
import type { RunningServer } from '../../src/server/start.ts';
import { gated, tinyEngine } from '../fixtures/tiny-model.ts';
import { colourPhotoPng, texturedGrayPng } from '../fixtures/non-cxr.ts';

const OUT = SCREENSHOTS;

let engine: Engine;
let server: RunningServer;
let browser: Browser;

beforeAll(async () => {
  engine = await tinyEngine({ ood: true, members: 5 }, gated(1e-9));
  ({ server, browser } = await serveWithBrowser(engine));
});

afterAll(() => closeAll(browser, server, engine));

describe('web page: input gate and uncertainty', () => {
  it('explains a refusal, offers "Analyse anyway", and then shows the result with the warning', async () => {
    const page = await browser.newPage({ viewport: { width: 1024, height: 900 }, reducedMotion: 'reduce' });
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    await page.goto(server.url);
    await page.setInputFiles('#file', { name: 'holiday.png', mimeType: 'image/png', buffer: await colourPhotoPng(120, 90, 2) });
    const refusal = page.locator('#rejected');
    await refusal.waitFor({ state: 'visible', timeout: 30_000 });
    await expect(page.locator('#rejected-title').textContent()).resolves.toBe('This does not look like a chest X-ray');
    await expect(page.locator('#rejected-reasons').textContent()).resolves.toMatch(/colour image .*chest X-rays are grayscale/);
    // the model's own score in words (the number stays in the API's JSON answer)
    await expect(page.locator('#rejected-score').textContent()).resolves.toMatch(
      /^The model's own check (also finds it (just|clearly|far) unlike the chest X-rays it was trained on|did not object)/,
    );
    await expect(page.locator('#result').isVisible()).resolves.toBe(false);
    await page.screenshot({ path: resolve(OUT, 'gate-refused.png'), fullPage: true });

    const forced = page.waitForResponse((r) => r.url().includes('/api/predict') && r.url().includes('force=true'));
    await page.getByRole('button', { name: 'Analyse anyway' }).click();
    expect((await forced).status()).toBe(200);
    await page.locator('#result').waitFor({ state: 'visible', timeout: 30_000 });
    await expect(refusal.isVisible()).resolves.toBe(false);
    await expect(page.locator('#warnings').textContent()).resolves.toMatch(/^Analysed anyway \(forced\)/);
    expect(pageErrors).toEqual([]);
    await page.close();
  });

  it('shows the uncertainty and the "refer to a clinician" warning prominently; a new image is not forced', async () => {
    const page = await browser.newPage({ viewport: { width: 1024, height: 900 }, reducedMotion: 'reduce' });
    await page.goto(server.url);
    const answered = page.waitForResponse((r) => r.url().includes('/api/predict'));
    await page.setInputFiles('#file', { name: 'chest.png', mimeType: 'image/png', buffer: texturedGrayPng(200, 240, 5, 0, 120) });
    const res = await answered;
    expect(res.url()).not.toContain('force=');
    const body = await res.json();
    expect(body.uncertain).toBe(true);
    await page.locator('#result').waitFor({ state: 'visible', timeout: 30_000 });
    await expect(page.locator('#uncertain').isVisible()).resolves.toBe(true);
    await expect(page.locator('#uncertain').textContent()).resolves.toMatch(/^Uncertain: refer to a clinician/);
    await expect(page.locator('#uncertainty').textContent()).resolves.toBe(
      `Uncertainty ${body.uncertainty.toFixed(3)} (disagreement of the model's ensemble, 0 to 0.5): above the model's cutoff.`,
    );
    await page.screenshot({ path: resolve(OUT, 'gate-uncertain.png'), fullPage: true });
    await page.close();
  });
});
