/**
 * Site profiles, the numeric core (src/site/fit.ts) and the profile file (src/site/profile.ts,
 * apply.ts): Platt fit in the card's form, threshold policies, folds by group, the scope rule with
 * and without an intended-use head, and k-fold numbers that differ from the in-sample ones.
 */
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '../../src/eval/metrics.ts';
import type { ModelCard } from '../../src/model/card.ts';
import { postprocess } from '../../src/model/postprocess.ts';
import { applySite } from '../../src/site/apply.ts';
import { assignFolds, fitPlatt, fitScope, fitSite, policyThreshold, SiteDataError, type SiteFilm } from '../../src/site/fit.ts';
import { parseCsv } from '../../src/site/groups.ts';
import { checkProfileFor, PROFILE_SCHEMA, validateProfile, type SiteProfile } from '../../src/site/profile.ts';

const CARD = {
  name: 'm',
  version: '1.0.0',
  sha256: 'a'.repeat(64),
  labels: ['NORMAL', 'PNEUMONIA'] as [string, string],
  postprocessing: { temperature: 2, bias: 0.5, threshold: 0.6 },
  gate: { output: 'ood', threshold: 1, intended_use: { output: 'scope', threshold: 1 } },
};
const NO_HEAD = { ...CARD, gate: { output: 'ood', threshold: 1 } };

