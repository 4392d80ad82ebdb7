/**
 * `pneumolens site` and `--site` end to end on the real engine with a tiny model (issue 20): the
 * profile written from a labelled folder, the refusals (too few, one class, unreadable files, a
 * profile for another model), predict / evaluate / info under a profile, and the server giving the
 * same answer as the CLI under the same profile.
 */
import { existsSync } from 'node:fs';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/cli/main.ts';
import { collect, Engine } from '../../src/pipeline.ts';
import { buildApp } from '../../src/server/app.ts';
import { caption, structuredReport } from '../../src/pacs/dicom-out.ts';
import { WorkerEngine } from '../../src/server/engine-worker.ts';
import { SITE_RULES, type SiteProfile } from '../../src/site/profile.ts';
import { siteFolder, tinySiteModel } from '../fixtures/site-data.ts';
import { texturedGrayPng } from '../fixtures/non-cxr.ts';
import { fileUpload } from '../fixtures/server-helpers.ts';

let card: string;
let plain: Engine;
let site: string; // a good site folder
let work: string;
const made: string[] = [];

/** Runs the CLI in-process (each command loads its own engine, as a user's would). */
async function cli(args: string[], env: Record<string, string> = {}) {
  let stdout = '';
  let stderr = '';
  const code = await run(args, {
    stdout: { write: (s: string) => ((stdout += s), true) },
    stderr: { write: (s: string) => ((stderr += s), true) },
    cwd: work,
    env: { PNEUMOLENS_MODEL: card, ...env },
  });
  return { code, stdout, stderr };
}

const n = SITE_RULES.minPerClass + 5;

beforeAll(async () => {
  card = tinySiteModel();
  plain = await Engine.load({ card, threads: 1 });
  site = await siteFolder(plain, { perClass: [n, n], seed: 3 });
  work = site;
  made.push(site);
}, 180_000);

afterAll(async () => {
  await plain?.dispose();
  for (const d of made) await rm(d, { recursive: true, force: true });
});

