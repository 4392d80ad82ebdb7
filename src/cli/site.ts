/** `pneumolens site`: validates the model on a site's labelled films and writes the site's profile (src/site). */
import { createHash } from 'node:crypto';
import { open, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { checkPolicy, DEFAULT_POLICY, fitSite, SiteDataError, type SiteFilm } from '../site/fit.ts';
import { dicomPatientKey } from '../image/dicom.ts';
import { groupOf, readGrouping } from '../site/groups.ts';
import { PROFILE_SCHEMA, SITE_RULES, siteStatement, type SiteProfile } from '../site/profile.ts';
import { renderSiteReport } from '../site/report.ts';
import { command, ENGINE_HELP, engineOptions, flag, num, str } from './args.ts';
import { analyseFiles } from './batch.ts';
import { withEngine } from './engine.ts';
import { classFolders } from './evaluate.ts';
import { listImages } from './files.ts';
import { EXIT_FAILED, EXIT_OK, UsageError, type Io } from './io.ts';
import { Progress } from './progress.ts';

export const help = `Usage: pneumolens site <dir> --out PROFILE.json [options]

Validates the model on a site's own labelled films, <dir>/NORMAL and <dir>/PNEUMONIA (any format
pneumolens reads, DICOM included), and writes the site's profile: the calibration, threshold and
scope fitted on those films, and how well the model does there, estimated honestly by k-fold over
patients (from <dir>/labels.csv with columns file,patient_id, else a DICOM film's Patient ID,
hashed and never written; else over files). Use the profile
with --site on predict, evaluate, serve and pacs, or PNEUMOLENS_SITE for the server.

Every film is analysed past the intended-use decision (the profile decides what is in scope), not
past the not-a-chest-X-ray gate. Refused, with nothing written: fewer than ${SITE_RULES.minPerClass} chest X-rays in a
class, one class only, any unreadable file (listed). A local AUC whose 95% CI lower bound is below
${SITE_RULES.aucFloor} writes the profile marked "not validated" (the site's films then stay declined) and exits 1.

Options:
  --out FILE         the profile to write (JSON; required)
  --name NAME        the site's name (default: the folder's name)
  --policy P         threshold policy: balanced (default: the larger of min(sensitivity, specificity)),
                     youden (max sensitivity + specificity - 1), sensitivity:X (the highest threshold
                     reaching X), specificity:X (the lowest threshold keeping X)
  --report FILE      also write a self-contained HTML report (ROC, reliability before/after, histograms)
  --folds K          folds of the estimate (default 5)
  --seed S           fold and bootstrap seed (default 42)
  --bootstrap N      bootstrap resamples for the AUC confidence interval (default 1000)
  --batch N          images per inference batch (default 8)
  --quiet            no progress bar
${ENGINE_HELP.split('\n')
  .filter((l) => !/--site|scope replace|PNEUMOLENS_SITE/.test(l))
  .join('\n')}
  -h, --help         this help

A profile is evidence about one site's films with one model, not a certification. Research and
education tool, not a medical device.
`;

/** The first 4 MiB of a file: a DICOM header with its Patient ID, without reading the pixels. */
async function readHead(path: string): Promise<Uint8Array> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(4 * 1024 * 1024);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** Writes a file whole or not at all (a temporary name beside it, then a rename). */
async function writeWhole(path: string, text: string): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  try {
    await writeFile(tmp, text);
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

export async function run(args: string[], io: Io): Promise<number> {
  // --model and --threads, but no --site (the profile is fitted on the card alone, below)
  const p = command(args, io, help, {
    string: ['model', 'threads', 'out', 'name', 'policy', 'report', 'folds', 'seed', 'bootstrap', 'batch'],
    boolean: ['quiet'],
  });
  if (!p) return EXIT_OK;
  if (p.positionals.length !== 1)
    throw new UsageError(p.positionals.length === 0 ? 'no data directory given' : 'give exactly one data directory');
  const out = str(p, 'out');
  if (!out) throw new UsageError('--out PROFILE.json is required');
  const reportOut = str(p, 'report');
  if (reportOut === '') throw new UsageError('--report needs a file name');
  const policy = str(p, 'policy') ?? DEFAULT_POLICY;
  try {
    checkPolicy(policy);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const folds = num(p, 'folds', 2, 20, true) ?? 5;
  const seed = num(p, 'seed', 0, 2 ** 32 - 1, true) ?? 42;
  const bootstrap = num(p, 'bootstrap', 100, 100_000, true) ?? 1000;
  const batch = num(p, 'batch', 1, 256, true) ?? 8;
  const dataDir = p.positionals[0];
  const root = resolve(io.cwd, dataDir);
  const name = str(p, 'name') ?? basename(root);
  if (name.trim() === '') throw new UsageError('--name must not be empty');
  const refuse = (msg: string) => {
    io.stderr.write(`pneumolens site: refused, no profile written: ${msg}\n`);
    return EXIT_FAILED;
  };

  // The site command fits on the card's own outputs: never under another profile.
  return withEngine(io, { ...engineOptions(p), site: false }, async (engine) => {
    const card = engine.card;
    const labels = card.labels;
    const folders = await classFolders(root, labels);
    const files: string[] = [];
    const truths: Array<0 | 1> = [];
    const found: number[] = [];
    for (const [cls, folder] of folders.entries()) {
      const list = await listImages(folder);
      found.push(list.length);
      for (const f of list) {
        files.push(f);
        truths.push(cls as 0 | 1);
      }
    }
    // Bounds first, before any analysis.
    const empty = labels.filter((_, k) => found[k] === 0);
    if (empty.length === 1)
      return refuse(`one class only: no images under ${labels.map((l) => `${dataDir}/${l}`).join(' or ')} for ${empty[0]}`);
    if (empty.length === 2) return refuse(`no images found under ${dataDir}`);
    const small = labels.map((l, k) => [l, found[k]] as const).filter(([, n]) => n < SITE_RULES.minPerClass);
    if (small.length > 0) {
      return refuse(
        `too few films: ${small.map(([l, n]) => `${n} ${l}`).join(', ')}; a profile needs at least ${SITE_RULES.minPerClass} per class`,
      );
    }
    let grouping;
    try {
      grouping = await readGrouping(root);
    } catch (e) {
      return refuse((e as Error).message);
    }
    const rel = files.map((f) => relative(root, f).split('\\').join('/'));
    const filesSha = createHash('sha256')
      .update(
        rel
          .map((r, i) => `${labels[truths[i]]}\t${r}\n`)
          .sort()
          .join(''),
      )
      .digest('hex');

    const progress = new Progress(files.length, io.stderr, 'site ', flag(p, 'quiet') ? false : undefined);
    const films: SiteFilm[] = [];
    const unreadable: string[] = [];
    let notXray = 0;
    const dicomUnknown: Array<{ i: number; film: SiteFilm }> = [];
    const by = { csv: 0, dicom: 0, file: 0 };
    let k = 0;
    // force: past the intended-use decision; a film the not-a-chest-X-ray gate refuses is counted, not used.
    for await (const outcomes of analyseFiles(engine, files, io.cwd, { cam: false, force: true }, batch)) {
      for (const o of outcomes) {
        const i = k++;
        if (o.status === 'failed' || !o.result)
          unreadable.push(`${rel[i]}: ${o.error?.code ?? 'internal_error'}: ${o.error?.message ?? ''}`);
        else if (o.result.reason === 'not_a_chest_xray') notXray++;
        else {
          const g = groupOf(grouping, rel[i]);
          const film: SiteFilm = { group: g.group, truth: truths[i], logit: o.result.logit, scope: o.result.gate.scope };
          films.push(film);
          if (g.known) by.csv++;
          else if (o.result.image.format === 'dicom') dicomUnknown.push({ i, film });
          else by.file++;
        }
      }
      progress.tick(outcomes.length, outcomes.filter((o) => o.status === 'failed').length);
    }
    progress.finish();
    if (unreadable.length > 0) {
      for (const u of unreadable) io.stderr.write(`pneumolens site: ${u}\n`);
      return refuse(`${unreadable.length} file(s) could not be read or analysed (listed above); remove or fix them`);
    }
    const perClass = labels.map((_, c) => films.filter((f) => f.truth === c).length);
    const fewAccepted = labels.map((l, c) => [l, perClass[c]] as const).filter(([, n]) => n < SITE_RULES.minPerClass);
    if (fewAccepted.length > 0) {
      return refuse(
        `too few chest X-rays once ${notXray} film(s) the not-a-chest-X-ray gate refused are left out: ${fewAccepted.map(([l, n]) => `${n} ${l}`).join(', ')}; at least ${SITE_RULES.minPerClass} per class`,
      );
    }
    // DICOM films that labels.csv does not name: their Patient ID, hashed (never written or logged).
    for (const { i, film } of dicomUnknown) {
      const key = dicomPatientKey(await readHead(files[i]));
      if (key) {
        film.group = `dicom:${key}`;
        by.dicom++;
      } else by.file++;
    }
    if (by.file > 0 && by.csv + by.dicom > 0) {
      io.stderr.write(`pneumolens site: ${by.file} film(s) have no patient id (labels.csv or DICOM PatientID): each is its own group\n`);
    }
    const groupingText =
      [
        by.csv ? ['patient_id (labels.csv)', by.csv] : null,
        by.dicom ? ['PatientID (DICOM)', by.dicom] : null,
        by.file ? ['file', by.file] : null,
      ]
        .filter((x): x is [string, number] => x !== null)
        .map(([what, count], _, all) => (all.length > 1 ? `${what}: ${count}` : what))
        .join(', ') || 'file';

    let fit;
    try {
      fit = fitSite(films, card, notXray, { policy, folds, seed, bootstrap });
    } catch (e) {
      if (e instanceof SiteDataError) return refuse(e.message);
      throw e;
    }
    const v = fit.validation;
    const reasons = [
      ...(fit.inverted ? ['higher model scores did not mean more pneumonia at this site (Platt slope <= 0)'] : []),
      ...(v.auc_ci95 === null || v.auc_ci95[0] < SITE_RULES.aucFloor
        ? [`the local AUC's 95% CI lower bound ${v.auc_ci95 ? v.auc_ci95[0].toFixed(3) : 'n/a'} is below the floor ${SITE_RULES.aucFloor}`]
        : []),
    ];
    const profile: SiteProfile = {
      schema: PROFILE_SCHEMA,
      schema_version: 1,
      site: { name, created: new Date().toISOString() },
      model: { name: card.name, version: card.version, sha256: card.sha256.toLowerCase() },
      data: {
        n: files.length,
        n_per_class: Object.fromEntries(labels.map((l, c) => [l, perClass[c]])),
        not_chest_xray: notXray,
        groups: new Set(films.map((f) => f.group)).size,
        grouping: groupingText,
        files_sha256: filesSha,
      },
      validation: {
        method: v.method,
        folds: v.folds,
        seed: v.seed,
        bootstrap: v.bootstrap,
        n: v.n,
        auc: v.auc,
        auc_ci95: v.auc_ci95,
        sensitivity: v.sensitivity,
        specificity: v.specificity,
        ppv: v.ppv,
        npv: v.npv,
        ece_before: v.ece_before,
        ece_after: v.ece_after,
        declined: v.declined,
      },
      in_sample: fit.in_sample,
      validated: reasons.length === 0,
      validation_rule: `validated when the local AUC's 95% CI lower bound is >= ${SITE_RULES.aucFloor} (k-fold by patient), with >= ${SITE_RULES.minPerClass} chest X-rays per class`,
      ...(reasons.length ? { not_validated_reason: reasons.join('; ') } : {}),
      calibration: fit.calibration,
      scope: fit.scope,
    };
    const outAbs = resolve(io.cwd, out);
    const reportAbs = reportOut === undefined ? undefined : resolve(io.cwd, reportOut);
    const html = reportAbs ? renderSiteReport(profile, fit, labels, dataDir) : undefined;
    await writeWhole(outAbs, JSON.stringify(profile, null, 2) + '\n');
    if (reportAbs && html !== undefined) await writeWhole(reportAbs, html);
    io.stdout.write(siteText(profile) + `Profile      ${out}\n` + (reportOut ? `Report       ${reportOut}\n` : ''));
    if (!profile.validated) {
      io.stderr.write(`pneumolens site: the profile is written but marks the site NOT validated: ${profile.not_validated_reason}\n`);
      return EXIT_FAILED;
    }
    return EXIT_OK;
  });
}

const f3 = (v: number | null) => (v === null ? 'n/a' : v.toFixed(3));
const pct = (v: number | null) => (v === null ? 'n/a' : `${(v * 100).toFixed(1)}%`);

/** The profile in words (also `pneumolens info --site`). */
export function siteText(p: SiteProfile): string {
  const v = p.validation;
  const c = p.calibration;
  const rows: Array<[string, string]> = [
    ['Site', `${p.site.name} (${p.site.created})`],
    ['Status', siteStatement(p)],
    ['Model', `${p.model.name} ${p.model.version} (sha256 ${p.model.sha256.slice(0, 12)}...)`],
    [
      'Films',
      `${p.data.n} found: ${Object.entries(p.data.n_per_class)
        .map(([l, n]) => `${n} ${l}`)
        .join(', ')} used, ${p.data.not_chest_xray} refused as not chest X-rays; ${p.data.groups} groups (${p.data.grouping})`,
    ],
    ['Estimate', `${v.folds}-fold by group (seed ${v.seed}), on ${v.n} films in scope`],
    ['AUC', `${f3(v.auc)}${v.auc_ci95 ? ` (95% CI ${f3(v.auc_ci95[0])}-${f3(v.auc_ci95[1])})` : ''}`],
    ['Sensitivity', `${pct(v.sensitivity)} (in-sample ${pct(p.in_sample.sensitivity)})`],
    ['Specificity', `${pct(v.specificity)} (in-sample ${pct(p.in_sample.specificity)})`],
    ['PPV / NPV', `${pct(v.ppv)} / ${pct(v.npv)}`],
    [
      'ECE',
      `${f3(v.ece_before)} with the card's calibration, ${f3(v.ece_after)} with the site's${v.ece_after_chance ? ` (a perfectly calibrated model reads ${f3(v.ece_after_chance.mean)} on ${v.n} films by chance alone)` : ''}`,
    ],
    ['Declined', pct(v.declined)],
    [
      'Calibration',
      `sigmoid(logit / ${c.temperature.toFixed(4)} ${c.bias < 0 ? '-' : '+'} ${Math.abs(c.bias).toFixed(4)}), threshold ${c.threshold.toFixed(4)} (${c.policy})`,
    ],
    [
      'Scope',
      p.scope.rule === 'none'
        ? p.scope.note
        : `in scope when the intended-use score is <= ${p.scope.threshold.toPrecision(4)} (the site's ${p.scope.quantile} quantile; card ${p.scope.card_threshold})`,
    ],
  ];
  const w = Math.max(...rows.map(([k]) => k.length)) + 2;
  return rows.map(([k, val]) => `${k.padEnd(Math.max(w, 13))}${val}`).join('\n') + '\n';
}
