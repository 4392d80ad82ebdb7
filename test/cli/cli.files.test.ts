import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expandInputs, globToRegExp } from '../../src/cli/files.ts';
import { csvHeader, csvRow, table } from '../../src/cli/format.ts';
import { CamNames } from '../../src/cli/predict.ts';
import { gateDecision } from '../../src/gate/gate.ts';
import { checkImage } from '../../src/gate/image-checks.ts';
import { run } from '../../src/cli/main.ts';
import type { Io } from '../../src/cli/io.ts';
import { testTmp } from '../fixtures/paths.ts';

const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

describe('globToRegExp', () => {
  it('matches *, ?, [..] within a segment and ** across segments', () => {
    expect(globToRegExp('*.png').test('a.png')).toBe(true);
    expect(globToRegExp('*.png').test('d/a.png')).toBe(false);
    expect(globToRegExp('**/*.png').test('a.png')).toBe(true);
    expect(globToRegExp('**/*.png').test('d/e/a.png')).toBe(true);
    expect(globToRegExp('d/**/x.dcm').test('d/x.dcm')).toBe(true);
    expect(globToRegExp('img?.jp[e]g').test('img1.jpeg')).toBe(true);
    expect(globToRegExp('img?.jp[!e]g').test('img1.jpeg')).toBe(false);
    expect(globToRegExp('a.b').test('axb')).toBe(false);
  });
});

describe('expandInputs', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(testTmp(), 'pneumolens-files-'));
    await mkdir(join(dir, 'data/sub/deeper'), { recursive: true });
    await mkdir(join(dir, 'data/.hidden'), { recursive: true });
    for (const f of ['data/a.png', 'data/B.JPG', 'data/sub/c.dcm', 'data/sub/deeper/d.tiff', 'data/.hidden/e.png', 'data/notes.txt']) {
      await writeFile(join(dir, f), 'x');
    }
    await writeFile(join(dir, 'data/sub/extensionless'), Buffer.concat([PNG_MAGIC, Buffer.alloc(200)]));
    await writeFile(join(dir, 'data/sub/README'), 'just text, not an image');
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('walks directories recursively by extension, sniffing extensionless files, skipping dot-dirs', async () => {
    const { files, missing } = await expandInputs(['data'], dir);
    expect(files).toEqual(['data/B.JPG', 'data/a.png', 'data/sub/c.dcm', 'data/sub/deeper/d.tiff', 'data/sub/extensionless']);
    expect(missing).toEqual([]);
  });

  it('expands globs, keeps explicit files whatever their extension, dedups and reports misses', async () => {
    const { files, missing } = await expandInputs(
      ['data/*.png', 'data/**/*.dcm', 'data/notes.txt', 'data/a.png', 'nope.png', 'data/*.webp'],
      dir,
    );
    expect(files).toEqual(['data/a.png', 'data/sub/c.dcm', 'data/notes.txt']);
    expect(missing).toEqual(['nope.png', 'data/*.webp']);
  });

  it('handles absolute globs', async () => {
    const { files } = await expandInputs([join(dir, 'data', '**', '*.tiff')], '/');
    expect(files).toEqual([join(dir, 'data/sub/deeper/d.tiff')]);
  });
});

