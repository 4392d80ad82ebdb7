/** `pneumolens pacs`: follows an Orthanc server and writes a result into each chest radiograph's study (src/pacs). */
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { defaultMaxFileBytes } from '../image/limits.ts';
import { choice, command, ENGINE_HELP, engineOptions, flag, num, str } from './args.ts';
import { withEngine } from './engine.ts';
import { EXIT_FAILED, EXIT_OK, UsageError, type Io } from './io.ts';

export const help = `Usage: pneumolens pacs --orthanc URL [options]

Follows Orthanc's change feed. Each new chest radiograph (Modality CR/DX, or a CR/DX SOP class)
is analysed once, and two instances are stored into the same study, as new series:
  - a Secondary Capture: the Grad-CAM overlay with the label, probability, threshold, model
    version and "not a medical device" burned in (series 9901);
  - a Comprehensive SR: finding, probability, threshold, uncertainty, input gate result, model
    name and version, the disclaimer, referencing the source image (series 9902).
An image the input gate refuses, or one that cannot be decoded, gets an SR saying why (no SC).
Other modalities (CT, MR, ...) and the instances pneumolens wrote itself are skipped.

Options:
  --orthanc URL      Orthanc's REST API (default: $PNEUMOLENS_ORTHANC_URL), e.g. http://127.0.0.1:8042
  --user NAME        HTTP user (default: $PNEUMOLENS_ORTHANC_USER); the password is read from
                     $PNEUMOLENS_ORTHANC_PASSWORD only, never from the command line
  --state FILE       cursor file; a restart resumes after the last change handled (default:
                     pacs-HOST_PORT.json, one per Orthanc server, in $PNEUMOLENS_STATE_DIR, else
                     $XDG_STATE_HOME/pneumolens, else ~/.local/state/pneumolens; the log says where)
  --start WHERE      for a new state file: beginning (every instance Orthanc holds, default) or
                     now (only instances that arrive from now on)
  --once             handle every pending change, then exit (default: poll until SIGINT/SIGTERM)
  --interval S       seconds between polls once the feed is drained (default 5)
  --batch N          changes per request to Orthanc (default 50, at most 1000)
  --timeout S        timeout of each request to Orthanc, in seconds (default 30)
  --verbose          also log Orthanc instance ids and SOP Instance UIDs
${ENGINE_HELP}
  -h, --help         this help

Instance files larger than $PNEUMOLENS_MAX_FILE_MB (64) are not downloaded (an SR says so). Logs
carry no patient data. Exit status: 0 when done (or stopped by a signal), 1 when Orthanc could not
be reached in --once mode, 2 on a usage error. Research and education tool, not a medical device.
`;

export async function run(args: string[], io: Io): Promise<number> {
  const p = command(args, io, help, {
    engine: true,
    string: ['orthanc', 'user', 'state', 'start', 'interval', 'batch', 'timeout'],
    boolean: ['once', 'verbose'],
  });
  if (!p) return EXIT_OK;
  if (p.positionals.length > 0) throw new UsageError(`pacs takes no arguments, got '${p.positionals[0]}'`);
  const url = str(p, 'orthanc') ?? (io.env.PNEUMOLENS_ORTHANC_URL?.trim() || undefined);
  if (!url) throw new UsageError('--orthanc URL is required (or set PNEUMOLENS_ORTHANC_URL)');
  const start = choice(p, 'start', ['beginning', 'now'] as const) ?? 'beginning';
  const intervalMs = (num(p, 'interval', 0.1, 3600) ?? 5) * 1000;
  const batch = num(p, 'batch', 1, 1000, true) ?? 50;
  const timeoutMs = (num(p, 'timeout', 1, 600) ?? 30) * 1000;
  const user = str(p, 'user') ?? (io.env.PNEUMOLENS_ORTHANC_USER || undefined);
  const password = io.env.PNEUMOLENS_ORTHANC_PASSWORD;
  const { Orthanc } = await import('../pacs/orthanc.ts');
  let orthanc;
  try {
    orthanc = new Orthanc({
      url,
      ...(user !== undefined ? { username: user } : {}),
      ...(password !== undefined ? { password } : {}),
      timeoutMs,
      maxFileBytes: defaultMaxFileBytes(io.env),
    });
  } catch (e) {
    throw new UsageError(`--orthanc: ${(e as Error).message}`);
  }
  const stateArg = str(p, 'state');
  const statePath = stateArg !== undefined ? resolve(io.cwd, stateArg) : defaultStatePath(orthanc.origin, io.env);
  const log = (line: string) => io.stderr.write(line + '\n');
  const controller = new AbortController();
  const stop = () => {
    log('pacs: stopping after the current instance');
    controller.abort();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    return await withEngine(io, engineOptions(p), async (engine) => {
      const { Watcher } = await import('../pacs/watcher.ts');
      log(`pacs: following ${orthanc.origin} with ${engine.card.name} ${engine.card.version}${flag(p, 'once') ? ' (once)' : ''}`);
      const summary = await new Watcher({
        orthanc,
        engine,
        statePath,
        batch,
        intervalMs,
        once: flag(p, 'once'),
        start,
        log,
        verbose: flag(p, 'verbose'),
        signal: controller.signal,
      }).run();
      const c = summary.counts;
      log(
        `pacs: cursor ${summary.since}; totals: ${c.analysed} analysed, ${c.refused} refused, ${c.failed} failed, ` +
          `${c.skipped_not_radiograph} not radiographs, ${c.skipped_own} own results, ${c.already_done} already done, ${c.gone} deleted`,
      );
      return flag(p, 'once') && summary.orthancErrors > 0 ? EXIT_FAILED : EXIT_OK;
    });
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}

/** The state folder: $PNEUMOLENS_STATE_DIR, else $XDG_STATE_HOME/pneumolens, else ~/.local/state/pneumolens. */
export function stateDir(env: NodeJS.ProcessEnv): string {
  const own = env.PNEUMOLENS_STATE_DIR?.trim();
  if (own) return resolve(own);
  const xdg = env.XDG_STATE_HOME?.trim();
  // XDG: a relative path is invalid and ignored.
  if (xdg && xdg.startsWith('/')) return join(xdg, 'pneumolens');
  return join(env.HOME?.trim() || homedir(), '.local', 'state', 'pneumolens');
}

/** The default cursor file of one Orthanc server: pacs-HOST_PORT[_PATH].json in the state folder. */
export function defaultStatePath(origin: string, env: NodeJS.ProcessEnv): string {
  const u = new URL(origin);
  const port = u.port || (u.protocol === 'https:' ? '443' : '80');
  const name = `${u.hostname}_${port}${u.pathname.replace(/\/+$/, '')}`.replace(/[^A-Za-z0-9.-]+/g, '_');
  return join(stateDir(env), `pacs-${name.slice(0, 120)}.json`);
}
