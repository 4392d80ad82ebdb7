/**
 * Helpers of the server tests: an engine for HTTP-layer tests that decodes with the real decoder
 * (so 415/422 come from the real sniffing and limits) but replaces the model with a rule on the
 * mean gray level, small image fixtures, a multipart body builder and a local fixture server.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { checkImage } from '../src/gate/image-checks.ts';
import { decodeImage } from '../src/image/decode.ts';
import type { PredictEngine } from '../src/server/app.ts';
import type { AnalyseOptions, AnalysisResult } from '../src/types.ts';
import { makePng } from './fixtures/make-png.ts';

/** A 1x1 PNG, the "overlay" of the test engine. */
const TINY_PNG = makePng({ width: 1, height: 1, channels: 1, bitDepth: 8, samples: [128] });

export class TestEngine implements PredictEngine {
  readonly card = {
    schema_version: 1,
    name: 'test-engine',
    version: '9.9.9',
    labels: ['NORMAL', 'PNEUMONIA'],
    cardPath: '/secret/home/models/test.json',
    modelPath: '/secret/home/models/test.onnx',
    postprocessing: { temperature: 1, threshold: 0.5, threshold_policy: 'youden' },
    gradcam: { layer: 'stage4', output: 'features', weights: Array.from({ length: 256 }, (_, i) => i / 256), bias: 0.1 },
    metrics: {
      validation: { n: 10, auc: 0.9, sensitivity: 0.8, specificity: 0.85, accuracy: 0.82, f1: 0.81, precision: 0.8, split: 'test-split' },
    },
    intended_use: 'Tests only.',
    limitations: ['Not a model.'],
  };
  calls: Array<{ bytes: number; opts: AnalyseOptions | undefined }> = [];
  active = 0;
  maxActive = 0;
  /** While set, analyses wait (after decoding) until it resolves: see hold(). */
  private gate?: Promise<void>;
  /** Throw this from analyse (after decoding). */
  failWith: unknown = undefined;
  /** Extra fields merged into the result (to test pass-through). */
  extra: Record<string, unknown> = {};

  /** Holds every analysis (running or to come) until the returned release() is called: deterministic, no sleeps. */
  hold(): () => void {
    let release!: () => void;
    this.gate = new Promise<void>((r) => (release = r));
    return () => {
      this.gate = undefined;
      release();
    };
  }

  async analyse(bytes: Uint8Array, opts?: AnalyseOptions): Promise<AnalysisResult> {
    this.calls.push({ bytes: bytes.length, opts });
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    try {
      const decoded = await decodeImage(bytes);
      if (this.gate) await this.gate;
      if (this.failWith !== undefined) throw this.failWith;
      const { data } = decoded.image;
      let sum = 0;
      for (let i = 0; i < data.length; i++) sum += data[i];
      const probability = sum / data.length / 255;
      const threshold = opts?.threshold ?? 0.5;
      const cam =
        (opts?.cam ?? true) ? { map: new Float32Array([0, 0.25, 0.5, 1]), mapWidth: 2, mapHeight: 2, overlayPng: TINY_PNG } : undefined;
      return {
        label: probability >= threshold ? 'PNEUMONIA' : 'NORMAL',
        probability,
        logit: Math.log(probability / (1 - probability)),
        threshold,
        model: { name: this.card.name, version: this.card.version },
        image: { width: decoded.image.width, height: decoded.image.height, format: decoded.format },
        timings_ms: { decode: 1, total: 1 },
        ...(cam ? { cam } : {}),
        warnings: [],
        rejected: false,
        gate: {
          rejected: false,
          score: null,
          threshold: null,
          scope: null,
          scopeThreshold: null,
          checks: { passed: true, stats: checkImage(decoded.image).stats, failures: [] },
          reasons: [],
        },
        uncertainty: null,
        uncertain: false,
        ...this.extra,
      };
    } finally {
      this.active--;
    }
  }
}

/** A gray PNG with a gradient, `level` shifting its mean (0..255). */
export function grayPng(width = 32, height = 32, level = 100): Buffer {
  const samples = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) samples[y * width + x] = Math.min(255, level + ((x + y) % 32));
  return makePng({ width, height, channels: 1, bitDepth: 8, samples });
}

/** A gray PNG of noise: does not compress, so its size is about width*height bytes. */
export function noisePng(width: number, height: number): Buffer {
  const samples = new Uint8Array(width * height);
  let x = 12345;
  for (let i = 0; i < samples.length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    samples[i] = x >>> 24;
  }
  return makePng({ width, height, channels: 1, bitDepth: 8, samples });
}

