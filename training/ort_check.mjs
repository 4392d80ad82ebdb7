// Runs an ONNX model with onnxruntime-node (the runtime the product uses) on a raw float32 input
// file and prints its outputs as JSON. Used by export.py to verify ONNX Runtime against PyTorch.
// usage: node ort_check.mjs MODEL.onnx INPUT.f32 N C H W
import { readFileSync } from 'node:fs';
import ort from 'onnxruntime-node';

const [model, input, n, c, h, w] = process.argv.slice(2);
const buf = readFileSync(input);
const data = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
const session = await ort.InferenceSession.create(model);
const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', data, [+n, +c, +h, +w]) };
const out = await session.run(feeds);
const res = {};
for (const name of session.outputNames) res[name] = { dims: out[name].dims, data: Array.from(out[name].data) };
process.stdout.write(JSON.stringify(res));
