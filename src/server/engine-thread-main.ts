/**
 * Body of an engine worker thread: loads the Engine and answers analyse requests one at a time.
 * Everything an analysis does synchronously (ONNX Runtime's run, decode conversions, preprocessing,
 * Grad-CAM, overlay blending) blocks this thread, not the server's event loop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { collect, Engine } from '../pipeline.ts';
import type { AnalyseOptions } from '../types.ts';
import { outcomeToWire, type ThreadReply, type ThreadRequest } from './engine-worker.ts';

const port = parentPort!;
const { card, threads, site } = workerData as { card?: string; threads: number; site?: string };
const post = (m: ThreadReply) => port.postMessage(m);

try {
  const engine = await Engine.load({ ...(card ? { card } : {}), ...(site ? { site } : {}), threads });
  post({
    type: 'ready',
    card: JSON.parse(JSON.stringify(engine.card)) as Record<string, unknown>,
    threads: engine.threads,
    ...(engine.site ? { site: engine.site } : {}),
  });
  port.on('message', (m: ThreadRequest) => {
    if (m.type === 'dispose') {
      void engine.dispose().finally(() => port.close());
      return;
    }
    collect(engine.analyseStream([m.bytes], m.opts as AnalyseOptions)).then(
      ([outcome]) => post({ type: 'outcome', id: m.id, outcome: outcomeToWire(outcome) }), // copied (a small PNG and map): never detach a pooled buffer
      (e: unknown) => post({ type: 'outcome', id: m.id, outcome: outcomeToWire({ status: 'failed', error: e as Error }) }),
    );
  });
} catch (e) {
  post({ type: 'failed', message: e instanceof Error ? e.message : String(e) });
}
