/**
 * Which decline reason real chest films of other sources and generated non-chest images get (issue 19
 * item 3). Prints one JSON line per set; not a test. Counts the films that pass the image checks but
 * score above the gate threshold: before issue 19 they were called "not a chest X-ray", now they are
 * declined as outside the intended use (basis gate_score), and shows that the score's range on real
 * chest films overlaps that on CT slices and hands (no threshold on it could tell them apart).
 *
 *   npx tsx bench/gate-reasons.ts [--data ../shared/data] [--every 26]
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Engine } from '../src/pipeline.ts';
import { colourPhotoPng, constantPng, ctSlicePng, handPng, textPng } from '../test/fixtures/non-cxr.ts';

const { values } = parseArgs({ options: { data: { type: 'string' }, every: { type: 'string' } } });
const data = resolve(values.data ?? join(import.meta.dirname, '..', '..', 'shared', 'data'));
const every = Number(values.every ?? 26);
const walk = (d: string): string[] =>
  readdirSync(d)
    .sort()
    .flatMap((e) => {
      const p = join(d, e);
      return statSync(p).isDirectory() ? walk(p) : /\.(jpe?g|png)$/i.test(e) ? [p] : [];
    });
const files = (sub: string, step = 1) =>
  walk(join(data, sub))
    .filter((_, i) => i % step === 0)
    .map((f) => () => readFileSync(f));
const sets: Record<string, Array<() => Promise<Buffer> | Buffer>> = {
  other_sites: files('other_sites'),
  nih_extra: files('nih_extra'),
  [`chest_xray_train_every_${every}`]: files('chest_xray_train', every),
  synthetic_non_cxr: [
    ...[1, 2, 3, 4].map((s) => () => ctSlicePng(256, s)),
    ...[1, 2, 3, 4].map((s) => () => handPng(240, 300, s)),
    ...[1, 2].map((s) => () => colourPhotoPng(320, 240, s)),
    ...[1, 2].map((s) => () => textPng(300, 400, s)),
    () => constantPng(256, 256, 0),
  ],
};
const engine = await Engine.load({ threads: 1 });
console.log(`model ${engine.card.name} ${engine.card.version}; gate threshold ${engine.card.gate?.threshold ?? 'none'}`);
for (const [name, items] of Object.entries(sets)) {
  const reasons: Record<string, number> = {};
  const passedChecksGateOver: number[] = [];
  let failedChecks = 0;
  for (const get of items) {
    const r = await engine.analyse(await get(), { cam: false, force: true });
    const key = r.gate.rejected ? `${r.gate.reason} (${r.gate.basis})` : 'accepted';
    reasons[key] = (reasons[key] ?? 0) + 1;
    if (!r.gate.checks.passed) failedChecks++;
    else if (r.gate.score !== null && r.gate.threshold !== null && !(r.gate.score <= r.gate.threshold))
      passedChecksGateOver.push(Number((r.gate.score / r.gate.threshold).toPrecision(3)));
  }
  passedChecksGateOver.sort((a, b) => a - b);
  console.log(JSON.stringify({ set: name, n: items.length, reasons, failedChecks, passedChecksGateOver }));
}
await engine.dispose();
