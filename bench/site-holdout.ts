/**
 * The "Done when" of issue 20 on a patient split of one labelled site folder: fit a site profile
 * on some patients (`pneumolens site`), then evaluate the other patients with the card alone and
 * with the profile (`pneumolens evaluate --site`), and print the table. None of the data is
 * committed: the two halves are copies in a temporary directory, removed at the end (unless --keep).
 *
 *   npx tsx bench/site-holdout.ts [--data ../shared/data/nih_dev] [--fit-share 0.5] [--seed 1] [--policy balanced] [--model CARD] [--keep DIR]
 *
 * DIR holds NORMAL/, PNEUMONIA/ and labels.csv (columns file, patient_id). Patients are shuffled
 * with the seed and the first --fit-share of them fit the profile; each patient is in one half only.
 * --test-from models/dev_split.json: the test patients are instead those of the files that split
 * lists for this folder (sources.<folder name>.files: the model's own held-out validation films, so
 * the test patients are unseen by the model as well as by the profile); all the others fit.
 */
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { run } from '../src/cli/main.ts';
import type { EvaluationJson } from '../src/cli/evaluate.ts';
import { mulberry32 } from '../src/eval/metrics.ts';
import { REPO_ROOT } from '../src/model/card.ts';
import { parseCsv } from '../src/site/groups.ts';
import type { SiteProfile } from '../src/site/profile.ts';

const { values } = parseArgs({
  options: {
    data: { type: 'string', default: resolve(REPO_ROOT, '..', 'shared', 'data', 'nih_dev') },
    'fit-share': { type: 'string', default: '0.5' },
    seed: { type: 'string', default: '1' },
    policy: { type: 'string', default: 'balanced' },
    model: { type: 'string' },
    keep: { type: 'string' },
    'test-from': { type: 'string' },
  },
});
const data = resolve(values.data!);
const share = Number(values['fit-share']);
const seed = Number(values.seed);
if (!(share > 0 && share < 1)) throw new Error('--fit-share must be in (0, 1)');

const [head, ...rows] = parseCsv(await readFile(join(data, 'labels.csv'), 'utf8'));
const fileCol = head.indexOf('file');
const patientCol = head.indexOf('patient_id');
if (fileCol < 0 || patientCol < 0) throw new Error(`${data}/labels.csv needs the columns file and patient_id`);
const patients = [...new Set(rows.map((r) => r[patientCol]))].sort();
const rand = mulberry32(seed);
for (let i = patients.length - 1; i > 0; i--) {
  const j = Math.floor(rand() * (i + 1));
  [patients[i], patients[j]] = [patients[j], patients[i]];
}
let fitPatients = new Set(patients.slice(0, Math.round(patients.length * share)));
if (values['test-from']) {
  const split = JSON.parse(await readFile(resolve(values['test-from']), 'utf8')) as { sources?: Record<string, { files?: string[] }> };
  const held = split.sources?.[basename(data)]?.files;
  if (!held) throw new Error(`${values['test-from']} lists no files for ${basename(data)} (sources.${basename(data)}.files)`);
  const heldSet = new Set(held);
  const testPatients = new Set(rows.filter((r) => heldSet.has(r[fileCol])).map((r) => r[patientCol]));
  fitPatients = new Set(patients.filter((p) => !testPatients.has(p)));
}

