/**
 * Long argument lists (`pneumolens predict *.jpeg` over hundreds of files). onnxruntime-node 1.30
 * segfaults in InferenceSession.create when the process's command line exceeds about 30,000 bytes;
 * bin/pneumolens.js hands long lists to the CLI through a temporary file instead.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { processArgv } from '../../src/cli/main.ts';
import { REPO as ROOT, testTmp } from '../fixtures/paths.ts';

const XRAY = resolve(ROOT, 'test', 'fixtures', 'golden', 'pneumonia_gray_224.png');

describe('long argument lists', () => {
  it('bin/pneumolens.js: 1,000 arguments (45 KB) do not reach the process that loads the model', () => {
    const missing = Array.from({ length: 999 }, (_, i) => `no-such-folder/an-x-ray-that-is-not-there-${String(i).padStart(4, '0')}.png`);
    const args = ['predict', '--csv', '--quiet', XRAY, ...missing];
    expect(Buffer.byteLength(args.join(' '))).toBeGreaterThan(40_000);
    const r = spawnSync(process.execPath, [resolve(ROOT, 'bin', 'pneumolens.js'), ...args], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 50_000,
      env: { ...process.env, PNEUMOLENS_THREADS: '1' },
    });
    expect(r.signal).toBeNull();
    expect(r.status).toBe(1); // some inputs are missing; the real one is analysed
    expect(r.stdout.trim().split('\n')).toHaveLength(2); // header + the one real image
    expect(r.stdout).toContain('pneumonia_gray_224.png');
    expect(r.stderr.match(/no such file/g)).toHaveLength(999);
  }, 60_000);

  it('processArgv reads and deletes the hand-over file, then adds any command-line arguments', () => {
    const dir = mkdtempSync(join(testTmp(), 'pneumolens-argv-test-'));
    const file = join(dir, 'argv.json');
    writeFileSync(file, JSON.stringify(['predict', 'a b.png']));
    const env: NodeJS.ProcessEnv = { PNEUMOLENS_ARGV_FILE: file };
    expect(processArgv(env, ['node', 'main.ts', '--json'])).toEqual(['predict', 'a b.png', '--json']);
    expect(existsSync(dirname(file))).toBe(false);
    expect(env.PNEUMOLENS_ARGV_FILE).toBeUndefined();
    expect(processArgv({}, ['node', 'main.ts', 'info'])).toEqual(['info']);
  });

  it('predict --files-from reads inputs one per line', () => {
    const dir = mkdtempSync(join(testTmp(), 'pneumolens-list-'));
    mkdirSync(join(dir, 'x'));
    writeFileSync(join(dir, 'list.txt'), `${XRAY}\n\n${XRAY}\r\n`);
    const r = spawnSync(
      process.execPath,
      [resolve(ROOT, 'bin', 'pneumolens.js'), 'predict', '--json', '--quiet', '--files-from', 'list.txt'],
      {
        cwd: dir,
        encoding: 'utf8',
        timeout: 50_000,
        env: { ...process.env, PNEUMOLENS_THREADS: '1' },
      },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim().split('\n').filter(Boolean).length).toBeGreaterThanOrEqual(1);
    expect(r.stdout).toContain('pneumonia_gray_224.png');
  }, 60_000);
});
