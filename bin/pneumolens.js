#!/usr/bin/env node
// Thin launcher: runs the TypeScript CLI through tsx so users need no build step.
// Signals are forwarded so that `kill <pid>` of the launcher stops `serve` gracefully.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const tsxCli = require.resolve('tsx/cli');
// onnxruntime-node 1.30 segfaults in InferenceSession.create when the process's command line is
// longer than about 30,000 bytes (e.g. `pneumolens predict *.jpeg` over 460 files). The process
// that loads the model therefore never gets a long argument list: above 8 KB the arguments go
// through a private temporary file named in PNEUMOLENS_ARGV_FILE, which src/cli/main.ts reads and deletes.
const args = process.argv.slice(2);
const env = { ...process.env };
delete env.PNEUMOLENS_ARGV_FILE;
let childArgs = args;
let argvFile;
if (Buffer.byteLength(args.join('\0')) > 8192) {
  const dir = mkdtempSync(join(tmpdir(), 'pneumolens-argv-'));
  argvFile = join(dir, 'argv.json');
  writeFileSync(argvFile, JSON.stringify(args), { mode: 0o600 });
  env.PNEUMOLENS_ARGV_FILE = argvFile;
  childArgs = [];
}
const child = spawn(process.execPath, [tsxCli, join(root, 'src/cli/main.ts'), ...childArgs], {
  stdio: 'inherit',
  env,
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => child.kill(sig));
}
child.on('exit', (code, signal) => {
  if (argvFile) rmSync(dirname(argvFile), { recursive: true, force: true }); // normally the child did it
  process.exit(code ?? (signal ? 128 + 1 : 1));
});