/** A PNG whose header claims 100000 x 100000 pixels (a decompression bomb). */
export function pixelBombPng(): Buffer {
  return makePng({
    width: 16,
    height: 16,
    channels: 1,
    bitDepth: 8,
    samples: new Uint8Array(256),
    headerSize: { width: 100_000, height: 100_000 },
  });
}

export interface Part {
  name: string;
  filename?: string;
  contentType?: string;
  data: Buffer | string;
}

/** Builds a multipart/form-data body. */
export function multipart(parts: Part[]): { payload: Buffer; headers: Record<string, string> } {
  const boundary = '----pneumolens-test-' + Math.random().toString(16).slice(2);
  const chunks: Buffer[] = [];
  for (const p of parts) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"`;
    if (p.filename !== undefined) head += `; filename="${p.filename}"`;
    head += '\r\n';
    if (p.contentType) head += `Content-Type: ${p.contentType}\r\n`;
    chunks.push(Buffer.from(head + '\r\n'), Buffer.isBuffer(p.data) ? p.data : Buffer.from(p.data), Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { payload: Buffer.concat(chunks), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } };
}

export const fileUpload = (data: Buffer, filename = 'chest.png', contentType = 'image/png') =>
  multipart([{ name: 'file', filename, contentType, data }]);

export interface FixtureServer {
  url: string;
  port: number;
  hits: string[];
  close(): Promise<void>;
}

/**
 * A local HTTP server on 127.0.0.1 (the only address tests ever contact):
 * /image.png -> the image; /redirect/N -> a chain of N redirects ending at /image.png;
 * /big -> more bytes than any test limit; /slow -> never answers; /missing -> 404.
 */
export async function fixtureServer(image: Buffer): Promise<FixtureServer> {
  const hits: string[] = [];
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    hits.push(url);
    const m = /^\/redirect\/(\d+)$/.exec(url);
    if (url === '/image.png') {
      res.writeHead(200, { 'content-type': 'image/png', 'content-length': image.length });
      res.end(image);
    } else if (m) {
      const n = Number(m[1]);
      res.writeHead(302, { location: n > 1 ? `/redirect/${n - 1}` : '/image.png' });
      res.end();
    } else if (url.startsWith('/to?')) {
      res.writeHead(302, { location: decodeURIComponent(url.slice(4)) });
      res.end();
    } else if (url === '/big') {
      res.writeHead(200, { 'content-type': 'image/png' }); // no content-length: streamed
      const chunk = Buffer.alloc(64 * 1024, 1);
      let sent = 0;
      const pump = () => {
        while (sent < 4 * 1024 * 1024) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      res.on('error', () => undefined);
      pump();
    } else if (url === '/slow') {
      // never answers; closed when the test server closes
    } else {
      res.writeHead(404);
      res.end('not found');
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    hits,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** Collects log lines written by pino. */
export class LogCapture {
  lines: string[] = [];
  write(line: string): void {
    this.lines.push(line);
  }
  get text(): string {
    return this.lines.join('');
  }
}

/**
 * A gray chest-like PNG: bright body, two darker lung fields, a spine, texture, and an optional
 * brighter opacity in the lower left lung. Synthetic (no patient data), deterministic.
 */
export function chestPng(width = 320, height = 360, opts: { seed?: number; opacity?: boolean } = {}): Buffer {
  const samples = new Uint8Array(width * height);
  let s = opts.seed ?? 7;
  const rnd = (): number => (s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const u = x / width - 0.5;
      const v = y / height - 0.5;
      const body = Math.exp(-((u / 0.42) ** 6) - (v / 0.55) ** 6);
      const lung = Math.exp(-(((Math.abs(u) - 0.19) / 0.12) ** 2) - ((v + 0.02) / 0.3) ** 4);
      const spine = Math.exp(-((u / 0.035) ** 2)) * body;
      const blob = opts.opacity ? Math.exp(-(((u + 0.2) / 0.07) ** 2) - ((v - 0.12) / 0.08) ** 2) : 0;
      const val = 20 + 170 * body - 120 * lung + 50 * spine + 90 * blob + 18 * rnd();
      samples[y * width + x] = Math.max(0, Math.min(255, Math.round(val)));
    }
  }
  return makePng({ width, height, channels: 1, bitDepth: 8, samples });
}
