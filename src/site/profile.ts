/**
 * Site profiles (issue 20): what a hospital measured on its own labelled films, and the calibration,
 * threshold and scope it fitted there. A profile names the one model it was made with (name,
 * version, sha256) and never applies to another. Load-time problems are plain Errors whose message
 * names the file and the field, like the model card's.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { ModelCard } from '../model/card.ts';
import type { EceByChance } from '../eval/calibration.ts';

export const PROFILE_SCHEMA = 'pneumolens-site-profile';

/** The product rules of a profile, stated once (README "Validate at your site"). */
export const SITE_RULES = {
  /** Fewer films than this in either class: refused, no profile is written. */
  minPerClass: 50,
  /** The lower bound of the local AUC's 95% CI must reach this, else the profile says "not validated". */
  aucFloor: 0.75,
  /** Under a profile, a film is in scope when its intended-use score is at most this quantile of the site's films (or the card's threshold, if higher). */
  scopeQuantile: 0.99,
} as const;

/** The site's Platt calibration in the card's form: p = sigmoid(logit / temperature + bias), positive when p >= threshold. */
export interface SiteCalibration {
  temperature: number;
  bias: number;
  threshold: number;
  /** The threshold policy it was chosen by, e.g. "youden", "sensitivity:0.9". */
  policy: string;
}

/**
 * Which films are in scope under the profile. With an intended-use head (card gate.intended_use):
 * its score must be at most `threshold` (the site's quantile of its own films' scores, never below
 * the card's threshold). Without one there is nothing to record: only the not-a-chest-X-ray gate applies.
 */
export type SiteScope =
  | {
      rule: 'site_quantile';
      output: string;
      quantile: number;
      threshold: number;
      card_threshold: number;
      /** The site's films' intended-use scores: how many, and their spread. */
      scores: { n: number; min: number; median: number; max: number };
    }
  | { rule: 'none'; note: string };

export interface Estimate {
  /** Films the estimate is computed on (in scope under their fold's rule). */
  n: number;
  auc: number | null;
  auc_ci95: [number, number] | null;
  sensitivity: number | null;
  specificity: number | null;
  ppv: number | null;
  npv: number | null;
  /** ECE (10 bins) with the card's calibration, and with the site's calibration fitted on the other folds. */
  ece_before: number | null;
  ece_after: number | null;
  /** What ece_after would read by chance alone if the site's calibration were perfect (src/eval/calibration.ts eceByChance); absent in profiles written before it. */
  ece_after_chance?: EceByChance | null;
  /** Share of the site's chest X-rays declined (not a chest X-ray, or out of scope under the fold's rule). */
  declined: number;
}

export interface SiteProfile {
  schema: typeof PROFILE_SCHEMA;
  schema_version: 1;
  site: { name: string; created: string };
  model: { name: string; version: string; sha256: string };
  data: {
    /** Films found (both classes). */
    n: number;
    /** Films per class label that the fit used (passed the not-a-chest-X-ray gate). */
    n_per_class: Record<string, number>;
    /** Films the not-a-chest-X-ray gate refused (not used). */
    not_chest_xray: number;
    /** Number of groups the folds were drawn by (patients, or files). */
    groups: number;
    /** Where the groups came from: "patient_id (labels.csv)", "PatientID (DICOM)", "file", or a mix with counts. */
    grouping: string;
    /** sha256 of the sorted "label<TAB>relative path" lines of every film found. */
    files_sha256: string;
  };
  /** Honest estimate: k-fold by group, each fold judged with what was fitted on the others. */
  validation: Estimate & { method: string; folds: number; seed: number; bootstrap: number };
  /** The same numbers in-sample (fitted and judged on every film): optimistic, for comparison only. */
  in_sample: Pick<Estimate, 'sensitivity' | 'specificity' | 'ece_after'>;
  validated: boolean;
  /** The rule `validated` was decided by, and, when false, why. */
  validation_rule: string;
  not_validated_reason?: string;
  calibration: SiteCalibration;
  scope: SiteScope;
}

/** What every answer under a profile carries (API result, /api/model, page, PACS, CLI). */
export interface SiteSummary {
  name: string;
  created: string;
  validated: boolean;
  n: number;
  auc: number | null;
  auc_ci95: [number, number] | null;
  threshold: number;
  policy: string;
  /** One sentence for people: "Site profile NAME: validated on N films here, AUC x [lo, hi]". */
  statement: string;
}

const f3 = (v: number | null) => (v === null ? 'n/a' : v.toFixed(3));

export function siteStatement(p: Pick<SiteProfile, 'site' | 'validated' | 'validation' | 'data' | 'not_validated_reason'>): string {
  const n = Object.values(p.data.n_per_class).reduce((a, b) => a + b, 0);
  const ci = p.validation.auc_ci95;
  const auc = `AUC ${f3(p.validation.auc)}${ci ? ` [${f3(ci[0])}, ${f3(ci[1])}]` : ''}`;
  return p.validated
    ? `Site profile ${p.site.name}: validated on ${n} films here, ${auc}`
    : `Site profile ${p.site.name}: NOT validated (${auc} on ${n} films here${p.not_validated_reason ? `; ${p.not_validated_reason}` : ''}); films outside the model's intended use stay declined`;
}