const work = values.keep ? resolve(values.keep) : await mkdtemp(join(tmpdir(), 'pneumolens-holdout-'));
const halves = { fit: join(work, 'fit'), test: join(work, 'test') };
const csv: Record<string, string[]> = { fit: [head.join(',')], test: [head.join(',')] };
for (const r of rows) {
  const half = fitPatients.has(r[patientCol]) ? 'fit' : 'test';
  const target = join(halves[half], r[fileCol]);
  await mkdir(dirname(target), { recursive: true });
  await copyFile(join(data, r[fileCol]), target); // a copy (listImages does not follow links), in a temporary folder
  csv[half].push(r.map((v) => (/[",]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v)).join(','));
}
for (const half of ['fit', 'test'] as const) await writeFile(join(halves[half], 'labels.csv'), csv[half].join('\n') + '\n');

const quiet = { write: () => true };
const cli = async (args: string[]) => {
  let err = '';
  const code = await run([...args, ...(values.model ? ['--model', values.model] : [])], {
    stdout: quiet,
    stderr: { write: (s: string) => ((err += s), true) },
    cwd: work,
    env: {},
  });
  if (code !== 0) process.stderr.write(`pneumolens ${args[0]} exited ${code}\n${err.slice(-2000)}\n`);
  return code;
};
const profilePath = join(work, 'site.json');
const t0 = performance.now();
await cli([
  'site',
  halves.fit,
  '--out',
  profilePath,
  '--name',
  'holdout-fit',
  '--policy',
  values.policy!,
  '--quiet',
  '--report',
  join(work, 'site.html'),
]);
const profile = JSON.parse(await readFile(profilePath, 'utf8')) as SiteProfile;
const evaluate = async (extra: string[], out: string) => {
  await cli(['evaluate', halves.test, '--json', join(work, out), '--quiet', ...extra]);
  return JSON.parse(await readFile(join(work, out), 'utf8')) as EvaluationJson;
};
const card = await evaluate(['--force'], 'card-forced.json');
const cardGated = await evaluate([], 'card.json');
const site = await evaluate(['--site', profilePath], 'site-eval.json');
const seconds = (performance.now() - t0) / 1000;

const f3 = (v: number | null | undefined) => (v === null || v === undefined ? 'n/a' : v.toFixed(3));
const declined = (e: EvaluationJson) => (e.rejected.length + e.errors.length) / (e.n + e.rejected.length + e.errors.length);
const row = (name: string, e: EvaluationJson) =>
  `| ${name} | ${e.n + e.rejected.length + e.errors.length} | ${(declined(e) * 100).toFixed(1)}% | ${f3(e.auc)} [${f3(e.auc_ci95?.lower)}, ${f3(e.auc_ci95?.upper)}] | ${f3(e.ece)} | ${f3(e.ece_chance?.mean)} (${f3(e.ece_chance?.p90)}) | ${f3(e.sensitivity)} | ${f3(e.specificity)} | ${f3(e.threshold)} |`;
const v = profile.validation;
const lines = [
  `Data ${data}: ${patients.length} patients, ${fitPatients.size} fit the profile (${values['test-from'] ? `test patients from ${values['test-from']}` : `seed ${seed}`}), the other ${patients.length - fitPatients.size} are tested.`,
  `Model ${profile.model.name} ${profile.model.version}; profile ${profile.validated ? 'validated' : `NOT validated (${profile.not_validated_reason})`}, policy ${profile.calibration.policy}, scope ${profile.scope.rule}.`,
  '',
  '| test patients | films | declined | AUC [95% CI] | ECE | ECE of a perfectly calibrated model by chance: mean (90%) | sensitivity | specificity | threshold |',
  '|---|---|---|---|---|---|---|---|---|',
  row('card alone (gate as shipped)', cardGated),
  row('card alone, forced past every gate', card),
  row('`--site site.json`', site),
  '',
  `Profile's own k-fold estimate on the fit patients (${v.folds} folds, n ${v.n}): AUC ${f3(v.auc)} [${f3(v.auc_ci95?.[0])}, ${f3(v.auc_ci95?.[1])}], sensitivity ${f3(v.sensitivity)}, specificity ${f3(v.specificity)}, ECE ${f3(v.ece_before)} -> ${f3(v.ece_after)}, declined ${(v.declined * 100).toFixed(1)}%.`,
  `Wall ${seconds.toFixed(0)} s, load average ${loadavg()
    .map((l) => l.toFixed(1))
    .join(' ')}. Files kept in ${values.keep ? work : '(temporary, removed)'}.`,
];
process.stdout.write(lines.join('\n') + '\n');
if (!values.keep) await rm(work, { recursive: true, force: true });
