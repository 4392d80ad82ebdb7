/**
 * The page tells the truth (issue 19): who the model is for, declines in words, no stale result
 * under a new input's error, a probability bar whose colour is the probability's, one number format,
 * per-source counts, card text without JSON paths, the status line clear of the sticky banner on a
 * phone, and a Grad-CAM colour legend that matches the server's colour maps and says its scale.
 *
 * Real Chromium (test/fixtures/browser.ts) on the real server and engine with a tiny gated model (its card
 * is written here, so nothing depends on the shipped model's numbers). PNEUMOLENS_TEST_WEB_ROOT
 * serves another copy of web/ (e.g. `git show HEAD~1:web/...`), to see these tests fail on it.
 */
import { resolve } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MIN_PER_CLASS_FOR_CI } from '../../src/eval/metrics.ts';
import { colormapLut } from '../../src/explain/colormaps.ts';
import { Engine } from '../../src/pipeline.ts';
import { serve, type RunningServer } from '../../src/server/start.ts';
import { launchChromium, SCREENSHOTS } from '../fixtures/browser.ts';
import { writeTinyModel } from '../fixtures/make-onnx.ts';
import { colourPhotoPng, texturedGrayPng } from '../fixtures/non-cxr.ts';

const POPULATION = 'frontal chest X-rays of test children aged 2-3 from the test hospital';

let engine: Engine;
let server: RunningServer;
let browser: Browser;
/** Accepted (dark: a low probability with this card's bias), declined as outside the intended use (bright). */
let dark: Buffer;
let bright: Buffer;

beforeAll(async () => {
  // scope = mean of the normalised input: a bright film is outside the intended use; the model's
  // not-a-chest-X-ray score never refuses (threshold 100), the image checks do (a colour photo).
  const { cardPath } = writeTinyModel({ size: 32, channels: 4, stride: 4, ood: true, scope: true }, (c) => {
    c.postprocessing = { temperature: 1.5, bias: -3, threshold: 0.5, threshold_policy: 'fixed' };
    c.gate = { output: 'ood', threshold: 100, intended_use: { output: 'scope', threshold: 0.5, population: POPULATION } };
    c.metrics = {
      validation: {
        n: 100,
        auc: 0.9,
        confusion: { tp: 50, fn: 10, tn: 35, fp: 5 },
        split: 'by patient, seed 0 (70 patients, 60 NORMAL / 90 PNEUMONIA images)',
      },
      by_source: [
        // at the stated sample size (an interval is shown) and one image below it (said not informative)
        {
          source: 'Test hospital',
          n: 100,
          n_normal: MIN_PER_CLASS_FOR_CI,
          n_pneumonia: 100 - MIN_PER_CLASS_FOR_CI,
          auc: 0.9,
          auc_ci: [0.85, 0.95],
          sensitivity: 0.8,
          specificity: 0.9,
          ece: 0.05,
          declined_outside_intended_use: 0.005,
        },
        {
          source: 'Other hospital',
          n: 80,
          n_normal: 80 - MIN_PER_CLASS_FOR_CI + 1,
          n_pneumonia: MIN_PER_CLASS_FOR_CI - 1,
          auc: 0.7,
          auc_ci: [0.6, 0.8],
          sensitivity: 0.6,
          specificity: 0.7,
          ece: 0.2,
          declined_outside_intended_use: 0.9,
        },
      ],
    };
    c.intended_use = 'Tests only (their AUC is in metrics.by_source).';
    c.limitations = ['A small set (see the confidence intervals in metrics.by_source).'];
  });
  engine = await Engine.load({ card: cardPath, threads: 1 });
  const webRoot = process.env.PNEUMOLENS_TEST_WEB_ROOT;
  server = await serve({ engine, port: 0, host: '127.0.0.1', maxConcurrent: 1, ...(webRoot ? { webRoot } : {}) });
  browser = await launchChromium();
  dark = texturedGrayPng(64, 72, 3, 0, 60);
  bright = texturedGrayPng(64, 72, 6, 140, 250);
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
  await engine?.dispose();
});

async function open(viewport = { width: 1024, height: 900 }, phone = false): Promise<Page> {
  const page = await browser.newPage({ viewport, reducedMotion: 'reduce', ...(phone ? { isMobile: true, hasTouch: true } : {}) });
  await page.goto(server.url);
  await page.locator('#model-card .model-name').waitFor();
  return page;
}

