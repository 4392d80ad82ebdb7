/**
 * The inference runtime of the Node engine: the only module that imports onnxruntime-node.
 * src/model/session.ts uses it through the OrtRuntime interface; the browser build replaces this
 * module with ./runtime.web.ts (onnxruntime-web), so the rest of the engine is the same code.
 */
import { availableParallelism } from 'node:os';
import * as ort from 'onnxruntime-node';
import type { OrtRuntime, RuntimeSession } from './runtime-api.ts';

// Nothing leaves the machine: onnxruntime 1.30 has an HTTPS telemetry path, which it reads this
// variable to turn off when it creates its environment (the first session). Set here, in the one
// module that uses it, before any session exists; a user's own value is kept.
process.env.ORT_DISABLE_TELEMETRY ??= '1';

export const runtime: OrtRuntime = {
  name: 'onnxruntime-node',
  defaultThreads: () => availableParallelism(),
  async createSession(model, threads) {
    const options: ort.InferenceSession.SessionOptions = {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      // No busy-waiting of the intra-op threads between and inside runs: on a machine whose cores
      // are shared (decoding, Grad-CAM, the HTTP server, other processes) a spinning thread burns a
      // core that the rest of the pipeline needs. Measured on 2 shared cores, batch 8: 16.4 -> 9.3-11.7
      // CPU ms per image for the same model run (README "Performance").
      extra: { session: { intra_op: { allow_spinning: '0' } } },
    };
    const session =
      typeof model === 'string' ? await ort.InferenceSession.create(model, options) : await ort.InferenceSession.create(model, options);
    return session as unknown as RuntimeSession;
  },
  float32: (data, dims) => new ort.Tensor('float32', data, dims),
};