export function siteSummary(p: SiteProfile): SiteSummary {
  return {
    name: p.site.name,
    created: p.site.created,
    validated: p.validated,
    n: Object.values(p.data.n_per_class).reduce((a, b) => a + b, 0),
    auc: p.validation.auc,
    auc_ci95: p.validation.auc_ci95,
    threshold: p.calibration.threshold,
    policy: p.calibration.policy,
    statement: siteStatement(p),
  };
}

type Json = Record<string, unknown>;

/** Validates parsed profile JSON; returns it typed. Every message names the file and the field. */
export function validateProfile(json: unknown, file = 'site profile'): SiteProfile {
  const fail = (field: string, want: string, got: unknown): never => {
    throw new Error(`Invalid site profile ${file}: "${field}" must be ${want} (got ${JSON.stringify(got)?.slice(0, 80)}).`);
  };
  const get = (path: string): unknown => path.split('.').reduce<unknown>((o, k) => (o as Json | undefined)?.[k], json);
  const obj = (path: string) => {
    const v = get(path);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(path, 'an object', v);
    return v as Json;
  };
  const str = (path: string) => {
    const v = get(path);
    if (typeof v !== 'string' || v === '') fail(path, 'a non-empty string', v);
    return v as string;
  };
  const num = (path: string, ok: (n: number) => boolean = () => true, want = 'a finite number') => {
    const v = get(path);
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) fail(path, want, v);
    return v as number;
  };
  const numOrNull = (path: string) => (get(path) === null ? null : num(path));
  if (typeof json !== 'object' || json === null || Array.isArray(json)) fail('(root)', 'a JSON object', json);
  if (get('schema') !== PROFILE_SCHEMA) fail('schema', `"${PROFILE_SCHEMA}"`, get('schema'));
  num('schema_version', (n) => n === 1, 'the number 1');
  str('site.name');
  str('site.created');
  str('model.name');
  str('model.version');
  if (!/^[0-9a-f]{64}$/i.test(str('model.sha256'))) fail('model.sha256', '64 hex digits', get('model.sha256'));
  const perClass = obj('data.n_per_class');
  for (const k of Object.keys(perClass)) num(`data.n_per_class.${k}`, (n) => Number.isInteger(n) && n >= 0, 'a count');
  str('data.files_sha256');
  obj('validation');
  numOrNull('validation.auc');
  const ci = get('validation.auc_ci95');
  if (ci !== null && !(Array.isArray(ci) && ci.length === 2 && ci.every((v) => typeof v === 'number' && Number.isFinite(v)))) {
    fail('validation.auc_ci95', 'null or [lower, upper]', ci);
  }
  if (typeof get('validated') !== 'boolean') fail('validated', 'true or false', get('validated'));
  num('calibration.temperature', (n) => n > 0, 'a positive number');
  num('calibration.bias');
  num('calibration.threshold', (n) => n >= 0 && n <= 1, 'a number in 0..1');
  str('calibration.policy');
  const rule = str('scope.rule');
  if (rule === 'site_quantile') {
    str('scope.output');
    num('scope.threshold', (n) => n > 0, 'a positive number');
  } else if (rule !== 'none') fail('scope.rule', '"site_quantile" or "none"', rule);
  return json as SiteProfile;
}

/** Reads and validates a profile file. */
export function readProfile(path: string): SiteProfile & { path: string } {
  const abs = resolve(path);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (e) {
    throw new Error(`Site profile ${abs} cannot be read: ${(e as Error).message}`, { cause: e });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`Site profile ${abs} is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
  return { ...validateProfile(json, abs), path: abs };
}

/**
 * Refuses a profile made with another model (name, version or weights), or whose scope rule does
 * not fit the model's intended-use head. Thrown at start-up: a profile is never silently ignored.
 */
export function checkProfileFor(
  profile: SiteProfile,
  card: Pick<ModelCard, 'name' | 'version' | 'sha256' | 'gate'>,
  file = 'site profile',
): void {
  const m = profile.model;
  if (m.name !== card.name || m.version !== card.version || m.sha256.toLowerCase() !== card.sha256.toLowerCase()) {
    throw new Error(
      `Site profile ${file} (site "${profile.site.name}") was made with model ${m.name} ${m.version} (sha256 ${m.sha256.slice(0, 12)}...), ` +
        `but the loaded model is ${card.name} ${card.version} (sha256 ${card.sha256.slice(0, 12)}...). A profile never applies to another model: ` +
        `run "pneumolens site" again on the site's films with this model.`,
    );
  }
  const head = card.gate?.intended_use;
  if (profile.scope.rule === 'site_quantile' && (!head || head.output !== profile.scope.output)) {
    throw new Error(
      `Site profile ${file}: its scope rule uses the intended-use output "${profile.scope.output}", which this model's card does not have.`,
    );
  }
  if (profile.scope.rule === 'none' && head) {
    throw new Error(`Site profile ${file}: it records no intended-use scores, but this model has an intended-use head ("${head.output}").`);
  }
}
