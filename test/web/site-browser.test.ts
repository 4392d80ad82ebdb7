/**
 * The page names the site profile the server decides with (issue 20): the real server with a tiny
 * model under a profile made by `pneumolens site`, Chromium (test/fixtures/browser.ts) on 127.0.0.1.
 */
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/cli/main.ts';
import { Engine } from '../../src/pipeline.ts';
import { serve, type RunningServer } from '../../src/server/start.ts';
import { SITE_RULES, type SiteProfile } from '../../src/site/profile.ts';
import { launchChromium, SCREENSHOTS } from '../fixtures/browser.ts';
import { closeAll } from '../fixtures/app.ts';
import { siteFolder, tinySiteModel } from '../fixtures/site-data.ts';

let dir: string;
let engine: Engine | undefined;
let bare: Engine | undefined;
let server: RunningServer | undefined;
let bareServer: RunningServer | undefined;
let browser: Browser;
let profile: SiteProfile;

beforeAll(async () => {
  const card = tinySiteModel();
  bare = await Engine.load({ card, threads: 1 });
  dir = await siteFolder(bare, { perClass: [SITE_RULES.minPerClass + 2, SITE_RULES.minPerClass + 2], seed: 9 });
  const quiet = { write: () => true };
  const code = await run(['site', dir, '--out', join(dir, 'site.json'), '--name', 'Browser General', '--quiet', '--bootstrap', '200'], {
    stdout: quiet,
    stderr: quiet,
    cwd: dir,
    env: { PNEUMOLENS_MODEL: card },
  });
  if (code !== 0) throw new Error(`pneumolens site exited ${code}`);
  profile = JSON.parse(await readFile(join(dir, 'site.json'), 'utf8')) as SiteProfile;
  engine = await Engine.load({ card, threads: 1, site: join(dir, 'site.json') });
  server = await serve({ engine, port: 0, host: '127.0.0.1', maxConcurrent: 1 });
  bareServer = await serve({ engine: bare, port: 0, host: '127.0.0.1', maxConcurrent: 1 });
  browser = await launchChromium();
}, 120_000);

afterAll(async () => {
  await closeAll(browser, server, bareServer, engine, bare);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('site profile badge', { timeout: 120_000 }, () => {
  it('shows "Site profile NAME: validated on N films here, AUC x [lo, hi]" under a profile, nothing without one', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(server!.url);
    const badge = page.locator('#site-badge');
    await badge.waitFor({ state: 'visible', timeout: 20_000 });
    const text = (await badge.textContent()) ?? '';
    const n = Object.values(profile.data.n_per_class).reduce((a, b) => a + b, 0);
    const [lo, hi] = profile.validation.auc_ci95!;
    expect(text).toBe(
      `Site profile Browser General: validated on ${n} films here, AUC ${profile.validation.auc!.toFixed(3)} [${lo.toFixed(3)}, ${hi.toFixed(3)}]`,
    );
    await page.screenshot({ path: join(SCREENSHOTS, 'site-badge.png') });
    expect(errors).toEqual([]);

    await page.goto(bareServer!.url);
    await page.locator('#model-card .model-name').waitFor({ timeout: 20_000 });
    expect(await page.locator('#site-badge').isHidden()).toBe(true);
    await page.close();
  });
});
