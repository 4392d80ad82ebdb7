/**
 * The model card in words, as label/value rows, shared by `pneumolens info` and the HTML report.
 * Typed from the card's own type (src/model/card.ts), with everything but name/version optional,
 * so any card that follows docs/model-contract.md fits, including cards written before a field
 * existed, and a field renamed there is a type error here.
 */
import type { ModelCard } from '../model/card.ts';
import { ciInformative } from './metrics.ts';

type DeepPartial<T> = T extends readonly (infer U)[]
  ? readonly DeepPartial<U>[]
  : T extends object
    ? { [K in keyof T]?: DeepPartial<T[K]> }
    : T;

export type CardInfo = Pick<ModelCard, 'name' | 'version'> & DeepPartial<Omit<ModelCard, 'name' | 'version'>>;

/** A number for people (at most `digits` decimals); cli/args.ts `num` is the parser of command-line numbers. */
const fmtNum = (v: unknown, digits = 3): string =>
  typeof v === 'number' && Number.isFinite(v) ? Number(v.toFixed(digits)).toString() : String(v);

function humanCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} k`;
  return String(n);
}

/**
 * Who the model is for, in the card's own words, so every front end says the same and stays true
 * when the model changes: `gate.intended_use.population` (the intended-use head's population), else
 * the "Validated population: ..." sentence of `intended_use`, else the "Validated only for ..." /
 * "Trained only on ..." opening of a limitation. Null when the card states none.
 */
export function intendedPopulation(card: CardInfo): string | null {
  const head = obj(obj(card.gate)?.intended_use)?.population;
  if (typeof head === 'string' && head.trim()) return head.trim();
  const said = typeof card.intended_use === 'string' ? /Validated population:\s*([^.;]+)/.exec(card.intended_use) : null;
  if (said) return said[1].trim();
  for (const l of card.limitations ?? []) {
    const m = typeof l === 'string' ? /^(?:Validated only for|Trained only on)\s+([^.;]+)/.exec(l) : null;
    if (m) return m[1].trim();
  }
  return null;
}

/** The population line every front end shows first (page header, `pneumolens info`). */
export function populationText(card: CardInfo): string {
  const p = intendedPopulation(card);
  return p
    ? `validated only for ${p}; results on other patients are not validated`
    : 'the model card does not say which population this model is validated for: treat every result as unvalidated';
}

export function describeCard(card: CardInfo): Array<[string, string]> {
  const rows: Array<[string, string]> = [];
  rows.push(['Model', `${card.name} ${card.version}`]);
  rows.push(['Intended for', populationText(card)]);
  if (card.architecture) rows.push(['Architecture', card.architecture]);
  if (card.parameters !== undefined) rows.push(['Parameters', `${humanCount(card.parameters)} (${card.parameters})`]);
  if (card.gflops_per_image !== undefined) rows.push(['Compute', `${Number(card.gflops_per_image.toPrecision(3))} GFLOPs per image`]);
  if (card.labels) rows.push(['Labels', `${card.labels.join(', ')} (probability is for ${card.labels[1] ?? 'label 1'})`]);
  if (card.input)
    rows.push([
      'Input',
      `${card.input.channels ?? 1} channel${(card.input.channels ?? 1) === 1 ? '' : 's'}, ${card.input.width} x ${card.input.height}`,
    ]);
  const pre = card.preprocessing;
  if (pre) {
    const parts: string[] = [];
    if (pre.color) parts.push(pre.color === 'gray_bt601' ? 'grayscale (BT.601)' : pre.color);
    if (pre.resize) parts.push(`resize ${pre.resize.mode ?? ''}${pre.resize.filter ? ` (${pre.resize.filter})` : ''}`.trim());
    if (pre.scale !== undefined) parts.push(`scale ${pre.scale === 1 / 255 ? '1/255' : fmtNum(pre.scale, 6)}`);
    const n = pre.normalize;
    if (n) parts.push(n.mode === 'fixed' ? `normalize (x - ${fmtNum(n.mean)}) / ${fmtNum(n.std)}` : `normalize ${n.mode ?? ''}`.trim());
    rows.push(['Preprocessing', parts.join('; ')]);
  }
  const post = card.postprocessing;
  if (post) {
    if (post.threshold !== undefined)
      rows.push([
        'Threshold',
        `${fmtNum(post.threshold, 4)}${post.threshold_policy ? ` (chosen by ${post.threshold_policy} on validation)` : ''}`,
      ]);
    if (post.temperature !== undefined)
      rows.push([
        'Calibration',
        `temperature ${fmtNum(post.temperature, 4)}, bias ${fmtNum(post.bias ?? 0, 4)} (probability = sigmoid(logit / T + bias))`,
      ]);
  }
  const v = card.metrics?.validation as Record<string, unknown> | undefined;
  if (v && typeof v === 'object') {
    const keys = ['n', 'accuracy', 'sensitivity', 'specificity', 'precision', 'npv', 'f1', 'auc'];
    const parts = keys.filter((k) => typeof v[k] === 'number').map((k) => `${k} ${fmtNum(v[k])}`);
    if (typeof v.ece_after_calibration === 'number') parts.push(`ECE ${fmtNum(v.ece_after_calibration)}`);
    if (typeof v.threshold === 'number') parts.push(`at threshold ${fmtNum(v.threshold, 4)}`);
    const split = typeof v.split === 'string' ? `; split: ${v.split}` : '';
    rows.push(['Validation', parts.join(', ') + split]);
    if (typeof v.caveat === 'string') rows.push(['', `Caveat: ${v.caveat}`]);
  }
  rows.push(...outsideRows(card));
  const t = card.training;
  if (t) {
    const parts: string[] = [];
    if (t.data) parts.push(String(t.data));
    const runs = Array.isArray(t.runs) ? (t.runs as Array<Record<string, unknown>>) : [];
    const epochs =
      typeof t.epochs === 'number'
        ? t.epochs
        : runs
            .map((r) => r.epochs_run)
            .filter((e): e is number => typeof e === 'number')
            .reduce((a, b) => a + b, 0) || undefined;
    if (epochs !== undefined) parts.push(`${epochs} epochs`);
    if (typeof t.wall_time_s === 'number') parts.push(`${Math.round(t.wall_time_s)} s of training`);
    if (t.machine) parts.push(`on ${String(t.machine)}`);
    if (parts.length > 0) rows.push(['Training', parts.join(', ')]);
  }
  rows.push(['Input gate', gateText(card.gate)]);
  const scope = intendedUseText(card.gate);
  if (scope) rows.push(['Intended-use gate', scope]);
  rows.push(['Uncertainty', uncertaintyText(card.uncertainty)]);
  if (card.intended_use) rows.push(['Intended use', card.intended_use]);
  for (const [i, l] of (card.limitations ?? []).entries()) rows.push([i === 0 ? 'Limitations' : '', `- ${l}`]);
  if (card.sha256) rows.push(['SHA-256', card.sha256]);
  return rows;
}

type Loose = Record<string, unknown>;
const obj = (v: unknown): Loose | undefined => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Loose) : undefined);

/**
 * Performance outside the training hospital, right after validation and as prominent:
 * metrics.by_source (development cross-source table) and metrics.independent (hidden sets, for the
 * model version it names); without either, one line saying what validation cannot show.
 */
export function outsideRows(card: CardInfo): Array<[string, string]> {
  const rows: Array<[string, string]> = [];
  const bySource = (Array.isArray(card.metrics?.by_source) ? (card.metrics.by_source as unknown[]) : [])
    .map(obj)
    .filter((r): r is Loose => typeof r?.source === 'string');
  for (const [i, r] of bySource.entries()) {
    const ci = Array.isArray(r.auc_ci) && r.auc_ci.length === 2 ? sourceCiText(r, card.labels) : '';
    const parts = [`n ${String(r.n ?? '?')}`, `auc ${fmtNum(r.auc)}${ci}`, `sensitivity ${fmtNum(r.sensitivity)}`];
    parts.push(`specificity ${fmtNum(r.specificity)}`, `ECE ${fmtNum(r.ece)}`);
    const note = typeof r.note === 'string' && r.note ? ` (${r.note})` : '';
    rows.push([i === 0 ? 'By source' : '', `${String(r.source)}: ${parts.join(', ')}${note}`]);
  }
  const prev = obj(card.metrics?.previous);
  const prevRows = (Array.isArray(prev?.by_source) ? (prev.by_source as unknown[]) : [])
    .map(obj)
    .filter((r): r is Loose => typeof r?.source === 'string' && !String(r.source).includes(' view'));
  if (prev && prevRows.length > 0) {
    rows.push(['Previous model', `version ${String(prev.version ?? '?')}, the same table (its own development split)`]);
    for (const r of prevRows) {
      rows.push([
        '',
        `${String(r.source)}: n ${String(r.n ?? '?')}, auc ${fmtNum(r.auc)}, sensitivity ${fmtNum(r.sensitivity)}, specificity ${fmtNum(r.specificity)}, ECE ${fmtNum(r.ece)}`,
      ]);
    }
  }
  const loso = obj(card.metrics?.leave_one_source_out);
  const losoRows = (Array.isArray(loso?.rows) ? (loso.rows as unknown[]) : []).map(obj).filter((r): r is Loose => !!r);
  if (loso && losoRows.length > 0) {
    rows.push(['Hospital never seen', typeof loso.method === 'string' ? loso.method : 'leave-one-source-out']);
    for (const r of losoRows) {
      const nih = Object.entries(obj(r.unseen_nih_auc) ?? {}).map(([k, v]) => `${k} ${fmtNum(v)}`);
      const sens = Object.entries(obj(r.other_sites_sensitivity) ?? {}).map(([k, v]) => `${k} ${fmtNum(v)}`);
      const surround = Object.entries(obj(r.surround_auc) ?? {}).map(([k, v]) => `${k} ${fmtNum(v)}`);
      rows.push([
        '',
        `${String(r.lever ?? '?')}: unseen NIH AUC ${nih.join(', ')}; other sites' sensitivity ${sens.join(', ')}; ` +
          `own validation AUC ${fmtNum(r.kermany_val_auc)}, worst under the shift suite ${fmtNum(r.shift_worst_auc)}` +
          (surround.length ? `, inside a surround ${surround.join(', ')}` : '') +
          `; Grad-CAM in the lungs ${fmtNum(r.cam_in_lungs_pneumonia)}`,
      ]);
    }
  }
  const ind = obj(card.metrics?.independent);
  const indRows = (Array.isArray(ind?.rows) ? (ind.rows as unknown[]) : []).map(obj).filter((r): r is Loose => !!r);
  if (ind && indRows.length > 0) {
    const graded = typeof ind.model_version === 'string' ? ind.model_version : undefined;
    const head = `Hidden sets graded independently${graded ? ` (model version ${graded})` : ''}`;
    rows.push(['Independent', head + (typeof ind.note === 'string' && ind.note ? `: ${ind.note}` : '')]);
    if (graded && graded !== card.version) {
      rows.push(['', `WARNING: these results are for version ${graded}, not for this model (${card.version}).`]);
    }
    for (const r of indRows) rows.push(['', `${String(r.set ?? '?')} (n ${String(r.n ?? '?')}): ${String(r.result ?? '')}`]);
  }
  if (bySource.length === 0 && indRows.length === 0) {
    rows.push([
      'Other hospitals',
      'no results in this model card: validation comes from the training hospital and overstates performance elsewhere',
    ]);
  }
  return rows;
}