/** Standard normal draws from a seeded uniform. */
function normal(rand: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

/** Films whose labels follow p = sigmoid(logit / T + b) exactly: Platt must recover T and b. */
function calibratedFilms(n: number, T: number, b: number, seed: number): SiteFilm[] {
  const rand = mulberry32(seed);
  const z = normal(rand);
  return Array.from({ length: n }, (_, i) => {
    const logit = 3 * z();
    const p = 1 / (1 + Math.exp(-(logit / T + b)));
    return { group: `p${i}`, truth: rand() < p ? 1 : 0, logit, scope: 0.2 + rand() * 0.5 };
  });
}

describe('fitPlatt', () => {
  it('recovers the temperature and bias of the card form from films drawn with them', () => {
    const films = calibratedFilms(20_000, 1.6, -0.7, 3);
    const { slope, bias } = fitPlatt(
      films.map((f) => f.logit),
      films.map((f) => f.truth),
    );
    expect(1 / slope).toBeCloseTo(1.6, 1);
    expect(bias).toBeCloseTo(-0.7, 1);
  });

  it('stays finite on separable films and refuses one class', () => {
    const { slope, bias } = fitPlatt([-2, -1, 1, 2], [0, 0, 1, 1]);
    expect(Number.isFinite(slope) && slope > 0 && Number.isFinite(bias)).toBe(true);
    expect(() => fitPlatt([1, 2], [1, 1])).toThrow(SiteDataError);
  });
});

describe('policyThreshold', () => {
  const rand = mulberry32(9);
  const y = Array.from({ length: 400 }, (_, i) => (i < 200 ? 0 : 1));
  const p = y.map((t) => Math.min(1, Math.max(0, 0.35 + 0.3 * t + 0.25 * (rand() - 0.5))));
  const rate = (t: number, cls: 0 | 1) => y.filter((v, i) => v === cls && p[i] >= t === (cls === 1)).length / 200;

  it('sensitivity:X is the highest threshold that reaches X; specificity:X the lowest that keeps X', () => {
    const ts = policyThreshold('sensitivity:0.95', y, p);
    expect(rate(ts, 1)).toBeGreaterThanOrEqual(0.95);
    expect(rate(ts + 1e-9, 1)).toBeLessThan(0.95);
    const tp = policyThreshold('specificity:0.9', y, p);
    expect(rate(tp, 0)).toBeGreaterThanOrEqual(0.9);
  });

  it('balanced maximises the smaller of sensitivity and specificity; unknown policies are refused', () => {
    const t = policyThreshold('balanced', y, p);
    const m = Math.min(rate(t, 1), rate(t, 0));
    for (const other of [0.3, 0.4, 0.5, 0.6]) expect(m).toBeGreaterThanOrEqual(Math.min(rate(other, 1), rate(other, 0)));
    expect(() => policyThreshold('sensitivity:1.5', y, p)).toThrow(/unknown threshold policy/);
    expect(() => policyThreshold('best', y, p)).toThrow(/unknown threshold policy/);
  });
});

describe('folds and scope', () => {
  it('puts every group in exactly one fold, the same for the same seed', () => {
    const groups = Array.from({ length: 50 }, (_, i) => `g${i % 17}`);
    const a = assignFolds(groups, 5, 1);
    expect(a.size).toBe(17);
    expect(new Set(a.values())).toEqual(new Set([0, 1, 2, 3, 4]));
    expect([...assignFolds(groups, 5, 1)]).toEqual([...a]);
    expect([...assignFolds(groups, 5, 2)]).not.toEqual([...a]);
  });

  it('with an intended-use head: the site quantile, never below the card threshold', () => {
    const scores = Array.from({ length: 101 }, (_, i) => 0.5 + i * 0.1); // 0.5 .. 10.5
    const s = fitScope(scores, CARD);
    expect(s).toMatchObject({ rule: 'site_quantile', output: 'scope', quantile: 0.99, card_threshold: 1 });
    expect(s.rule === 'site_quantile' && s.threshold).toBeCloseTo(10.4, 6);
    const low = fitScope([0.1, 0.2, 0.3], CARD);
    expect(low.rule === 'site_quantile' && low.threshold).toBe(1);
  });

  it('without one: nothing to record, and the profile says so', () => {
    const s = fitScope([null, null], NO_HEAD);
    expect(s.rule).toBe('none');
    expect(s.rule === 'none' && s.note).toMatch(/no intended-use head/);
  });
});

describe('fitSite', () => {
  it('k-fold numbers differ from the in-sample ones on films whose scores carry no signal', () => {
    // Scores unrelated to the labels: in-sample, the threshold and the calibration are tuned to
    // the noise and look better than chance; judged on folds they were not fitted on, they are not.
    let optimismJ = 0;
    let optimismEce = 0;
    const seeds = [11, 12, 13, 14, 15, 16, 17, 18];
    for (const seed of seeds) {
      const rand = mulberry32(seed);
      const films: SiteFilm[] = Array.from({ length: 100 }, (_, i) => ({
        group: `p${i}`,
        truth: i % 2 ? 1 : 0,
        logit: rand() * 4 - 2,
        scope: null,
      }));
      const fit = fitSite(films, NO_HEAD, 0, { bootstrap: 200, policy: 'youden' });
      optimismJ += fit.in_sample.sensitivity! + fit.in_sample.specificity! - (fit.validation.sensitivity! + fit.validation.specificity!);
      optimismEce += fit.validation.ece_after! - fit.in_sample.ece_after!;
      expect(fit.validation.auc_ci95![0]).toBeLessThan(0.6);
    }
    expect(optimismJ / seeds.length).toBeGreaterThan(0.05);
    expect(optimismEce / seeds.length).toBeGreaterThan(0.04);
  });

  it('on well-separated films: a calibrated estimate, declined share from the fold scope rules', () => {
    const films = calibratedFilms(600, 0.8, 0.3, 21);
    const fit = fitSite(films, CARD, 10, { bootstrap: 200 });
    expect(fit.validation.auc!).toBeGreaterThan(0.85);
    expect(fit.validation.ece_after!).toBeLessThan(0.06);
    expect(fit.calibration.temperature).toBeCloseTo(0.8, 0);
    expect(fit.validation.declined).toBeGreaterThanOrEqual(10 / 610);
    expect(fit.validation.declined).toBeLessThan(0.05);
    expect(fit.inverted).toBe(false);
    expect(fit.validation.n + Math.round(fit.validation.declined * 610)).toBe(610 - 0);
  });

  it("the AUC's CI resamples patients: four films of each patient do not narrow it as four patients would", () => {
    const patients = calibratedFilms(150, 1, 0, 5);
    const four = patients.flatMap((f) => [f, f, f, f]);
    const width = (fit: ReturnType<typeof fitSite>): number => fit.validation.auc_ci95![1] - fit.validation.auc_ci95![0];
    const byPatient = fitSite(four, NO_HEAD, 0, { bootstrap: 300 });
    const asIfFilesWerePatients = fitSite(
      four.map((f, i) => ({ ...f, group: `f${i}` })),
      NO_HEAD,
      0,
      { bootstrap: 300 },
    );
    expect(width(byPatient)).toBeGreaterThan(1.5 * width(asIfFilesWerePatients));
    expect(byPatient.validation.method).toMatch(/bootstrap of the groups/);
  });

  it('refuses too few groups for the folds', () => {
    const films = calibratedFilms(30, 1, 0, 1).map((f, i) => ({ ...f, group: `p${i % 3}` }));
    expect(() => fitSite(films, CARD)).toThrow(/too few for 5 folds/);
  });
});

function profile(over: Partial<SiteProfile> = {}): SiteProfile {
  return {
    schema: PROFILE_SCHEMA,
    schema_version: 1,
    site: { name: 'St Elsewhere', created: '2026-12-02T00:00:00.000Z' },
    model: { name: CARD.name, version: CARD.version, sha256: CARD.sha256 },
    data: {
      n: 120,
      n_per_class: { NORMAL: 60, PNEUMONIA: 58 },
      not_chest_xray: 2,
      groups: 90,
      grouping: 'file',
      files_sha256: 'f'.repeat(64),
    },
    validation: {
      method: 'k-fold',
      folds: 5,
      seed: 42,
      bootstrap: 1000,
      n: 116,
      auc: 0.9,
      auc_ci95: [0.85, 0.94],
      sensitivity: 0.8,
      specificity: 0.82,
      ppv: 0.8,
      npv: 0.82,
      ece_before: 0.2,
      ece_after: 0.04,
      declined: 0.03,
    },
    in_sample: { sensitivity: 0.85, specificity: 0.86, ece_after: 0.02 },
    validated: true,
    validation_rule: 'rule',
    calibration: { temperature: 0.7, bias: -0.2, threshold: 0.42, policy: 'youden' },
    scope: {
      rule: 'site_quantile',
      output: 'scope',
      quantile: 0.99,
      threshold: 7.5,
      card_threshold: 1,
      scores: { n: 118, min: 0.1, median: 2, max: 9 },
    },
    ...over,
  };
}

describe('profile', () => {
  it('round trip: JSON text -> validateProfile -> the card the engine decides with, by postprocess', () => {
    const p = validateProfile(JSON.parse(JSON.stringify(profile())), 'p.json');
    const applied = applySite(CARD as unknown as ModelCard, p);
    expect(applied.postprocessing).toMatchObject({ temperature: 0.7, bias: -0.2, threshold: 0.42 });
    expect(applied.gate?.intended_use?.threshold).toBe(7.5);
    const d = postprocess(0.3, applied);
    expect(d.probability).toBeCloseTo(1 / (1 + Math.exp(-(0.3 / 0.7 - 0.2))), 12);
    expect(d.threshold).toBe(0.42);
    // the card itself is untouched
    expect(CARD.postprocessing.threshold).toBe(0.6);
    expect(applySite(CARD as unknown as ModelCard, undefined)).toBe(CARD);
  });

  it('a profile that is not validated keeps the card intended-use threshold (the site films stay declined)', () => {
    const applied = applySite(CARD as unknown as ModelCard, profile({ validated: false, not_validated_reason: 'low AUC' }));
    expect(applied.gate?.intended_use?.threshold).toBe(1);
  });

  it('refuses another model (name, version or weights) and a scope rule that does not fit the card', () => {
    expect(() => checkProfileFor(profile(), CARD)).not.toThrow();
    expect(() => checkProfileFor(profile(), { ...CARD, version: '3.0.0' })).toThrow(
      /made with model m 1\.0\.0.*loaded model is m 3\.0\.0.*never applies to another model/,
    );
    expect(() => checkProfileFor(profile(), { ...CARD, sha256: 'b'.repeat(64) })).toThrow(/never applies/);
    expect(() => checkProfileFor(profile(), NO_HEAD)).toThrow(/does not have/);
    expect(() => checkProfileFor(profile({ scope: { rule: 'none', note: 'x' } }), CARD)).toThrow(/records no intended-use scores/);
    expect(() => checkProfileFor(profile({ scope: { rule: 'none', note: 'x' } }), NO_HEAD)).not.toThrow();
  });

  it('names the file and the field of a damaged profile', () => {
    const bad = (patch: (p: any) => void) => {
      const p: any = JSON.parse(JSON.stringify(profile()));
      patch(p);
      return () => validateProfile(p, 'x.json');
    };
    expect(bad((p) => (p.schema = 'card'))).toThrow(/x\.json: "schema"/);
    expect(bad((p) => (p.calibration.temperature = 0))).toThrow(/"calibration\.temperature" must be a positive number/);
    expect(bad((p) => (p.calibration.threshold = 2))).toThrow(/"calibration\.threshold"/);
    expect(bad((p) => (p.model.sha256 = 'xyz'))).toThrow(/"model\.sha256" must be 64 hex digits/);
    expect(bad((p) => (p.scope.rule = 'all'))).toThrow(/"scope\.rule"/);
  });
});

describe('labels.csv', () => {
  it('parses quoted fields and CRLF', () => {
    expect(parseCsv('file,patient_id,labels\r\nNORMAL/a.png,7,"x,y"\r\n"P/b ""q"".png",8,z\n')).toEqual([
      ['file', 'patient_id', 'labels'],
      ['NORMAL/a.png', '7', 'x,y'],
      ['P/b "q".png', '8', 'z'],
    ]);
  });
});
