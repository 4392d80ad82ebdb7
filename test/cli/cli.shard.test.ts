/**
 * Scale-out of batch runs (issue 22 item 2): `--shard K/N` partitions the files of predict and
 * evaluate by a hash of the path under the input root (or JOB_COMPLETION_INDEX/JOB_COMPLETIONS of
 * an Indexed Job); `evaluate --merge` of the shards equals `evaluate` of the whole. A tiny ONNX
 * model (test/fixtures/make-onnx.ts) and real PNG files in a temp folder; no shipped-model numbers.
 */
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/cli/main.ts';
import { resolveShard, shardOfKey } from '../../src/cli/shard.ts';
import { Engine } from '../../src/pipeline.ts';
import { writeTinyModel } from '../fixtures/make-onnx.ts';
import { constantPng, texturedGrayPng } from '../fixtures/non-cxr.ts';
import { memIo } from '../fixtures/mem-io.ts';
import { testTmp } from '../fixtures/paths.ts';

let dir: string;
let engine: Engine;
const N_FILES = 27; // 12 + 12 films, one unreadable file, one blank image (rejected), one in a deeper folder

beforeAll(async () => {
  dir = await mkdtemp(join(testTmp(), 'pneumolens-shard-'));
  for (const sub of ['set/NORMAL/a', 'set/NORMAL/b', 'set/PNEUMONIA/x/y']) await mkdir(join(dir, sub), { recursive: true });
  for (let i = 0; i < 12; i++) {
    await writeFile(join(dir, `set/NORMAL/${i % 2 ? 'a' : 'b'}/n${i}.png`), texturedGrayPng(40 + i, 44, 100 + i, 0, 140));
    await writeFile(join(dir, `set/PNEUMONIA/${i % 3 ? 'x' : 'x/y'}/p${i}.png`), texturedGrayPng(48, 40 + i, 200 + i, 50, 255));
  }
  await writeFile(join(dir, 'set/NORMAL/broken.png'), 'not a PNG at all');
  await writeFile(join(dir, 'set/PNEUMONIA/blank.png'), constantPng(40, 40, 128));
  await writeFile(join(dir, 'set/PNEUMONIA/x/y/last.png'), texturedGrayPng(50, 50, 999, 20, 230));
  engine = await Engine.load({ card: writeTinyModel({ size: 32, channels: 4, stride: 4 }).cardPath, threads: 1 });
});

afterAll(async () => {
  await engine?.dispose();
  await rm(dir, { recursive: true, force: true });
});

async function predictFiles(
  args: string[],
  env: Record<string, string> = {},
  cwd = dir,
): Promise<{ code: number; files: string[]; json: any }> {
  const io = memIo(cwd, engine, env);
  const code = await run(['predict', '--json', '--quiet', ...args], io);
  const json = JSON.parse(io.out());
  return { code, files: json.results.map((r: { file: string }) => r.file), json };
}

describe('resolveShard', () => {
  it('reads K/N (0-based) from the flag or the Indexed Job environment', () => {
    expect(resolveShard('2/5', {})).toEqual({ index: 2, count: 5 });
    expect(resolveShard(undefined, { JOB_COMPLETION_INDEX: '3', JOB_COMPLETIONS: '4' })).toEqual({ index: 3, count: 4 });
    expect(resolveShard('3/4', { JOB_COMPLETION_INDEX: '3', JOB_COMPLETIONS: '4' })).toEqual({ index: 3, count: 4 });
    expect(resolveShard(undefined, {})).toBeUndefined();
  });

  it('refuses malformed, out-of-range, half-set and contradicting shards', () => {
    for (const bad of ['3/3', '1', '-1/3', '1/0', 'a/b', '1.5/3', '0/100001', '1/3/4', ' /3']) {
      expect(() => resolveShard(bad, {}), bad).toThrow(/--shard/);
    }
    expect(() => resolveShard(undefined, { JOB_COMPLETION_INDEX: '0' })).toThrow(/JOB_COMPLETIONS is not/);
    expect(() => resolveShard(undefined, { JOB_COMPLETIONS: '3' })).toThrow(/JOB_COMPLETION_INDEX is not/);
    expect(() => resolveShard(undefined, { JOB_COMPLETION_INDEX: '3', JOB_COMPLETIONS: '3' })).toThrow(/between 0 and N-1/);
    expect(() => resolveShard('0/3', { JOB_COMPLETION_INDEX: '1', JOB_COMPLETIONS: '3' })).toThrow(/disagrees/);
  });

  it('hashes a key to the same shard every time, and spreads keys evenly', () => {
    expect(shardOfKey('NORMAL/a/n1.png', 7)).toBe(shardOfKey('NORMAL/a/n1.png', 7));
    const counts = new Array(4).fill(0);
    for (let i = 0; i < 4000; i++) counts[shardOfKey(`PNEUMONIA/person${i}_bacteria_${i * 3}.jpeg`, 4)]++;
    for (const c of counts) expect(Math.abs(c - 1000)).toBeLessThan(120); // binomial sd ~27
  });
});

