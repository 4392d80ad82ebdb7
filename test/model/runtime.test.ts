/**
 * The Node runtime (src/model/runtime.ts): each session in a worker thread of its own gives exactly
 * what onnxruntime-node gives on the calling thread, keeps concurrent runs apart, fails clearly, and
 * never keeps a program from exiting.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { inlineRuntime, runtime } from '../../src/model/runtime.ts';
import type { RuntimeSession } from '../../src/model/runtime-api.ts';
import { writeTinyModel } from '../fixtures/make-onnx.ts';
import { REPO } from '../fixtures/paths.ts';

const SPEC = { size: 32, channels: 4, stride: 4, ood: true };

function input(seed: number, n = 2): Float32Array {
  const x = new Float32Array(n * 32 * 32);
  x.forEach((_, i) => (x[i] = Math.sin(i * 0.37 + seed) * 2));
  return x;
}

async function runOn(rt: typeof runtime, s: RuntimeSession, x: Float32Array) {
  const out = await s.run({ [s.inputNames[0]]: rt.float32(x, [x.length / 1024, 1, 32, 32]) }, [...s.outputNames]);
  return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, { data: Array.from(t.data as Float32Array), dims: [...t.dims] }]));
}

describe('the inference thread', () => {
  it('gives bit-identical outputs to onnxruntime-node on this thread, from a path or from bytes', async () => {
    const { dir } = writeTinyModel(SPEC);
    const file = join(dir, 'tiny.onnx');
    const inline = await inlineRuntime.createSession(file, 1);
    const fromPath = await runtime.createSession(file, 1);
    const fromBytes = await runtime.createSession(new Uint8Array(readFileSync(file)), 1);
    expect(fromPath.inputNames).toEqual(inline.inputNames);
    expect(fromPath.outputNames).toEqual(inline.outputNames);
    expect(fromPath.inputMetadata).toEqual([
      { name: 'input', isTensor: true, shape: inline.inputMetadata![0].isTensor ? [...(inline.inputMetadata![0] as any).shape] : [] },
    ]);
    const x = input(1);
    const want = await runOn(inlineRuntime, inline, x);
    expect(await runOn(runtime, fromPath, x)).toEqual(want);
    expect(await runOn(runtime, fromBytes, x)).toEqual(want);
    expect(Array.from(x)).toEqual(Array.from(input(1))); // the caller's input is left as it was
    await Promise.all([inline.release(), fromPath.release(), fromBytes.release()]);
  });

  it('keeps concurrent runs apart: each call gets the outputs of its own input', async () => {
    const { dir } = writeTinyModel(SPEC);
    const s = await runtime.createSession(join(dir, 'tiny.onnx'), 1);
    const inputs = [1, 2, 3, 4, 5].map((k) => input(k, k));
    const alone: unknown[] = [];
    for (const x of inputs) alone.push(await runOn(runtime, s, x));
    const together = await Promise.all(inputs.map((x) => runOn(runtime, s, x)));
    expect(together).toEqual(alone);
    expect((together[2] as any).logit.dims).toEqual([3]);
    await s.release();
  });

  it('reports a model it cannot load, a failing run and a released session as errors', async () => {
    const { dir } = writeTinyModel(SPEC);
    const bad = join(dir, 'bad.onnx');
    writeFileSync(bad, 'not an onnx model');
    await expect(runtime.createSession(bad, 1)).rejects.toThrow(/protobuf|parse|load|model/i);
    const s = await runtime.createSession(join(dir, 'tiny.onnx'), 1);
    await expect(s.run({ [s.inputNames[0]]: runtime.float32(new Float32Array(10), [1, 1, 2, 5]) }, ['logit'])).rejects.toThrow(
      /dimension|shape|size|invalid/i,
    );
    expect((await runOn(runtime, s, input(0, 1))).logit.dims).toEqual([1]); // the thread survives a failed run
    await s.release();
    await s.release(); // twice is fine
    await expect(runOn(runtime, s, input(0, 1))).rejects.toThrow(/released/);
  });

  it('does not keep a program from exiting when its session is never released', () => {
    const { dir } = writeTinyModel(SPEC);
    const script = join(dir, 'no-release.mts');
    writeFileSync(
      script,
      `import { runtime } from ${JSON.stringify(join(REPO, 'src/model/runtime.ts'))};
const s = await runtime.createSession(${JSON.stringify(join(dir, 'tiny.onnx'))}, 1);
const out = await s.run({ input: runtime.float32(new Float32Array(1024), [1, 1, 32, 32]) }, ['logit']);
console.log('logit', out.logit.data.length);
`,
    );
    const t0 = Date.now();
    const r = spawnSync(process.execPath, ['--import', 'tsx', script], { cwd: REPO, encoding: 'utf8', timeout: 30_000 });
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.stdout).toContain('logit 1');
    expect(r.status).toBe(0);
    expect(Date.now() - t0).toBeLessThan(30_000);
  });
});
