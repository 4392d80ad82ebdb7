/**
 * Expands command-line inputs into image file paths: plain files (taken as given, the decoder sniffs
 * the bytes), directories (recursive, by extension; extensionless files are sniffed for DICOM and
 * friends) and globs with `*`, `?`, `[...]` and `**` (Node 20 has no fs.glob).
 */
import { open, readdir, stat } from 'node:fs/promises';
import { extname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { sniffFormat } from '../image/sniff.ts';

export const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.webp', '.tif', '.tiff', '.dcm', '.dicom']);

export interface Expansion {
  files: string[];
  /**
   * For each file, its path relative to the input root it was found under ('/'-separated): the
   * directory or the glob's fixed part; a file named directly is its own key, as written. The key
   * of `--shard` (src/cli/shard.ts): the same on every machine whatever the mount point.
   */
  keys: string[];
  /** Inputs that matched nothing (missing paths, empty globs, directories without images). */
  missing: string[];
}

export function hasGlob(s: string): boolean {
  return /[*?[]/.test(s);
}

/** Compiles a glob (with `/` separators) to an anchored RegExp. `**` spans directories. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*') {
      if (glob[i + 1] === '*') {
        const slashAfter = glob[i + 2] === '/';
        const atStart = i === 0 || glob[i - 1] === '/';
        i += slashAfter ? 2 : 1;
        re += atStart && slashAfter ? '(?:[^/]*/)*' : '.*';
      } else {
        re += '[^/]*';
      }
    } else if (c === '?') {
      re += '[^/]';
    } else if (c === '[') {
      const close = glob.indexOf(']', i + 2);
      if (close === -1) {
        re += '\\[';
      } else {
        let body = glob.slice(i + 1, close).replace(/\\/g, '\\\\');
        if (body.startsWith('!')) body = '^' + body.slice(1);
        re += `[${body}]`;
        i = close;
      }
    } else {
      re += c.replace(/[.+^${}()|\\\]]/g, '\\$&');
    }
  }
  return new RegExp(`^${re}$`);
}

async function isImageFile(path: string): Promise<boolean> {
  const ext = extname(path).toLowerCase();
  if (IMAGE_EXTENSIONS.has(ext)) return true;
  if (ext !== '') return false;
  // extensionless (typical for DICOM exports): look at the first bytes
  const fh = await open(path, 'r');
  try {
    const buf = new Uint8Array(132);
    const { bytesRead } = await fh.read(buf, 0, 132, 0);
    return sniffFormat(buf.subarray(0, bytesRead)) !== null;
  } finally {
    await fh.close();
  }
}

/**
 * All files under `dir`, recursively down to `depth` levels (1 = only `dir` itself), sorted,
 * skipping dot-files and dot-directories.
 */
async function walk(dir: string, depth = Infinity): Promise<string[]> {
  const out: string[] = [];
  const entries = await readdir(dir, { withFileTypes: true });
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      if (depth > 1) out.push(...(await walk(p, depth - 1)));
    } else if (e.isFile()) out.push(p);
  }
  return out;
}

export async function listImages(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const f of await walk(dir)) if (await isImageFile(f)) out.push(f);
  return out;
}

async function expandGlob(pattern: string, cwd: string): Promise<Array<{ file: string; key: string }>> {
  const norm = pattern.split(sep).join('/');
  const parts = norm.split('/');
  const firstWild = parts.findIndex(hasGlob);
  const baseParts = parts.slice(0, firstWild);
  const base = baseParts.length === 0 ? cwd : resolve(cwd, baseParts.join('/') || '/');
  const restParts = parts.slice(firstWild);
  const rest = globToRegExp(restParts.join('/'));
  // without `**` the pattern cannot match deeper than its own number of segments
  const depth = restParts.some((p) => p.includes('**')) ? Infinity : restParts.length;
  let all: string[];
  try {
    all = await walk(base, depth);
  } catch {
    return [];
  }
  const out: Array<{ file: string; key: string }> = [];
  for (const f of all) {
    const rel = relative(base, f).split(sep).join('/');
    if (rest.test(rel) && (await isImageFile(f))) {
      out.push({ file: isAbsolute(pattern) ? f : relative(cwd, f) || f, key: rel });
    }
  }
  return out;
}

/** Expands inputs in order; a file reached twice is listed once. */
export async function expandInputs(inputs: string[], cwd: string): Promise<Expansion> {
  const files: string[] = [];
  const keys: string[] = [];
  const seen = new Set<string>();
  const missing: string[] = [];
  const add = ({ file, key }: { file: string; key: string }): void => {
    const abs = resolve(cwd, file);
    if (!seen.has(abs)) {
      seen.add(abs);
      files.push(file);
      keys.push(key);
    }
  };
  const slashes = (p: string) => p.split(sep).join('/');
  for (const input of inputs) {
    const st = await stat(resolve(cwd, input)).catch(() => null);
    let found: Array<{ file: string; key: string }>;
    if (st?.isFile()) found = [{ file: input, key: slashes(input) }];
    else if (st?.isDirectory()) {
      const root = resolve(cwd, input);
      found = (await listImages(root)).map((f) => ({ file: isAbsolute(input) ? f : relative(cwd, f), key: slashes(relative(root, f)) }));
    } else if (hasGlob(input)) found = await expandGlob(input, cwd);
    else found = [];
    if (found.length === 0) missing.push(input);
    found.forEach(add);
  }
  return { files, keys, missing };
}