describe('predict --shard K/3', () => {
  it('gives three disjoint, non-empty shards that cover every file exactly once', async () => {
    const whole = await predictFiles(['set']);
    expect(whole.files).toHaveLength(N_FILES);
    const shards = [];
    for (let k = 0; k < 3; k++) shards.push(await predictFiles(['--shard', `${k}/3`, 'set']));
    shards.forEach((s, k) => {
      expect(s.files.length).toBeGreaterThan(0);
      expect(s.json.shard).toEqual({ index: k, count: 3, files: s.files.length, of: N_FILES });
    });
    const all = shards.flatMap((s) => s.files);
    expect(all).toHaveLength(N_FILES);
    expect(new Set(all).size).toBe(N_FILES);
    expect([...all].sort()).toEqual([...whole.files].sort());
    // each shard keeps the whole's order and its per-file results
    for (const s of shards) {
      expect(s.files).toEqual(whole.files.filter((f: string) => s.files.includes(f)));
      for (const r of s.json.results) expect(r).toEqual(whole.json.results.find((w: { file: string }) => w.file === r.file));
    }
  });

  it('takes the shard from JOB_COMPLETION_INDEX/JOB_COMPLETIONS, and a mount point does not move a file', async () => {
    const viaFlag = await predictFiles(['--shard', '1/3', 'set']);
    const viaEnv = await predictFiles(['set'], { JOB_COMPLETION_INDEX: '1', JOB_COMPLETIONS: '3' });
    expect(viaEnv.files).toEqual(viaFlag.files);
    // the same folder elsewhere, named by an absolute path: the same files, by their path under it
    const other = await mkdtemp(join(testTmp(), 'pneumolens-shard-mount-'));
    try {
      await cp(join(dir, 'set'), join(other, 'mnt', 'archive'), { recursive: true });
      const moved = await predictFiles(['--shard', '1/3', join(other, 'mnt', 'archive')], {}, '/');
      const rel = (f: string, root: string) => f.slice(f.indexOf(root) + root.length);
      expect(moved.files.map((f: string) => rel(f, 'archive/'))).toEqual(viaFlag.files.map((f: string) => rel(f, 'set/')));
    } finally {
      await rm(other, { recursive: true, force: true });
    }
  });

  it('a usage error names the problem (exit 2)', async () => {
    const io = memIo(dir, engine);
    expect(await run(['predict', '--shard', '3/3', 'set'], io)).toBe(2);
    expect(io.err()).toMatch(/K must be between 0 and N-1/);
  });
});

describe('evaluate --shard and --merge', () => {
  const evaluate = async (args: string[], env: Record<string, string> = {}) => {
    const io = memIo(dir, engine, env);
    const code = await run(['evaluate', '--quiet', '--bootstrap', '200', ...args], io);
    return { code, io };
  };
  const read = async (f: string) => JSON.parse(await readFile(join(dir, f), 'utf8'));

  beforeAll(async () => {
    expect((await evaluate(['--json', 'whole.json', 'set'])).code).toBe(0);
    for (let k = 0; k < 3; k++) expect((await evaluate(['--shard', `${k}/3`, '--json', `s${k}.json`, 'set'])).code).toBe(0);
  });

  it('the merge of the three shards equals the evaluation of the whole', async () => {
    const whole = await read('whole.json');
    expect(whole.errors).toHaveLength(1);
    expect(whole.rejected).toHaveLength(1);
    expect(whole.predictions).toHaveLength(N_FILES - 2);
    const shards = await Promise.all([0, 1, 2].map((k) => read(`s${k}.json`)));
    for (const s of shards) expect(s.shard.files).toBeGreaterThan(0);
    expect(shards.reduce((n, s) => n + s.shard.files, 0)).toBe(N_FILES);

    const io = memIo(dir, undefined); // no engine: a merge loads no model
    expect(await run(['evaluate', '--merge', '--json', 'merged.json', 's2.json', 's0.json', 's1.json'], io)).toBe(0);
    expect(io.out()).toMatch(/Merged {7}3 shards, 27 images/);
    const merged = await read('merged.json');
    expect(merged).toEqual(whole);
    expect(await readFile(join(dir, 'merged.json'), 'utf8')).toBe(await readFile(join(dir, 'whole.json'), 'utf8'));
    // not an average: each shard's own AUC differs from the whole's
    expect(shards.some((s) => s.auc !== whole.auc)).toBe(true);
  });

  it('refuses a partial, doubled, mixed or overlapping merge, and files that are not shards', async () => {
    const refuse = async (files: string[], pattern: RegExp) => {
      const io = memIo(dir, undefined);
      expect(await run(['evaluate', '--merge', ...files], io)).toBe(2);
      expect(io.err()).toMatch(pattern);
    };
    await refuse(['s0.json', 's1.json'], /shard\(s\) 2 of 3 missing/);
    await refuse(['s0.json', 's1.json', 's1.json', 's2.json'], /shard 1\/3 is given twice/);
    await refuse(['whole.json'], /no shard record/);
    await refuse([], /needs the JSON files/);
    expect((await evaluate(['--shard', '2/3', '--threshold', '0.3', '--json', 'other.json', 'set'])).code).toBe(0);
    await refuse(['s0.json', 's1.json', 'other.json'], /differ in the threshold/);
    const s1 = await read('s1.json');
    s1.shard.positions.predictions[0] = (await read('s0.json')).shard.positions.predictions[0];
    await writeFile(join(dir, 'overlap.json'), JSON.stringify(s1));
    await refuse(['s0.json', 'overlap.json', 's2.json'], /the shards overlap|is in no shard/);
    const io = memIo(dir, undefined);
    expect(await run(['evaluate', '--merge', '--report', 'r.html', 's0.json'], io)).toBe(2);
    expect(io.err()).toMatch(/cannot be combined with --report/);
  });

  it('an Indexed Job environment shards evaluate too', async () => {
    expect((await evaluate(['--json', 'env1.json', 'set'], { JOB_COMPLETION_INDEX: '1', JOB_COMPLETIONS: '3' })).code).toBe(0);
    const [a, b] = [await read('env1.json'), await read('s1.json')];
    expect(a).toEqual(b);
  });
});