async function upload(page: Page, name: string, buffer: Buffer, mimeType = 'image/png'): Promise<void> {
  await page.setInputFiles('#file', { name, mimeType, buffer });
}

/** RGB pixels of an element's screenshot. */
async function pixels(page: Page, selector: string): Promise<{ at: (x: number, y: number) => number[]; width: number; height: number }> {
  const png = await page.locator(selector).screenshot();
  const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const at = (x: number, y: number) => {
    const o = (Math.round(y) * info.width + Math.round(x)) * 3;
    return [data[o], data[o + 1], data[o + 2]];
  };
  return { at, width: info.width, height: info.height };
}

const distance = (a: number[], b: number[]) => Math.max(...a.map((v, i) => Math.abs(v - b[i])));

describe('the page tells the truth', () => {
  it('says who the model is for in the header, from the card, before any input', async () => {
    const page = await open();
    const card = await (await page.request.get(`${server.url}/api/model`)).json();
    expect(card.population).toBe(POPULATION);
    await expect(page.locator('header #population').textContent()).resolves.toBe(
      `Validated only for ${POPULATION}. Results on other patients are not validated.`,
    );
    // a card that says nothing about it: the header says so instead of inventing a population
    await page.route('**/api/model', async (route) => route.fulfill({ json: { ...card, population: null } }));
    await page.reload();
    await page.locator('#model-card .model-name').waitFor();
    await expect(page.locator('#population').textContent()).resolves.toMatch(/does not say which population/);
    await page.close();
  });

  it('a decline as outside the intended use is explained in words, with the population and no raw score', async () => {
    const page = await open();
    await upload(page, 'bright.png', bright);
    await page.locator('#rejected').waitFor({ state: 'visible', timeout: 30_000 });
    await expect(page.locator('#rejected-title').textContent()).resolves.toBe("Outside the model's intended use");
    await expect(page.locator('#rejected-text').textContent()).resolves.toContain(`validated only for ${POPULATION}`);
    const score = (await page.locator('#rejected-score').textContent()) ?? '';
    expect(score).not.toMatch(/no gate score/);
    expect(score).toMatch(/intended-use check puts this film (just|clearly|far) outside that population/);
    const words = (await page.locator('#rejected').textContent()) ?? '';
    expect(words).toMatch(/unlike the population the model is validated for/);
    expect(words).not.toMatch(/score [-\d]|\d\.\d\d|e\+\d/); // the numbers stay in the API's JSON answer
    await page.screenshot({ path: resolve(SCREENSHOTS, 'web-truth-declined.png'), fullPage: true });

    // not a chest X-ray: the image checks refused it, and the model's own score did not object
    await upload(page, 'photo.png', await colourPhotoPng(120, 90, 2));
    await page.waitForFunction(() => document.getElementById('rejected-title')?.textContent === 'This does not look like a chest X-ray');
    await expect(page.locator('#rejected-score').textContent()).resolves.toBe(
      "The model's own check did not object; the image checks above refused it.",
    );
    await page.close();
  });

  it('a new input clears the old result: a 415 and a refused URL leave no result of the previous image', async () => {
    const page = await open();
    await upload(page, 'dark.png', dark);
    await page.locator('#result').waitFor({ state: 'visible', timeout: 30_000 });
    await upload(page, 'notes.png', Buffer.from('this is not an image'));
    await page.locator('#error').waitFor({ state: 'visible' });
    await expect(page.locator('#error').textContent()).resolves.toMatch(/415/);
    await expect(page.locator('#result').isVisible()).resolves.toBe(false);

    await upload(page, 'dark.png', dark);
    await page.locator('#result').waitFor({ state: 'visible', timeout: 30_000 });
    await page.fill('#url', 'http://127.0.0.1:9/xray.png'); // loopback: refused by the server
    await page.click('#url-go');
    await page.locator('#error').waitFor({ state: 'visible' });
    await expect(page.locator('#result').isVisible()).resolves.toBe(false);
    await expect(page.locator('#preview-note').textContent()).resolves.toMatch(/URL/);

    // and a refusal's card does not stay under the next input's error either
    await upload(page, 'bright.png', bright);
    await page.locator('#rejected').waitFor({ state: 'visible', timeout: 30_000 });
    await upload(page, 'notes.png', Buffer.from('still not an image'));
    await page.locator('#error').waitFor({ state: 'visible' });
    await expect(page.locator('#rejected').isVisible()).resolves.toBe(false);
    await page.close();
  });

  it('the probability bar is coloured by the probability: a low one ends green, and every probability reads in %', async () => {
    const page = await open();
    await upload(page, 'dark.png', dark);
    await page.locator('#result').waitFor({ state: 'visible', timeout: 30_000 });
    const p = Number(((await page.locator('#probability').textContent()) ?? '').replace(' %', '')) / 100;
    expect(p).toBeLessThan(0.3); // this card's bias makes a dark film a low probability
    const bar = await pixels(page, '#bar');
    const inner = bar.width - 2; // 1 px border each side
    const x = 1 + p * inner - 5;
    const t = (x - 1) / inner;
    const [green, red] = [
      [0x3f, 0x8f, 0x5c],
      [0xc0, 0x39, 0x2b],
    ];
    const expected = green.map((g, i) => g + (red[i] - g) * t);
    expect(distance(bar.at(x, bar.height / 2), expected)).toBeLessThan(25);

    // one format: the probability, the threshold and the status line all in %
    await expect(page.locator('#threshold-value').textContent()).resolves.toBe('50.0 %');
    await expect(page.locator('#status').textContent()).resolves.toMatch(/probability of pneumonia \d+\.\d % \(threshold 50\.0 %\)/);
    await expect(page.locator('.bar-scale').textContent()).resolves.toBe('0 %50 %100 %');
    const card = (await page.locator('#model-card').textContent()) ?? '';
    expect(card).toMatch(/Decision threshold 50\.0 % /);
    await expect(page.getByRole('row', { name: /^Other hospital/ }).textContent()).resolves.toMatch(/90\.0 %$/);
    await page.close();
  });

  it('the card: per-source counts under n, no pooled totals, no JSON paths in its text', async () => {
    const page = await open();
    const validation = (await page.getByRole('region', { name: 'Training hospital: validation patients' }).textContent()) ?? '';
    expect(validation).toMatch(/n = 100 images \(40 NORMAL, 60 PNEUMONIA\) of patients held out/);
    expect(validation).toMatch(/Split: by patient, seed 0\./);
    expect(validation).not.toMatch(/60 NORMAL \/ 90 PNEUMONIA/);
    const box = (await page.locator('#model-card').textContent()) ?? '';
    expect(box).not.toMatch(/metrics\.by_source|by_source/);
    expect(box).toMatch(/see the confidence intervals in the table "Other hospitals and sources" above/);
    // an interval below the stated sample size (src/eval/metrics.ts MIN_PER_CLASS_FOR_CI) is said not informative
    await expect(page.getByRole('row', { name: /^Test hospital/ }).textContent()).resolves.toMatch(/0\.900\(0\.850–0\.950\)/);
    await expect(page.getByRole('row', { name: /^Other hospital/ }).textContent()).resolves.toMatch(
      new RegExp(`0\\.700\\(interval not informative: only ${MIN_PER_CLASS_FOR_CI - 1} PNEUMONIA images\\)`),
    );
    await page.close();
  });

  it('phone: after the scroll to the result the sticky banner covers neither the status line nor the heading', async () => {
    const page = await open({ width: 390, height: 844 }, true);
    await upload(page, 'dark.png', dark);
    await page.locator('#result').waitFor({ state: 'visible', timeout: 30_000 });
    await page.waitForFunction(() => window.scrollY > 0);
    const banner = (await page.locator('.banner').boundingBox())!;
    const status = (await page.locator('#status').boundingBox())!;
    const heading = (await page.locator('#result-title').boundingBox())!;
    expect(banner.y).toBe(0);
    expect(status.y).toBeGreaterThanOrEqual(banner.y + banner.height);
    expect(heading.y).toBeGreaterThanOrEqual(status.y + status.height);
    await page.screenshot({ path: resolve(SCREENSHOTS, 'web-truth-phone-status.png') });
    await page.close();
  });

  it('Grad-CAM legend: the colour map in use (as the server renders it), low to high evidence, and its scale', async () => {
    const page = await open();
    await upload(page, 'dark.png', dark);
    await page.locator('#result').waitFor({ state: 'visible', timeout: 30_000 });
    const legend = page.locator('#cam-legend-text');
    await expect(legend.textContent()).resolves.toMatch(/low → high evidence for pneumonia \(Jet colours\)/);
    await expect(legend.textContent()).resolves.toMatch(/^.*Per-film scale/); // this card has no gradcam.display_scale
    for (const map of ['jet', 'viridis'] as const) {
      if (map !== 'jet') {
        await page.locator('.options summary').click();
        await page.selectOption('#colormap', map);
        await page.waitForFunction(() => document.getElementById('cam-legend-text')?.textContent?.includes('Viridis colours'));
      }
      const bar = await pixels(page, '#cam-legend-bar');
      const lut = colormapLut(map);
      for (const t of [0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95]) {
        const i = Math.round(t * 255) * 3;
        expect(distance(bar.at(1 + t * (bar.width - 2), bar.height / 2), [lut[i], lut[i + 1], lut[i + 2]]), `${map} at ${t}`).toBeLessThan(
          12,
        );
      }
    }
    // a card with a fixed display scale: the legend says colours compare across films
    await page.route('**/api/model', async (route) => {
      const card = await (await route.fetch()).json();
      card.gradcam.display_scale = 0.8;
      await route.fulfill({ json: card });
    });
    await page.reload();
    await page.locator('#model-card .model-name').waitFor();
    await upload(page, 'dark.png', dark);
    await page.locator('#result').waitFor({ state: 'visible', timeout: 30_000 });
    await expect(legend.textContent()).resolves.toMatch(/Fixed scale: the same colour means the same evidence on every film/);
    await page.close();
  });
});