/**
 * A by-source row's AUC interval in words: the numbers, or that it is not informative and why
 * (ciInformative: the class counts n_normal / n_pneumonia when the row has them, and its width).
 */
function sourceCiText(r: Loose, labels: CardInfo['labels']): string {
  const [lo, hi] = r.auc_ci as [number, number];
  const count = (k: string) => (typeof r[k] === 'number' ? (r[k] as number) : Infinity);
  const names: readonly [string, string] = [labels?.[0] ?? 'NORMAL', labels?.[1] ?? 'PNEUMONIA'];
  const { informative, not_informative_because } = ciInformative(lo, hi, count('n_pneumonia'), count('n_normal'), names);
  return informative ? ` (95% CI ${fmtNum(lo)}-${fmtNum(hi)})` : ` (95% CI not informative: ${not_informative_because})`;
}

/** The input gate in words: image checks always; the model's own score when the card has a gate. */
export function gateText(gate: unknown): string {
  const g = obj(gate);
  if (!g) return 'image checks only (colour, blank, contrast, shape, document-like); this model has no out-of-distribution score';
  const comps = Array.isArray(g.components)
    ? (g.components as unknown[]).map((c) => obj(c)?.name).filter((n): n is string => typeof n === 'string')
    : [];
  const val = obj(g.validation);
  const frr =
    typeof val?.false_rejection_rate === 'number'
      ? `; refuses ${fmtNum(100 * val.false_rejection_rate, 2)}% of validation X-rays${typeof val.n === 'number' ? ` (n ${val.n})` : ''}`
      : '';
  return `image checks + the model's score "${String(g.output)}" (refused above ${fmtNum(g.threshold)}${comps.length ? `; ${comps.join(', ')}` : ''})${frr}`;
}

