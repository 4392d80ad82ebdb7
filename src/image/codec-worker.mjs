/**
 * Worker thread of dicom-codec.ts: decodes one compressed DICOM frame with the dcmjs-codecs
 * WebAssembly (libjpeg 8/12/16-bit, CharLS, OpenJPEG, OpenJPH, RLE), loaded once per worker.
 * Plain JavaScript so that it runs under node, tsx and vitest alike without a TypeScript loader.
 * Message in: { id, method, frame: Uint8Array, info }; out: { id, data: Uint8Array } or { id, error }.
 */
import { createRequire } from 'node:module';
import { parentPort } from 'node:worker_threads';

const require = createRequire(import.meta.url);
const { Context, NativeCodecs, log } = require('dcmjs-codecs');

/**
 * Warnings of a codec that mean the stream is damaged (it then decodes what it can and fills the
 * rest): libjpeg's "Corrupt JPEG data: ..." (premature end of data segment, bad Huffman code,
 * extraneous bytes), "Premature end of JPEG file", a broken progression; OpenJPEG's warnings about a
 * stream that ends early or is inconsistent. They reach us as the codecs' info messages.
 */
const DAMAGE =
  /Corrupt JPEG data|Premature end of JPEG|Inconsistent progression|Invalid SOS parameters|too many scanlines|OpjMessageCallbackWarning.*(truncat|end of|too short|not enough|inconsistent|corrupt|incomplete|missing|expected|invalid)/i;
let messages = [];
log.setLevel('info');
log.info = (m) => {
  if (messages.length < 64 && DAMAGE.test(String(m))) messages.push(String(m));
};

const METHODS = new Set(['decodeJpeg', 'decodeJpegLs', 'decodeJpeg2000', 'decodeHtJpeg2000', 'decodeRle']);
const ready = NativeCodecs.initializeAsync({
  webAssemblyModulePathOrUrl: require.resolve('dcmjs-codecs/build/dcmjs-native-codecs.wasm'),
  logCodecsInfo: true, // the codecs' messages, where their warnings are (filtered by DAMAGE)
  logCodecsTrace: false,
});

parentPort.on('message', async ({ id, method, frame, info }) => {
  try {
    await ready;
    if (!METHODS.has(method)) throw new Error(`unknown method ${method}`);
    messages = [];
    const context = new Context({ ...info, encodedBuffer: frame });
    const params = method === 'decodeJpeg' ? { convertColorspaceToRgb: info.samplesPerPixel === 3 } : {};
    const decoded = NativeCodecs[method](context, params).getDecodedBuffer();
    if (!decoded) throw new Error('the codec returned no pixels');
    if (messages.length > 0) {
      // e.g. "NativeCodecs::onCodecsInfo::JpegDecoder8::EmitMessage::Corrupt JPEG data: ..." -> the message itself
      const warning = messages[0].split('::').pop().trim().slice(0, 160);
      parentPort.postMessage({ id, warning });
      return;
    }
    const data = new Uint8Array(decoded); // a copy out of the WebAssembly heap, transferred back
    parentPort.postMessage({ id, data }, [data.buffer]);
  } catch (e) {
    // Codec messages describe the stream (e.g. "Not a JPEG file"); a trap reads "unreachable".
    const message = e instanceof Error ? e.message : String(e);
    parentPort.postMessage({ id, error: message.slice(0, 200) });
  }
});
