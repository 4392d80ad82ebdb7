/** The shared browser launcher: which Chromium it picks, and that it never guesses a system one. */
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { chooseChromium, missingLibraries } from '../fixtures/browser.ts';

describe('chooseChromium', () => {
  it('uses the Chromium bundled in @sparticuz/chromium when CHROMIUM_PATH is not set', async () => {
    const choice = await chooseChromium({});
    expect(choice.source).toBe('@sparticuz/chromium');
    expect(existsSync(choice.executablePath)).toBe(true);
    expect(choice.args).toContain('--no-sandbox');
    expect(choice.args).not.toContain('--single-process');
  });

  it('uses CHROMIUM_PATH when set, and fails clearly when it does not exist', async () => {
    await expect(chooseChromium({ CHROMIUM_PATH: process.execPath })).resolves.toMatchObject({
      source: 'CHROMIUM_PATH',
      executablePath: process.execPath,
    });
    await expect(chooseChromium({ CHROMIUM_PATH: '/nonexistent/chromium' })).rejects.toThrow(/does not exist/);
  });
});

describe('missingLibraries', () => {
  it('lists the libraries ldd cannot find, and nothing when ldd is absent', () => {
    const stdout = [
      '\tlinux-vdso.so.1 (0x00007ffd)',
      '\tlibnss3.so => not found',
      '\tlibdl.so.2 => /lib/x86_64-linux-gnu/libdl.so.2 (0x00007f)',
      '\tlibnspr4.so => not found',
    ].join('\n');
    const ldd = { stdout, stderr: '', status: 1, signal: null, output: [], pid: 1 };
    expect(missingLibraries('/tmp/chromium', ldd)).toEqual(['libnss3.so', 'libnspr4.so']);
    expect(missingLibraries('/tmp/chromium', { ...ldd, stdout: '', error: new Error('spawnSync ldd ENOENT') })).toEqual([]);
  });
});
