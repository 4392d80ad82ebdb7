/**
 * Rejection has one owner (issue 12 item 1): the engine decides each input's outcome (analysed |
 * rejected | failed) in one place, and every front end renders that decision. For both rejection
 * reasons (not_a_chest_xray, outside_intended_use) and a failure, the same image must get the same
 * status and code from the engine, its worker-thread form, the HTTP API and the CLI (predict and
 * evaluate): a front end that decided again would drift from the others here.
 */
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/cli/main.ts';
import type { Io } from '../../src/cli/io.ts';
import { PneumoError } from '../../src/errors.ts';
import { collect, Engine, unwrap } from '../../src/pipeline.ts';
import { buildApp } from '../../src/server/app.ts';
import { WorkerEngine } from '../../src/server/engine-worker.ts';
import type { Outcome } from '../../src/types.ts';
import { writeTinyModel } from '../fixtures/make-onnx.ts';
import { colourPhotoPng, texturedGrayPng } from '../fixtures/non-cxr.ts';
import { fileUpload } from '../fixtures/server-helpers.ts';
import { testTmp } from '../fixtures/paths.ts';

let engine: Engine;
let worker: WorkerEngine;
let app: FastifyInstance;
let dir: string;
let cardPath: string;
const inputs: Record<string, Buffer> = {};
/** What each input must become, whoever asks. */
const EXPECTED = {
  accepted: { status: 'analysed', code: undefined },
  photo: { status: 'rejected', code: 'not_a_chest_xray' },
  bright: { status: 'rejected', code: 'outside_intended_use' },
  broken: { status: 'failed', code: 'unsupported_media_type' },
} as const;
type Name = keyof typeof EXPECTED;
const NAMES = Object.keys(EXPECTED) as Name[];

beforeAll(async () => {
  // scope = mean normalised input: above 0.5 (a bright film) is outside the intended use; the
  // not-a-chest-X-ray score (ood) never refuses here, the image checks do (a colour photo).
  ({ cardPath } = writeTinyModel({ size: 32, channels: 4, stride: 4, ood: true, scope: true }, (c) => {
    c.gate = { output: 'ood', threshold: 100, intended_use: { output: 'scope', threshold: 0.5 } };
  }));
  engine = await Engine.load({ card: cardPath, threads: 1 });
  worker = await WorkerEngine.load({ card: cardPath, threads: 1, workers: 1 });
  app = buildApp({ engine, maxConcurrent: 1 });
  inputs.accepted = texturedGrayPng(40, 48, 3, 0, 120);
  inputs.photo = await colourPhotoPng(64, 48, 4);
  inputs.bright = texturedGrayPng(40, 48, 6, 140, 250);
  inputs.broken = Buffer.from('not an image at all');
  dir = await mkdtemp(join(testTmp(), 'pneumolens-outcome-'));
  await mkdir(join(dir, 'set/NORMAL'), { recursive: true });
  await mkdir(join(dir, 'set/PNEUMONIA'), { recursive: true });
  for (const n of NAMES) await writeFile(join(dir, 'set/NORMAL', `${n}.png`), inputs[n]);
  await writeFile(join(dir, 'set/PNEUMONIA/accepted2.png'), texturedGrayPng(40, 48, 5, 0, 120));
}, 60_000);

afterAll(async () => {
  await app?.close();
  await worker?.dispose();
  await engine?.dispose();
});

const code = (o: Outcome): string | undefined => (o.status === 'analysed' ? undefined : (o.error as PneumoError).code);

function memIo(): Io & { out: () => string } {
  const out: string[] = [];
  return { stdout: { write: (s: string) => out.push(s) }, stderr: { write: () => {} }, cwd: dir, env: {}, engine, out: () => out.join('') };
}