describe('output formats', () => {
  const ok = {
    file: 'x,1.png',
    status: 'analysed' as const,
    result: {
      label: 'PNEUMONIA',
      probability: 0.876543,
      logit: 2.5,
      threshold: 0.5,
      model: { name: 'm', version: '1' },
      image: { width: 10, height: 12, format: 'png' as const },
      timings_ms: {},
      warnings: [],
      rejected: false,
      gate: gateDecision(
        checkImage({ data: Float32Array.from({ length: 100 }, (_, i) => i * 2.5), width: 10, height: 10, channels: 1 }),
        null,
        undefined,
      ),
      uncertainty: 0.0123,
      uncertain: false,
    },
  };
  const bad = { file: 'bad.jpg', status: 'failed' as const, error: { code: 'undecodable_image', message: 'not an "image"' } };

  it('writes a CSV header and quotes cells that need it', () => {
    expect(csvHeader()).toBe(
      'file,label,probability,threshold,uncertainty,uncertain,rejected,reason,logit,width,height,format,warnings,cam_file,error_code,error_message\n',
    );
    expect(csvRow(ok)).toBe('"x,1.png",PNEUMONIA,0.8765,0.5,0.0123,false,false,,2.5000,10,12,png,,,,\n');
    expect(csvRow(bad)).toBe('bad.jpg,,,,,,,,,,,,,,undecodable_image,"not an ""image"""\n');
  });

  it('aligns the table and reports errors in place of the label', () => {
    const t = table([ok, bad]).split('\n');
    expect(t[0]).toBe('FILE     LABEL      PROBABILITY  THRESHOLD  UNCERTAINTY');
    expect(t[1]).toBe('x,1.png  PNEUMONIA  0.8765       0.5        0.0123');
    expect(t[2]).toBe('bad.jpg  ERROR undecodable_image: not an "image"');
  });

  it('names overlays <name>.cam.png as the help says, and never twice in one run (issue 19)', () => {
    const names = new CamNames();
    expect(names.name('data/sub/a.png')).toBe('a.cam.png');
    expect(names.name('/elsewhere/b.jpeg')).toBe('b.cam.png');
    expect(names.name('/other/a.png')).toBe('a-2.cam.png'); // same name in another folder
    expect(names.name('data/A.dcm')).toBe('A-3.cam.png'); // case-insensitive file systems
    expect(names.name('scans/a-2.png')).toBe('a-2-2.cam.png');
    expect(names.name('scans/study')).toBe('study.cam.png'); // extensionless DICOM
    expect(names.name('scans/.hidden.png')).toBe('.hidden.cam.png');
  });
});

describe('CLI usage errors (no model needed)', () => {
  function io(): Io & { out: string[]; err: string[] } {
    const out: string[] = [];
    const err: string[] = [];
    return { out, err, stdout: { write: (s: string) => out.push(s) }, stderr: { write: (s: string) => err.push(s) }, cwd: '/', env: {} };
  }

  it('exits 2 with a clear message for bad options, unknown commands and missing arguments', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['predict'], /no input files/],
      [['predict', '--threshold', 'abc', 'x.png'], /--threshold must be a number in \[0, 1\], got 'abc'/],
      [['predict', '--colormap', 'rainbow', 'x.png'], /--colormap must be one of jet, viridis, inferno/],
      [['predict', '--json', '--csv', 'x.png'], /one of --json and --csv/],
      [['predict', '--frobnicate', 'x.png'], /Unknown option '--frobnicate'/],
      [['evaluate'], /no data directory/],
      [['evaluate', '--limit', '0', 'd'], /--limit must be an integer/],
      [['info', 'extra'], /takes no arguments/],
      [['serve', '--port', '70000'], /--port must be an integer in \[0, 65535\]/],
      [['launch'], /unknown command 'launch'/],
      [[], /Usage: pneumolens <command>/],
    ];
    for (const [argv, re] of cases) {
      const i = io();
      expect(await run(argv, i), argv.join(' ')).toBe(2);
      expect(i.err.join(''), argv.join(' ')).toMatch(re);
      expect(i.out.join('')).toBe('');
    }
  });

  it('prints help for each command on stdout with exit 0', async () => {
    for (const cmd of ['predict', 'evaluate', 'info', 'serve']) {
      const i = io();
      expect(await run([cmd, '--help'], i)).toBe(0);
      expect(i.out.join('')).toContain(`Usage: pneumolens ${cmd}`);
    }
    const i = io();
    expect(await run(['--help'], i)).toBe(0);
    expect(i.out.join('')).toContain('evaluate');
  });
});

describe('Progress', () => {
  it('draws on a terminal only, for more than one item, and erases itself', async () => {
    const { Progress } = await import('../../src/cli/progress.ts');
    const tty: string[] = [];
    const p = new Progress(3, { write: (s: string) => tty.push(s), isTTY: true, columns: 100 }, 'x ');
    p.tick(1);
    p.tick(2, 1);
    p.finish();
    expect(tty[0]).toMatch(/^\rx \[#+-+\] 1\/3 /);
    expect(tty.at(-2)).toMatch(/^\rx \[#{30}\] 3\/3 .*1 failed/);
    expect(tty.at(-1)).toMatch(/^\r +\r$/);
    const piped: string[] = [];
    const q = new Progress(3, { write: (s: string) => piped.push(s) });
    q.tick(3);
    q.finish();
    expect(piped).toEqual([]);
    const single: string[] = [];
    new Progress(1, { write: (s: string) => single.push(s), isTTY: true }).tick();
    expect(single).toEqual([]);
  });
});
