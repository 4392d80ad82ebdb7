/**
 * The one Chromium launcher every browser test uses, driven by playwright-core.
 *
 * - `CHROMIUM_PATH` set: that browser (e.g. Debian's `/usr/bin/chromium`).
 * - otherwise: the headless Chromium that ships inside the `@sparticuz/chromium` npm package, so
 *   `npm install && npm test` needs nothing beyond Node and npm. Its `executablePath()` unpacks the
 *   binary to the OS temp folder (`/tmp/chromium`, about 2 s, once per machine); its `args` are
 *   the flags that build needs (headless shell, no sandbox, no zygote), less `--single-process`.
 *
 * Nothing falls back silently: a missing `CHROMIUM_PATH` is an error, not a search of the system.
 * Launch options: headless, 60 s launch timeout; tests open pages on 127.0.0.1 only.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { brotliDecompressSync } from 'node:zlib';
import { chromium, type Browser } from 'playwright-core';

/** Where browser tests save their screenshots (git-ignored). */
export const SCREENSHOTS = resolve(import.meta.dirname, '..', 'test-results');

/** No background connections: the tests talk to 127.0.0.1 only. */
const QUIET = ['--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

export interface ChromiumChoice {
  executablePath: string;
  args: string[];
  /** Environment for the browser: LD_LIBRARY_PATH when it needs the bundled NSS libraries. */
  env?: Record<string, string>;
  /** Where the browser came from, for messages. */
  source: 'CHROMIUM_PATH' | '@sparticuz/chromium';
}

/** Which browser to launch, and with which flags. */
export async function chooseChromium(env: NodeJS.ProcessEnv = process.env): Promise<ChromiumChoice> {
  const given = env.CHROMIUM_PATH?.trim();
  if (given) {
    if (!existsSync(given)) throw new Error(`CHROMIUM_PATH=${given} does not exist; unset it to use the bundled @sparticuz/chromium`);
    // no sandbox as root; no GPU in CI
    return { executablePath: given, args: ['--no-sandbox', '--disable-gpu', ...QUIET], source: 'CHROMIUM_PATH' };
  }
  const { default: bundled } = await import('@sparticuz/chromium');
  const executablePath = await unpackOnce('chromium', () => bundled.executablePath());
  // --single-process is for AWS Lambda's prctl limits; here it makes the browser exit as soon as a
  // test closes its first page ("Target page, context or browser has been closed"), so it is dropped.
  const args = bundled.args.filter((a) => a !== '--single-process');
  const choice: ChromiumChoice = { executablePath, args: [...args, ...QUIET], source: '@sparticuz/chromium' };
  // The binary links NSS, NSPR and expat. Most desktops and CI images have them; a minimal Debian
  // (node:20-slim) does not. The package carries them (built for glibc >= 2.34, so they are used
  // only when the system lacks its own, never in place of them).
  const missing = missingLibraries(executablePath);
  if (missing.length > 0) {
    const lib = await unpackOnce('nss', () => unpackBundledLibraries());
    const have = (env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean);
    choice.env = { ...stringEnv(env), LD_LIBRARY_PATH: [lib, ...have].join(':') };
  }
  return choice;
}

/** Shared libraries that `ldd` cannot find for `binary` (empty when all resolve or ldd is absent). */
export function missingLibraries(binary: string, ldd = spawnSync('ldd', [binary], { encoding: 'utf8' })): string[] {
  if (ldd.error || typeof ldd.stdout !== 'string') return [];
  return ldd.stdout
    .split('\n')
    .filter((line) => /=>\s*not found/.test(line))
    .map((line) => line.trim().split(/\s/)[0]);
}

/** Unpacks the package's bin/al2023.tar.br (NSS, NSPR, expat) and returns its lib folder. */
function unpackBundledLibraries(): Promise<string> {
  const require = createRequire(import.meta.url);
  const bin = join(dirname(require.resolve('@sparticuz/chromium')), '..', '..', 'bin');
  const out = join(tmpdir(), 'pneumolens-chromium-libs');
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const tar = spawnSync('tar', ['-x', '-C', out], { input: brotliDecompressSync(readFileSync(join(bin, 'al2023.tar.br'))) });
  if (tar.status !== 0) throw new Error(`could not unpack the bundled Chromium libraries: ${tar.stderr?.toString() ?? tar.error}`);
  return Promise.resolve(join(out, 'lib'));
}

function stringEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => typeof e[1] === 'string'));
}

/**
 * `executablePath()` writes /tmp/chromium in place and trusts any file of that name, so two test
 * files unpacking at once, or an interrupted unpack, would leave a half-written binary. A lock
 * folder serialises the unpack across processes and a marker file records a complete one.
 */
async function unpackOnce(what: 'chromium' | 'nss', unpack: () => Promise<string>): Promise<string> {
  const lock = join(tmpdir(), `pneumolens-${what}.lock`);
  const marker = join(tmpdir(), `pneumolens-${what}.ok`);
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      // another process is unpacking; a lock older than 2 minutes is left over from a killed run
      const age = Date.now() - (statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
      if (Date.now() > deadline || age > 120_000) {
        rmSync(lock, { recursive: true, force: true });
      } else {
        await sleep(200);
      }
    }
  }
  try {
    if (!existsSync(marker)) {
      if (what === 'chromium') rmSync(join(tmpdir(), 'chromium'), { force: true }); // a partial unpack: start again
    } else if (what === 'nss') {
      const done = readFileSync(marker, 'utf8').trim();
      if (existsSync(done)) return done;
    }
    const path = await unpack();
    writeFileSync(marker, `${path}\n`);
    return path;
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

export async function launchChromium(): Promise<Browser> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const { executablePath, args, env } = await chooseChromium();
  return chromium.launch({ executablePath, args, env, headless: true, timeout: 60_000 });
}
