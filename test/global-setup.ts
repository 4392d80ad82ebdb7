/**
 * Once per `vitest` run: one temporary folder that every test makes its own folders in
 * (fixtures/paths.ts testTmp), removed with its contents when the run ends, so that a run leaves
 * nothing behind in the OS's temporary folder. Test files run in forked workers, which inherit
 * the environment variable set here.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export default function setup(): () => void {
  const root = mkdtempSync(join(tmpdir(), 'pneumolens-tests-'));
  process.env.PNEUMOLENS_TEST_TMP = root;
  return () => rmSync(root, { recursive: true, force: true });
}
