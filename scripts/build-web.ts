/**
 * `npm run build:web [-- --out DIR]`: the static site that analyses on the user's device (default
 * dist/web/, git-ignored). Works from any static file server; `pneumolens serve` serves its
 * device/ folder too (with COOP/COEP, so the WASM runs multi-threaded).
 *
 *   index.html, app.js, style.css, favicon.svg   the page of web/ (asset links made relative)
 *   device/device.js                             src/web/device.ts and the engine, bundled by esbuild
 *   device/ort/ort-wasm-simd-threaded.{mjs,wasm} onnxruntime-web's WASM (SIMD, threads)
 *   device/model/card.json, device/model/<file>  the model card and the ONNX file it names
 *   _headers                                     COOP/COEP for hosts that read it (Netlify, Cloudflare Pages)
 *
 * The one place the browser's backends are chosen (BROWSER_MODULES below): src/model/runtime.ts
 * (onnxruntime-node) -> runtime.web.ts (onnxruntime-web), src/image/sharp-io.ts (sharp) ->
 * src/web/canvas-io.ts, and each node:* built-in -> its stand-in in src/web/node/. The build fails
 * if anything else would bring sharp, onnxruntime-node or a Node built-in into the bundle.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { defaultCardPath, loadCard } from '../src/model/card.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const src = (p: string) => join(ROOT, 'src', p);

/** Node engine module -> its browser counterpart. */
const BROWSER_MODULES: Record<string, string> = {
  [src('model/runtime.ts')]: src('model/runtime.web.ts'),
  [src('image/sharp-io.ts')]: src('web/canvas-io.ts'),
};
const NODE_SHIMS = join(ROOT, 'src', 'web', 'node');
/** What must never be in the bundle. */
const FORBIDDEN = /^(sharp|onnxruntime-node|fastify|@fastify\/.*)$/;

export const WASM_FILES = ['ort-wasm-simd-threaded.mjs', 'ort-wasm-simd-threaded.wasm'];

export interface BuildOptions {
  out?: string;
  /** Model card to ship (default: the engine's, models/MODEL or $PNEUMOLENS_MODEL). */
  card?: string;
  minify?: boolean;
}

export interface BuildReport {
  out: string;
  files: Array<{ path: string; bytes: number }>;
  model: { name: string; version: string; file: string };
}

const browserPlugin: esbuild.Plugin = {
  name: 'pneumolens-browser',
  setup(build) {
    build.onResolve({ filter: /^node:|^(fs|path|url|os|crypto|zlib|module|worker_threads|buffer)$/ }, (args) => {
      const name = args.path.replace(/^node:/, '').replace(/\/promises$/, '');
      if (name === 'buffer') return undefined; // the npm package `buffer`
      const shim = join(NODE_SHIMS, `${name}.ts`);
      if (args.path === 'zlib' && args.importer.includes(`${join('node_modules', 'dicom-parser')}`)) {
        return { path: shim }; // dicom-parser's own inflater is never used (dicom.ts inflates with a bound)
      }
      if (!args.path.startsWith('node:') || !existsSync(shim)) {
        return {
          errors: [{ text: `${args.path} (imported by ${relative(ROOT, args.importer)}) has no browser stand-in in src/web/node/` }],
        };
      }
      return { path: shim };
    });
    build.onResolve({ filter: FORBIDDEN }, (args) => ({
      errors: [{ text: `${args.path} must not be in the browser bundle (imported by ${relative(ROOT, args.importer)})` }],
    }));
    build.onResolve({ filter: /\.(ts|js)$/ }, (args) => {
      if (!args.path.startsWith('.')) return undefined;
      const abs = resolve(args.resolveDir, args.path);
      const swap = BROWSER_MODULES[abs];
      return swap ? { path: swap } : undefined;
    });
  },
};

function copyInto(from: string, to: string): void {
  mkdirSync(dirname(to), { recursive: true });
  copyFileSync(from, to);
}

function listFiles(dir: string, base = dir): Array<{ path: string; bytes: number }> {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? listFiles(p, base) : [{ path: relative(base, p), bytes: statSync(p).size }];
  });
}

export async function buildWeb(opts: BuildOptions = {}): Promise<BuildReport> {
  const out = resolve(opts.out ?? join(ROOT, 'dist', 'web'));
  const card = loadCard(opts.card ?? defaultCardPath());
  rmSync(out, { recursive: true, force: true });
  mkdirSync(join(out, 'device'), { recursive: true });

  // The page: the same files `pneumolens serve` serves, with root-relative asset links made
  // relative so that the site also works from a sub-folder (e.g. GitHub Pages' /<repo>/).
  const web = join(ROOT, 'web');
  for (const name of readdirSync(web)) {
    if (name === 'index.html') {
      const html = readFileSync(join(web, name), 'utf8').replace(/(href|src)="\/(?!\/)([^"]*)"/g, (m, attr: string, path: string) =>
        path === 'docs' ? m : `${attr}="./${path}"`,
      );
      // The page's own marker: the on-device engine is here, and no server is asked (web/on-device.js).
      const marker = '<meta name="pneumolens-device" content="./device/device.js">';
      if (!html.includes('</head>')) throw new Error('web/index.html has no </head>');
      writeFileSync(join(out, name), html.replace('</head>', `${marker}\n</head>`));
    } else if (statSync(join(web, name)).isFile()) copyInto(join(web, name), join(out, name));
  }

  await esbuild.build({
    entryPoints: [src('web/device.ts')],
    outfile: join(out, 'device', 'device.js'),
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['chrome110', 'firefox115', 'safari16.4'],
    conditions: ['onnxruntime-web-use-extern-wasm'], // onnxruntime-web loads its WASM from device/ort/
    mainFields: ['browser', 'module', 'main'],
    define: { 'process.env': '{}' },
    inject: [src('web/node/buffer-global.ts')],
    minify: opts.minify ?? true,
    sourcemap: 'linked',
    legalComments: 'linked',
    logLevel: 'warning',
    plugins: [browserPlugin],
  });

  const ortDist = join(ROOT, 'node_modules', 'onnxruntime-web', 'dist');
  for (const f of WASM_FILES) copyInto(join(ortDist, f), join(out, 'device', 'ort', f));
  const modelDir = join(out, 'device', 'model');
  mkdirSync(modelDir, { recursive: true });
  copyInto(card.modelPath, join(modelDir, card.file));
  if (basename(card.file) !== card.file) throw new Error(`the card's file "${card.file}" must be a plain file name for the web build`);
  const { cardPath: _c, modelPath: _m, ...json } = card;
  writeFileSync(join(modelDir, 'card.json'), `${JSON.stringify(json, null, 1)}\n`);
  writeFileSync(join(out, '_headers'), '/*\n  Cross-Origin-Opener-Policy: same-origin\n  Cross-Origin-Embedder-Policy: require-corp\n');
  return { out, files: listFiles(out), model: { name: card.name, version: card.version, file: card.file } };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf('--out');
  const report = await buildWeb(i > 0 ? { out: process.argv[i + 1] } : {});
  const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
  console.log(`Built ${relative(process.cwd(), report.out) || '.'} (model ${report.model.name} ${report.model.version}):`);
  for (const f of report.files) console.log(`  ${f.path.padEnd(44)} ${mb(f.bytes)}`);
}
