/** `pneumolens serve`: starts the web server (src/server). */
import { resolve } from 'node:path';
import { command, num, str } from './args.ts';
import { EXIT_OK, UsageError, type Io } from './io.ts';

export const help = `Usage: pneumolens serve [options]

Starts the web interface and the HTTP API.

Options:
  --port N           TCP port (default: $PORT, else 8080)
  --host H           interface to listen on (default: $HOST, else 127.0.0.1)
  --site PROFILE     decide with a site profile (pneumolens site) (default: $PNEUMOLENS_SITE, else none);
                     one made with another model stops the start
  -h, --help         this help

Serves until SIGINT/SIGTERM, then finishes the requests in flight. The model is the one named by
$PNEUMOLENS_MODEL, else models/MODEL.
`;

export async function run(args: string[], io: Io): Promise<number> {
  const p = command(args, io, help, { string: ['port', 'host', 'site'] });
  if (!p) return EXIT_OK;
  if (p.positionals.length > 0) throw new UsageError(`serve takes no arguments, got '${p.positionals[0]}'`);
  const port = num(p, 'port', 0, 65535, true);
  const host = str(p, 'host');
  const site = str(p, 'site');
  if (site === '') throw new UsageError('--site needs a profile file (made by pneumolens site)');
  // imported lazily: the other commands never load the web stack
  const { startServer } = await import('../server/start.ts');
  await startServer({
    ...(port !== undefined ? { port } : {}),
    ...(host !== undefined ? { host } : {}),
    ...(site !== undefined ? { site: resolve(io.cwd, site) } : {}),
  });
  return EXIT_OK;
}