describe('one outcome per input, whoever asks', () => {
  it('the engine: status and code; a rejection carries its reason and its 422', async () => {
    const outcomes = await collect(engine.analyseStream(NAMES.map((n) => inputs[n])));
    NAMES.forEach((n, i) => {
      expect({ status: outcomes[i].status, code: code(outcomes[i]) }).toEqual(EXPECTED[n]);
      const o = outcomes[i];
      if (o.status === 'rejected') {
        expect(o.result.reason).toBe(o.error.code);
        expect(o.error.status).toBe(422);
        expect(o.result.cam).toBeUndefined();
      }
    });
  });

  it('analyse throws exactly the outcome error; force turns a rejection into an analysed, flagged result', async () => {
    for (const n of NAMES) {
      const [o] = await collect(engine.analyseStream([inputs[n]]));
      const thrown = await engine.analyse(inputs[n]).then(
        () => undefined,
        (e: PneumoError) => e.code,
      );
      expect(thrown).toBe(code(o));
      if (o.status === 'rejected') {
        const [forced] = await collect(engine.analyseStream([inputs[n]], { force: true }));
        expect(forced.status).toBe('analysed');
        expect(unwrap(forced)).toMatchObject({ rejected: true, reason: EXPECTED[n].code });
      }
    }
  });

  it('the worker-thread engine: the same outcomes, with the rejection details', async () => {
    for (const n of NAMES) {
      const [local] = await collect(engine.analyseStream([inputs[n]], { cam: false }));
      const remote = await worker.outcome(inputs[n], { cam: false });
      expect({ status: remote.status, code: code(remote) }).toEqual(EXPECTED[n]);
      if (remote.status === 'rejected' && local.status === 'rejected') {
        expect(remote.error).toBeInstanceOf(PneumoError);
        expect(remote.error.details).toEqual(local.error.details);
      }
      const thrown = await worker.analyse(inputs[n], { cam: false }).then(
        () => undefined,
        (e: PneumoError) => e.code,
      );
      expect(thrown).toBe(EXPECTED[n].code);
    }
  }, 60_000);

  it('the HTTP API: 200 for analysed, the outcome error for the others', async () => {
    for (const n of NAMES) {
      const { payload, headers } = fileUpload(inputs[n], 'x.png');
      const res = await app.inject({ method: 'POST', url: '/api/predict?cam=false', payload, headers });
      const [o] = await collect(engine.analyseStream([inputs[n]], { cam: false }));
      expect(res.statusCode).toBe(o.status === 'analysed' ? 200 : (o.error as PneumoError).status);
      expect(res.statusCode === 200 ? undefined : res.json().error.code).toBe(EXPECTED[n].code);
    }
  });

  it('the CLI: predict --json and evaluate --json report the same status and code', async () => {
    const io = memIo();
    await run(['predict', '--json', '--quiet', 'set/NORMAL'], io);
    const rows = JSON.parse(io.out()).results as Array<Record<string, any>>;
    for (const n of NAMES) {
      const row = rows.find((r) => r.file.endsWith(`${n}.png`))!;
      const got = row.error
        ? { status: 'failed', code: row.error.code }
        : row.reason && !('label' in row)
          ? { status: 'rejected', code: row.reason }
          : { status: 'analysed', code: undefined };
      expect(got).toEqual(EXPECTED[n]);
    }
    const io2 = memIo();
    await run(['evaluate', '--quiet', 'set', '--json', join(dir, 'm.json')], io2);
    const { readFile } = await import('node:fs/promises');
    const metrics = JSON.parse(await readFile(join(dir, 'm.json'), 'utf8'));
    const rejected = Object.fromEntries((metrics.rejected as Array<{ file: string; code: string }>).map((r) => [r.file, r.code]));
    expect(rejected).toEqual({ 'NORMAL/photo.png': 'not_a_chest_xray', 'NORMAL/bright.png': 'outside_intended_use' });
    expect((metrics.errors as Array<{ code: string }>).map((e) => e.code)).toEqual(['unsupported_media_type']);
  }, 60_000);
});
