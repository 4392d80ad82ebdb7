/** `pneumolens predict`: probability and label for each image, as a table, CSV or JSON. */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { COLORMAPS } from '../explain/colormaps.ts';
import type { AnalyseOptions } from '../types.ts';
import { choice, command, ENGINE_HELP, engineOptions, flag, num, str } from './args.ts';
import { analyseFiles } from './batch.ts';
import { withEngine } from './engine.ts';
import { expandInputs } from './files.ts';
import { resolveShard, shardLine, shardPositions } from './shard.ts';
import { csvHeader, csvRow, jsonRow, table, type PredictRow } from './format.ts';
import { EXIT_FAILED, EXIT_OK, UsageError, type Io } from './io.ts';
import { Progress } from './progress.ts';

export const help = `Usage: pneumolens predict [options] <file|dir|glob>...
       pneumolens predict [options] --files-from LIST

Predicts NORMAL / PNEUMONIA for each image. Directories are searched recursively for
.jpg .jpeg .png .webp .tif .tiff .dcm files (and extensionless files that look like images);
quote globs such as 'data/**/*.png' to let pneumolens expand them.

Options:
  --json             print JSON to stdout
  --csv              print CSV to stdout
  --cam DIR          write the Grad-CAM overlay of each image to DIR as <name>.cam.png, <name>
                     being the file name without its extension (<name>-2.cam.png, ... when
                     inputs share a name; the cam_file column says which is whose)
  --threshold X      decision threshold in [0, 1] (default: the model card's)
  --colormap NAME    overlay colormap: ${COLORMAPS.join(', ')} (default jet)
  --alpha A          overlay opacity in [0, 1] (default 0.45)
  --files-from LIST  also read inputs from LIST, one per line ('-' = standard input); for
                     lists too long for a command line
  --force            analyse images the input gate rejects as not chest X-rays (with a warning)
  --batch N          images per inference batch (default 8)
  --shard K/N        analyse only shard K (0-based) of N: a partition by a hash of each file's
                     path relative to its input folder, the same on every machine; in a
                     Kubernetes Indexed Job taken from JOB_COMPLETION_INDEX and JOB_COMPLETIONS
  --quiet            no progress bar
${ENGINE_HELP}
  -h, --help         this help

Images that do not look like chest X-rays (colour photos, documents, blank images, other
body parts...) are rejected: the table shows "REJECTED: not a chest X-ray", JSON and CSV carry
rejected=true and reason=not_a_chest_xray, and no label or probability. --force analyses them
anyway. When the model estimates its uncertainty, results above its cutoff are marked
"uncertain: refer to a clinician".

Exit status: 0 when every input was analysed, 1 when some input failed or was rejected (the
others are still reported), 2 on a usage error. Research and education tool, not a medical device.
`;

/**
 * Overlay names for one run, as the help says: `<name>.cam.png` from the input's file name without
 * its extension; a name already given in this run (compared case-insensitively, as on macOS and
 * Windows file systems) gets `-2`, `-3`, ... so no overlay overwrites another.
 */
export class CamNames {
  private readonly used = new Set<string>();

  name(file: string): string {
    const stem = basename(file).replace(/(.)\.[^.]+$/, '$1') || 'image';
    for (let k = 1; ; k++) {
      const name = `${k === 1 ? stem : `${stem}-${k}`}.cam.png`;
      if (!this.used.has(name.toLowerCase())) {
        this.used.add(name.toLowerCase());
        return name;
      }
    }
  }
}

const NO_LIST: string[] = [];

/** Inputs from --files-from: one per line (blank lines skipped), '-' reads standard input. */
async function readFileList(list: string | undefined, cwd: string): Promise<string[]> {
  if (list === undefined) return NO_LIST;
  if (list === '') throw new UsageError('--files-from needs a file (or - for standard input)');
  let text: string;
  if (list === '-') {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    text = Buffer.concat(chunks).toString('utf8');
  } else {
    try {
      text = await readFile(resolve(cwd, list), 'utf8');
    } catch (e) {
      throw new UsageError(`--files-from ${list}: ${(e as Error).message}`);
    }
  }
  return text.split(/\r?\n/).filter((line) => line.trim() !== '');
}