describe('pneumolens site', { timeout: 180_000 }, () => {
  it('writes a validated profile from a labelled folder, k-fold by patient, and a report', async () => {
    const r = await cli([
      'site',
      '.',
      '--out',
      'site.json',
      '--name',
      'Test Hospital',
      '--report',
      'site.html',
      '--quiet',
      '--bootstrap',
      '200',
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Site profile Test Hospital: validated on \d+ films here, AUC 0\.\d{3} \[0\.\d{3}, (0\.\d{3}|1\.000)\]/);
    const p = JSON.parse(await readFile(join(site, 'site.json'), 'utf8')) as SiteProfile;
    expect(p.model).toEqual({ name: plain.card.name, version: plain.card.version, sha256: plain.card.sha256 });
    expect(p.data.grouping).toBe('patient_id (labels.csv)');
    expect(p.data.groups).toBeLessThan(2 * n); // two films per patient
    expect(p.data.n_per_class).toEqual({ NORMAL: n, PNEUMONIA: n });
    expect(p.validated).toBe(true);
    expect(p.validation.auc_ci95![0]).toBeGreaterThanOrEqual(SITE_RULES.aucFloor);
    expect(p.scope.rule).toBe('site_quantile');
    // the scope widens to the site's films: the card declines some of them (threshold 0.3)
    expect(p.scope.rule === 'site_quantile' && p.scope.threshold).toBeGreaterThan(0.3);
    expect(p.validation.declined).toBeLessThan(0.1);
    const html = await readFile(join(site, 'site.html'), 'utf8');
    expect(html).toContain('<svg');
    expect(html).toMatch(/Before: the card&#39;s calibration|Before: the card's calibration/);
  });

  it('--site on predict: the profile calibration and threshold, and the answer names the profile', async () => {
    const p = JSON.parse(await readFile(join(site, 'site.json'), 'utf8')) as SiteProfile;
    const r = await cli(['predict', 'NORMAL', 'PNEUMONIA', '--site', 'site.json', '--json', '--quiet']);
    const out = JSON.parse(r.stdout);
    expect(out.site.statement).toMatch(/^Site profile Test Hospital: validated on/);
    const results = out.results as Array<{ file: string; probability: number; threshold: number; label: string; rejected?: boolean }>;
    expect(results.length).toBe(2 * n);
    const withoutSite = JSON.parse((await cli(['predict', 'NORMAL', 'PNEUMONIA', '--json', '--quiet'])).stdout);
    expect(withoutSite.site).toBeUndefined();
    const declinedByCard = (withoutSite.results as Array<{ rejected?: boolean }>).filter((x) => x.rejected).length;
    const declinedBySite = results.filter((x) => x.rejected).length;
    expect(declinedByCard).toBeGreaterThan(declinedBySite); // the card declines bright films the site validated
    // Every analysed result: sigmoid(logit / T + b) at the profile's threshold
    const analysed = await collect(
      plain.analyseStream(await Promise.all(results.map((x) => readFile(resolve(site, x.file)))), {
        cam: false,
        force: true,
      }),
    );
    let checked = 0;
    results.forEach((x, i) => {
      const o = analysed[i];
      if (o.status === 'failed' || typeof x.probability !== 'number') return;
      const prob = 1 / (1 + Math.exp(-(o.result.logit / p.calibration.temperature + p.calibration.bias)));
      expect(x.probability).toBeCloseTo(prob, 6);
      expect(x.threshold).toBe(p.calibration.threshold);
      expect(x.label).toBe(prob >= p.calibration.threshold ? 'PNEUMONIA' : 'NORMAL');
      checked++;
    });
    expect(checked).toBeGreaterThan(n);
  });

  it('evaluate --site and info --site name the profile; PNEUMOLENS_SITE does the same', async () => {
    const e = await cli(['evaluate', '.', '--site', 'site.json', '--json', '-', '--quiet', '--bootstrap', '100']);
    const ev = JSON.parse(e.stdout);
    const p = JSON.parse(await readFile(join(site, 'site.json'), 'utf8')) as SiteProfile;
    expect(ev.site.name).toBe('Test Hospital');
    expect(ev.threshold).toBe(p.calibration.threshold);
    const i = await cli(['info', '--site', 'site.json']);
    expect(i.code).toBe(0);
    expect(i.stdout).toMatch(/Site profile .*site\.json.*replaces the card's calibration/);
    expect(i.stdout).toMatch(/Status\s+Site profile Test Hospital: validated on/);
    const env = await cli(['info'], { PNEUMOLENS_SITE: join(site, 'site.json') });
    expect(env.stdout).toContain('Site profile Test Hospital: validated on');
    expect((await cli(['info'])).stdout).not.toContain('Site profile');
  });

  it('the server under the profile gives the same answer as the CLI', async () => {
    const engine = await Engine.load({ card, threads: 1, site: join(site, 'site.json') });
    const app = buildApp({ engine, maxConcurrent: 1 });
    try {
      const files = (await readdir(join(site, 'PNEUMONIA'))).slice(0, 4).map((f) => `PNEUMONIA/${f}`);
      const r = await cli(['predict', ...files, '--site', 'site.json', '--json', '--quiet', '--force']);
      const rows = JSON.parse(r.stdout).results;
      for (const [k, file] of files.entries()) {
        const { payload, headers } = fileUpload(await readFile(join(site, file)), 'x.png');
        const res = await app.inject({ method: 'POST', url: '/api/predict?cam=false&force=true', payload, headers });
        expect(res.statusCode).toBe(200);
        const body = res.json();
        expect(body.site.statement).toBe(JSON.parse(r.stdout).site.statement);
        expect(body.probability).toBeCloseTo(rows[k].probability, 10);
        expect(body.threshold).toBe(rows[k].threshold);
        expect(body.label).toBe(rows[k].label);
      }
      const model = (await app.inject({ method: 'GET', url: '/api/model' })).json();
      expect(model.site).toMatchObject({ name: 'Test Hospital', validated: true, n: 2 * n });
      expect(model.postprocessing.threshold).toBe(plain.card.postprocessing.threshold); // the card, as shipped
      const health = (await app.inject({ method: 'GET', url: '/api/health' })).json();
      expect(health.site).toEqual(model.site); // a monitor sees which profile the answers stand on
    } finally {
      await app.close();
      await engine.dispose();
    }
    const bare = buildApp({ engine: plain, maxConcurrent: 1 });
    expect((await bare.inject({ method: 'GET', url: '/api/model' })).json().site).toBeNull();
    expect((await bare.inject({ method: 'GET', url: '/api/health' })).json().site).toBeNull();
    await bare.close();
  });

  it('a film unlike the site films is declined under the profile, saying so; the PACS SC and SR name the profile', async () => {
    const engine = await Engine.load({ card, threads: 1, site: join(site, 'site.json') });
    try {
      const [bright] = await collect(engine.analyseStream([texturedGrayPng(40, 48, 77, 140, 250)], { cam: false }));
      expect(bright.status).toBe('rejected');
      expect(bright.status === 'rejected' && bright.error.code).toBe('outside_intended_use');
      expect(bright.status === 'rejected' && bright.error.message).toMatch(
        /unlike the films site profile "Test Hospital" was validated on/,
      );
      const film = await readFile(join(site, 'NORMAL', (await readdir(join(site, 'NORMAL')))[0]));
      const result = await engine.analyse(film, { cam: false, force: true });
      expect(caption({ kind: 'analysed', result })).toContain(engine.site!.statement);
      const sr = structuredReport(
        { SOPInstanceUID: '1.2.3', SOPClassUID: '1.2.840.10008.5.1.4.1.1.1.1' },
        { kind: 'analysed', result },
        { withSc: false },
      );
      expect(sr.includes(Buffer.from(engine.site!.statement))).toBe(true);
    } finally {
      await engine.dispose();
    }
  });

  it('the server worker threads load the profile, and refuse one for another model at start-up', async () => {
    const engine = await WorkerEngine.load({ card, site: join(site, 'site.json'), threads: 1, workers: 1 });
    try {
      expect(engine.site?.name).toBe('Test Hospital');
      const film = await readFile(join(site, 'PNEUMONIA', (await readdir(join(site, 'PNEUMONIA')))[0]));
      const viaThread = await engine.analyse(film, { cam: false, force: true });
      const local = await Engine.load({ card, threads: 1, site: join(site, 'site.json') });
      const here = await local.analyse(film, { cam: false, force: true });
      await local.dispose();
      expect(viaThread.site).toEqual(here.site);
      expect(viaThread.probability).toBeCloseTo(here.probability, 10);
    } finally {
      await engine.dispose();
    }
    const other = tinySiteModel(false);
    await expect(WorkerEngine.load({ card: other, site: join(site, 'site.json'), threads: 1, workers: 1 })).rejects.toThrow(
      /never applies to another model|does not have/,
    );
  });

  it('refuses a profile made with another model, at start-up', async () => {
    const other = tinySiteModel();
    await writeFile(other, (await readFile(other, 'utf8')).replace('"version": "0.0.1"', '"version": "0.0.2"'));
    const r = await cli(['predict', 'NORMAL', '--site', 'site.json', '--quiet'], { PNEUMOLENS_MODEL: other });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /was made with model tiny-test-model 0\.0\.1 .* loaded model is tiny-test-model 0\.0\.2 .*never applies to another model/,
    );
    await expect(Engine.load({ card: other, site: join(site, 'site.json') })).rejects.toThrow(/never applies to another model/);
    const bad = await cli(['predict', 'NORMAL', '--site', 'nope.json', '--quiet']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/Site profile .*nope\.json cannot be read/);
  });
});

describe('pneumolens site refusals: nothing written', { timeout: 180_000 }, () => {
  const refused = async (dir: string, pattern: RegExp) => {
    const out = join(dir, 'p.json');
    const r = await cli(['site', dir, '--out', out, '--quiet']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(pattern);
    expect(existsSync(out)).toBe(false);
    expect((await readdir(dir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    return r;
  };

  it('too few films in a class', async () => {
    const dir = await siteFolder(plain, { perClass: [SITE_RULES.minPerClass - 1, n], seed: 4 });
    made.push(dir);
    await refused(
      dir,
      new RegExp(`too few films: ${SITE_RULES.minPerClass - 1} NORMAL; a profile needs at least ${SITE_RULES.minPerClass} per class`),
    );
  });

  it('one class only', async () => {
    const dir = await siteFolder(plain, { perClass: [n, n], seed: 5 });
    made.push(dir);
    for (const f of await readdir(join(dir, 'PNEUMONIA'))) await rm(join(dir, 'PNEUMONIA', f));
    await refused(dir, /one class only: no images .* for PNEUMONIA/);
  });

  it('unreadable files, listed', async () => {
    const dir = await siteFolder(plain, { perClass: [n, n], seed: 6 });
    made.push(dir);
    await writeFile(join(dir, 'NORMAL', 'broken.png'), Buffer.from('\x89PNG\r\n\x1a\nnot really'));
    const r = await refused(dir, /1 file\(s\) could not be read or analysed/);
    expect(r.stderr).toContain('NORMAL/broken.png');
  });

  it('an AUC below the floor: the profile is written, marked not validated, and keeps the card scope', async () => {
    const dir = await siteFolder(plain, { perClass: [n, n], seed: 7, noise: 50 });
    made.push(dir);
    const out = join(dir, 'p.json');
    const r = await cli(['site', dir, '--out', out, '--quiet', '--bootstrap', '200']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/NOT validated: .*below the floor 0\.75/);
    const p = JSON.parse(await readFile(out, 'utf8')) as SiteProfile;
    expect(p.validated).toBe(false);
    const engine = await Engine.load({ card, threads: 1, site: out });
    try {
      expect(engine.site?.statement).toMatch(/NOT validated/);
      expect(engine.applied.gate?.intended_use?.threshold).toBe(0.3); // the site's films stay declined
    } finally {
      await engine.dispose();
    }
  });

  it('a model without an intended-use head: the profile records no scope, and says so', async () => {
    const noHead = tinySiteModel(false);
    const r = await cli(['site', '.', '--out', 'nohead.json', '--quiet', '--bootstrap', '200'], { PNEUMOLENS_MODEL: noHead });
    expect(r.code).toBe(0);
    const p = JSON.parse(await readFile(join(site, 'nohead.json'), 'utf8')) as SiteProfile;
    expect(p.scope).toMatchObject({ rule: 'none' });
    expect(p.scope.rule === 'none' && p.scope.note).toMatch(/no intended-use head/);
    expect(r.stdout).toMatch(/Scope\s+Model tiny-test-model has no intended-use head/);
  });

  it('DICOM films without labels.csv: grouped by their Patient ID, which appears nowhere', async () => {
    const dir = await siteFolder(plain, { perClass: [n, n], seed: 8, dicom: true, patients: false });
    made.push(dir);
    const out = join(dir, 'p.json');
    const r = await cli(['site', dir, '--out', out, '--quiet', '--bootstrap', '200', '--report', join(dir, 'r.html')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const text = await readFile(out, 'utf8');
    const p = JSON.parse(text) as SiteProfile;
    expect(p.data.grouping).toBe('PatientID (DICOM)');
    expect(p.data.groups).toBe(n + 1); // ceil(n / 2) patients per class
    for (const shown of [text, r.stdout, await readFile(join(dir, 'r.html'), 'utf8')]) expect(shown).not.toContain('PATIENT-ID');
  });

  it('dicomPatientKey: the hash of the Patient ID, null without one or for other formats', async () => {
    const { dicomPatientKey } = await import('../../src/image/dicom.ts');
    const { createHash } = await import('node:crypto');
    const { grayDicom } = await import('../fixtures/make-dicom.ts');
    const dcm = grayDicom(4, 4, [1, 2, 3, 4]);
    expect(dicomPatientKey(dcm)).toBe(createHash('sha256').update('PATIENT-ID-12345').digest('hex'));
    expect(dicomPatientKey(texturedGrayPng(8, 8, 1))).toBeNull();
    const noId = Buffer.from(dcm);
    noId.fill(0x20, noId.indexOf('PATIENT-ID-12345'), noId.indexOf('PATIENT-ID-12345') + 16); // blank (spaces)
    expect(dicomPatientKey(noId)).toBeNull();
  });

  it('usage errors: no --out, a bad policy', async () => {
    expect((await cli(['site', '.'])).code).toBe(2);
    const r = await cli(['site', '.', '--out', 'x.json', '--policy', 'best']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown threshold policy 'best'/);
  });
});