/** The intended-use head in words (declines films outside the validated population), or null when the card has none. */
export function intendedUseText(gate: unknown): string | null {
  const u = obj(obj(gate)?.intended_use);
  if (!u) return null;
  const val = obj(u.validation);
  const parts = [
    `declines films outside the validated population${typeof u.population === 'string' ? ` (${u.population})` : ''} as outside_intended_use (score "${String(u.output)}" above ${fmtNum(u.threshold)})`,
  ];
  if (typeof val?.false_decline_rate_intended_population === 'number') {
    parts.push(`declines ${fmtNum(100 * val.false_decline_rate_intended_population, 2)}% of the intended population's validation films`);
  }
  const others = obj(val?.decline_rate_other_sources);
  for (const [k, v] of Object.entries(others ?? {})) {
    if (typeof v === 'number') parts.push(`${fmtNum(100 * v, 1)}% of ${k} validation films`);
  }
  return parts.join('; ');
}

/** The uncertainty estimate in words, or that there is none. */
export function uncertaintyText(u: unknown): string {
  const x = obj(u);
  if (!x) return 'none (this model gives no uncertainty estimate)';
  const val = obj(x.validation);
  const parts = [`${String(x.method ?? 'ensemble disagreement')}, "uncertain: refer to a clinician" above ${fmtNum(x.cutoff, 4)}`];
  if (typeof val?.flagged_fraction === 'number') parts.push(`flags ${fmtNum(100 * val.flagged_fraction, 1)}% of validation images`);
  if (typeof val?.error_rate_flagged === 'number' && typeof val?.error_rate_unflagged === 'number') {
    parts.push(`error rate ${fmtNum(100 * val.error_rate_flagged, 1)}% flagged vs ${fmtNum(100 * val.error_rate_unflagged, 1)}% not`);
  }
  return parts.join('; ');
}
