/**
 * pneumolens command line: predict, evaluate, info, serve. `run(argv, io)` is the whole CLI and is
 * what tests call; the bottom of this file wires it to the real process when run as a script.
 */
import { fileURLToPath } from 'node:url';
import { readFileSync, realpathSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { isPneumoError } from '../errors.ts';
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError, processIo, type Io } from './io.ts';
import * as predict from './predict.ts';
import * as evaluate from './evaluate.ts';
import * as info from './info.ts';
import * as serve from './serve.ts';
import * as pacs from './pacs.ts';
import * as site from './site.ts';

interface Command {
  help: string;
  run(args: string[], io: Io): Promise<number>;
}

const COMMANDS: Record<string, Command & { summary: string }> = {
  predict: { ...predict, summary: 'probability and label for images, files, folders or globs' },
  evaluate: { ...evaluate, summary: 'metrics and an HTML report on DIR/{NORMAL,PNEUMONIA}' },
  info: { ...info, summary: 'the model card in words' },
  serve: { ...serve, summary: 'start the web interface and HTTP API' },
  pacs: { ...pacs, summary: 'follow an Orthanc PACS and store results into each study' },
  site: { ...site, summary: "validate on a site's labelled films and write its profile (--site)" },
};

export const HELP = `Usage: pneumolens <command> [options]

Chest X-ray pneumonia detector with calibrated probability and Grad-CAM explanations.
Research and education tool, not a medical device.

Commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`)
  .join('\n')}

Run 'pneumolens <command> --help' for the options of a command.
`;

export async function run(argv: string[], io: Io): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    const sub = name === 'help' ? rest[0] : undefined;
    if (sub !== undefined && COMMANDS[sub]) {
      io.stdout.write(COMMANDS[sub].help);
      return EXIT_OK;
    }
    (name === undefined ? io.stderr : io.stdout).write(HELP);
    return name === undefined ? EXIT_USAGE : EXIT_OK;
  }
  if (name === '--version' || name === '-v') {
    const { createRequire } = await import('node:module');
    const pkg = createRequire(import.meta.url)('../../package.json') as { version: string };
    io.stdout.write(`pneumolens ${pkg.version}\n`);
    return EXIT_OK;
  }
  const cmd = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!cmd) {
    io.stderr.write(`pneumolens: unknown command '${name}'\n\n${HELP}`);
    return EXIT_USAGE;
  }
  try {
    return await cmd.run(rest, io);
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr.write(`pneumolens ${name}: ${e.message}\n\n${cmd.help}`);
      return EXIT_USAGE;
    }
    if (isPneumoError(e)) {
      io.stderr.write(`pneumolens ${name}: ${e.code}: ${e.message}\n`);
      return EXIT_FAILED;
    }
    io.stderr.write(`pneumolens ${name}: ${e instanceof Error ? e.message : String(e)}\n`);
    return EXIT_FAILED;
  }
}

function isMain(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

/**
 * The arguments: from the file bin/pneumolens.js wrote for a long list (PNEUMOLENS_ARGV_FILE; it
 * keeps ONNX Runtime's process command line short, see there), else the command line.
 */
export function processArgv(env: NodeJS.ProcessEnv = process.env, argv = process.argv): string[] {
  const file = env.PNEUMOLENS_ARGV_FILE;
  if (!file) return argv.slice(2);
  delete env.PNEUMOLENS_ARGV_FILE;
  try {
    const args: unknown = JSON.parse(readFileSync(file, 'utf8'));
    if (!Array.isArray(args) || !args.every((a) => typeof a === 'string')) throw new Error('not a list of strings');
    return [...args, ...argv.slice(2)];
  } finally {
    rmSync(dirname(file), { recursive: true, force: true });
  }
}

if (isMain()) {
  const code = await run(processArgv(), processIo());
  process.exitCode = code;
}