describe('a decline by the gate score (a model without an intended-use head, as 3.0.0)', () => {
  let gated: Engine;
  let gatedServer: RunningServer;

  beforeAll(async () => {
    // ood = mean of the normalised input: a bright film is unlike the films the model was fitted on
    const { cardPath } = writeTinyModel({ size: 32, channels: 4, stride: 4, ood: true }, (c) => {
      c.gate = { output: 'ood', threshold: 0.5 };
      c.intended_use = 'Tests. Validated population: test films of one hospital; nothing else.';
    });
    gated = await Engine.load({ card: cardPath, threads: 1 });
    const webRoot = process.env.PNEUMOLENS_TEST_WEB_ROOT;
    gatedServer = await serve({ engine: gated, port: 0, host: '127.0.0.1', maxConcurrent: 1, ...(webRoot ? { webRoot } : {}) });
  }, 60_000);

  afterAll(async () => {
    await gatedServer?.close();
    await gated?.dispose();
  });

  it("says in words what declined it, from the answer's basis, and who the model is for", async () => {
    const page = await browser.newPage({ viewport: { width: 1024, height: 900 }, reducedMotion: 'reduce' });
    await page.goto(gatedServer.url);
    await page.locator('#model-card .model-name').waitFor();
    const answered = page.waitForResponse((r) => r.url().includes('/api/predict'));
    await upload(page, 'bright.png', bright);
    const body = await (await answered).json();
    expect(body.error.score).toBeGreaterThan(0.5);
    await page.locator('#rejected').waitFor({ state: 'visible', timeout: 30_000 });
    const score = (await page.locator('#rejected-score').textContent()) ?? '';
    expect(score).not.toMatch(/no check of its own|could not score/);
    if (body.error.code === 'outside_intended_use') {
      expect(body.error.basis).toBe('gate_score');
      expect(score).toMatch(
        /^The model's own check finds it (just|clearly|far) unlike the chest X-rays it was trained and validated on\.$/,
      );
      await expect(page.locator('#rejected-text').textContent()).resolves.toContain('validated only for test films of one hospital');
    } else {
      expect(score).toMatch(/^The model's own check also finds it (just|clearly|far) unlike the chest X-rays it was trained on\.$/);
    }
    expect((await page.locator('#rejected').textContent()) ?? '').not.toMatch(/\d\.\d\d|e\+\d|\d+ times its limit/);
    await page.close();
  });
});
