// The ONNX Runtime session of ./runtime.ts, in its own worker thread. onnxruntime-node runs
// `session.run` synchronously on the thread that calls it (node_modules/onnxruntime-node/dist/backend.js
// calls the native run inside a setImmediate), so on the engine's thread nothing else could happen
// while the model ran: here it runs beside the engine, which meanwhile decodes, checks and
// preprocesses the next batch and draws the last one's Grad-CAM. Plain JavaScript: no loader needed.
// Messages: {type: 'run', id, feeds: {name: {data, dims}}, fetches} -> {type: 'result', id, outputs}
// (output buffers transferred) or {type: 'error', id, message}; {type: 'release'} -> {type: 'released'}.
import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';

const port = parentPort;
let session;
try {
  session = await ort.InferenceSession.create(workerData.model, workerData.options);
  port.postMessage({
    type: 'ready',
    inputNames: [...session.inputNames],
    outputNames: [...session.outputNames],
    inputMetadata: (session.inputMetadata ?? []).map((m) =>
      m.isTensor ? { name: m.name, isTensor: true, shape: [...m.shape] } : { name: m.name, isTensor: false },
    ),
  });
} catch (e) {
  port.postMessage({ type: 'failed', message: e instanceof Error ? e.message : String(e) });
  port.close();
}

port.on('message', async (m) => {
  if (m.type === 'release') {
    await session.release();
    port.postMessage({ type: 'released' });
    port.close();
    return;
  }
  try {
    const feeds = {};
    for (const [name, t] of Object.entries(m.feeds)) feeds[name] = new ort.Tensor('float32', t.data, t.dims);
    const result = await session.run(feeds, m.fetches);
    const outputs = {};
    const transfer = [];
    for (const name of m.fetches) {
      // a copy the thread owns, so that it can be transferred (the runtime's buffers may be native)
      const data = result[name].data.slice();
      outputs[name] = { data, dims: [...result[name].dims] };
      transfer.push(data.buffer);
    }
    port.postMessage({ type: 'result', id: m.id, outputs }, transfer);
  } catch (e) {
    port.postMessage({ type: 'error', id: m.id, message: e instanceof Error ? e.message : String(e) });
  }
});