export async function run(args: string[], io: Io): Promise<number> {
  const p = command(args, io, help, {
    engine: true,
    string: ['cam', 'threshold', 'colormap', 'alpha', 'batch', 'files-from', 'shard'],
    boolean: ['json', 'csv', 'force', 'quiet'],
  });
  if (!p) return EXIT_OK;
  if (flag(p, 'json') && flag(p, 'csv')) throw new UsageError('choose one of --json and --csv');
  const listed = await readFileList(str(p, 'files-from'), io.cwd);
  const inputs = [...p.positionals, ...listed];
  if (inputs.length === 0) throw new UsageError(listed === NO_LIST ? 'no input files given' : 'the --files-from list is empty');
  const camDir = str(p, 'cam');
  if (camDir === '') throw new UsageError('--cam needs a directory');
  const threshold = num(p, 'threshold', 0, 1);
  const colormap = choice(p, 'colormap', COLORMAPS);
  const alpha = num(p, 'alpha', 0, 1);
  const batch = num(p, 'batch', 1, 256, true) ?? 8;
  const engineOpts = engineOptions(p);
  const shard = resolveShard(str(p, 'shard'), io.env);

  const { files: all, keys, missing } = await expandInputs(inputs, io.cwd);
  for (const m of missing) io.stderr.write(`pneumolens: ${m}: no such file, or no images found\n`);
  if (all.length === 0) return EXIT_FAILED;
  // --shard K/N (or an Indexed Job's environment): this machine's part of the files (src/cli/shard.ts)
  const files = shard ? shardPositions(keys, (k) => k, shard).map((i) => all[i]) : all;
  if (shard) io.stderr.write(`pneumolens: ${shardLine(shard, files.length, all.length)}\n`);

  const force = flag(p, 'force');
  const opts: AnalyseOptions = {
    cam: camDir !== undefined,
    heatmap: false, // only the overlay is written
    ...(force ? { force } : {}),
    ...(threshold !== undefined ? { threshold } : {}),
    ...(colormap !== undefined ? { colormap } : {}),
    ...(alpha !== undefined ? { alpha } : {}),
  };
  const camAbs = camDir === undefined ? undefined : resolve(io.cwd, camDir);
  if (camAbs) await mkdir(camAbs, { recursive: true });

  return withEngine(io, engineOpts, async (engine) => {
    const progress = new Progress(files.length, io.stderr, 'predict ', flag(p, 'quiet') ? false : undefined);
    const rows: PredictRow[] = [];
    const camNames = new CamNames();
    if (flag(p, 'csv')) io.stdout.write(csvHeader());
    for await (const outcomes of analyseFiles(engine, files, io.cwd, opts, batch)) {
      for (const o of outcomes) {
        const row: PredictRow = { ...o };
        if (camAbs && o.result?.cam) {
          const name = camNames.name(o.file);
          await writeFile(join(camAbs, name), o.result.cam.overlayPng);
          row.camFile = join(camDir as string, name);
          delete o.result.cam; // the PNG is on disk; do not hold every overlay in memory
        }
        rows.push(row);
        if (flag(p, 'csv')) io.stdout.write(csvRow(row));
      }
      progress.tick(outcomes.length, outcomes.filter((o) => o.error).length);
    }
    progress.finish();
    const failed = rows.filter((r) => r.error);
    for (const r of failed) io.stderr.write(`pneumolens: ${r.file}: ${r.error!.code}: ${r.error!.message}\n`);
    if (flag(p, 'json')) {
      io.stdout.write(
        JSON.stringify(
          {
            model: { name: engine.card.name, version: engine.card.version },
            ...(engine.site ? { site: engine.site } : {}),
            ...(shard ? { shard: { index: shard.index, count: shard.count, files: files.length, of: all.length } } : {}),
            results: rows.map(jsonRow),
          },
          null,
          2,
        ) + '\n',
      );
    } else if (!flag(p, 'csv')) {
      io.stdout.write(table(rows));
      if (engine.site) io.stdout.write(`${engine.site.statement}\n`);
    }
    const rejected = rows.filter((r) => r.status === 'rejected');
    for (const r of rejected)
      io.stderr.write(`pneumolens: ${r.file}: ${r.result!.reason ?? 'not_a_chest_xray'}: ${r.result!.gate.reasons.join('; ')}\n`);
    if (rejected.length > 0) {
      io.stderr.write(
        `pneumolens: ${rejected.length} input(s) rejected as not chest X-rays or outside the intended use (--force analyses them anyway)\n`,
      );
    }
    if (failed.length > 0 || missing.length > 0 || rejected.length > 0) {
      const analysed = rows.length - failed.length - rejected.length;
      io.stderr.write(
        `pneumolens: ${failed.length + missing.length} input(s) failed${rejected.length ? `, ${rejected.length} rejected` : ''}, ${analysed} analysed\n`,
      );
      return EXIT_FAILED;
    }
    return EXIT_OK;
  });
}
