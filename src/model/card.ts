/**
 * The model card (docs/model-contract.md): loading, validation and default resolution.
 * Load-time problems are plain Errors whose message names the file and the field.
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface PreprocessingSpec {
  color: 'gray_bt601';
  resize: { mode: 'stretch' | 'letterbox'; filter: 'bilinear_antialias'; pad_value: number };
  scale: number;
  normalize: { mode: 'fixed'; mean: number; std: number } | { mode: 'per_image' };
}

/** The input-validity gate of the model (contract: `gate`); its score is the `ood` output. */
export interface GateSpec {
  output: string;
  /** Reject when the (normalised) score is above it; 1.0 by the contract. */
  threshold: number;
  components?: Array<{ name: string; raw_threshold?: number; description?: string }>;
  validation?: { false_rejection_rate?: number; n?: number } & Record<string, unknown>;
  /**
   * The intended-use head (contract: `gate.intended_use`): its score is the named output; above
   * `threshold` (1.0) the film looks outside the population the model is validated for (e.g. an
   * adult's film) and is declined with reason `outside_intended_use`.
   */
  intended_use?: IntendedUseSpec;
}

export interface IntendedUseSpec {
  output: string;
  threshold: number;
  /** The validated population, in words. */
  population?: string;
  description?: string;
  validation?: Record<string, unknown>;
}

/** Ensemble disagreement (contract: `uncertainty`); its input is the `members` output. */
export interface UncertaintySpec {
  output: string;
  method?: string;
  measure?: string;
  /** Above it the result is "uncertain: refer to a clinician"; in (0, 0.5]. */
  cutoff: number;
  /** Optional: also uncertain when |logit(probability) - logit(threshold)| is below it (calibrated logits). */
  margin_logit?: number;
  validation?: Record<string, unknown>;
}

/** One row of the development cross-source table (card: `metrics.by_source`). */
export interface SourceMetrics {
  source: string;
  n: number;
  auc: number;
  auc_ci?: [number, number];
  sensitivity: number;
  specificity: number;
  ece: number;
  note?: string;
}

/** An independent grading on hidden sets (card: `metrics.independent`), for the version it names. */
export interface IndependentResults {
  model_version: string;
  note: string;
  rows: Array<{ set: string; n: string; result: string }>;
}

export interface CardMetrics {
  validation?: Record<string, unknown>;
  /** Performance by image source, including sources other than the training hospital. */
  by_source?: SourceMetrics[];
  independent?: IndependentResults;
  [key: string]: unknown;
}

export interface ModelCard {
  schema_version: 1;
  name: string;
  version: string;
  file: string;
  sha256: string;
  architecture?: string;
  parameters?: number;
  gflops_per_image?: number;
  labels: [string, string];
  input: { name: string; channels: 1; height: number; width: number };
  outputs: { logit: string; features: string; ood?: string; members?: string };
  preprocessing: PreprocessingSpec;
  postprocessing: { temperature: number; bias?: number; threshold: number; threshold_policy?: string };
  gradcam: {
    layer: string;
    output: string;
    weights: number[];
    bias: number;
    /**
     * Optional: the value of acc(i,j) = sum_k (w_k / (h*w)) * A_k(i,j) shown as 1, the same for every
     * film (map = clamp(acc / display_scale, 0, 1)); absent: each film's own maximum.
     */
    display_scale?: number;
  };
  uncertainty?: UncertaintySpec;
  gate?: GateSpec;
  metrics?: CardMetrics;
  training?: Record<string, unknown>;
  intended_use?: string;
  limitations?: string[];
}

/** A validated card with the absolute paths it was loaded from and points to. */
export interface LoadedCard extends ModelCard {
  cardPath: string;
  modelPath: string;
}

/** Repository root, resolved from this file (src/model/card.ts). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Card path: $PNEUMOLENS_MODEL if set, else models/<name in models/MODEL>. */
export function defaultCardPath(env: NodeJS.ProcessEnv = process.env, root = REPO_ROOT): string {
  const fromEnv = env.PNEUMOLENS_MODEL?.trim();
  if (fromEnv) return resolve(fromEnv);
  const pointer = resolve(root, 'models', 'MODEL');
  if (!existsSync(pointer)) {
    throw new Error(
      `No model configured: ${pointer} does not exist (it names the card, e.g. "pneumolens.json"); or set PNEUMOLENS_MODEL to a card path.`,
    );
  }
  const name = readFileSync(pointer, 'utf8').trim().split(/\r?\n/)[0]?.trim();
  if (!name) throw new Error(`${pointer} is empty: it must contain the card file name, e.g. "pneumolens.json".`);
  return resolve(root, 'models', name);
}

type Json = Record<string, unknown>;

/** Field checker bound to one file, so every message names file and field. */
function checker(file: string) {
  const fail = (field: string, want: string, got: unknown): never => {
    throw new Error(`Invalid model card ${file}: "${field}" must be ${want} (got ${JSON.stringify(got)?.slice(0, 80)}).`);
  };
  const get = (obj: Json, path: string): unknown => path.split('.').reduce<unknown>((o, k) => (o as Json | undefined)?.[k], obj);
  return {
    fail,
    obj(o: Json, path: string): Json {
      const v = get(o, path);
      if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(path, 'an object', v);
      return v as Json;
    },
    str(o: Json, path: string, allowed?: readonly string[]): string {
      const v = get(o, path);
      if (typeof v !== 'string' || v.length === 0) fail(path, 'a non-empty string', v);
      if (allowed && !allowed.includes(v as string)) fail(path, `one of ${allowed.join(', ')}`, v);
      return v as string;
    },
    num(o: Json, path: string, ok: (n: number) => boolean = () => true, want = 'a finite number'): number {
      const v = get(o, path);
      if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) fail(path, want, v);
      return v as number;
    },
    optional(o: Json, path: string): boolean {
      return get(o, path) !== undefined && get(o, path) !== null;
    },
  };
}

/** Validates parsed card JSON; returns it typed. */
export function validateCard(json: unknown, file = 'model card'): ModelCard {
  const c = checker(file);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) c.fail('(root)', 'a JSON object', json);
  const o = json as Json;
  c.num(o, 'schema_version', (n) => n === 1, 'the number 1');
  c.str(o, 'name');
  c.str(o, 'version');
  c.str(o, 'file');
  const sha = c.str(o, 'sha256');
  if (!/^[0-9a-f]{64}$/i.test(sha)) c.fail('sha256', '64 hex digits', sha);
  const labels = o.labels;
  if (!Array.isArray(labels) || labels.length !== 2 || !labels.every((l) => typeof l === 'string' && l)) {
    c.fail('labels', 'two non-empty strings [negative, positive]', labels);
  }
  c.obj(o, 'input');
  c.str(o, 'input.name');
  c.num(o, 'input.channels', (n) => n === 1, 'the number 1');
  const positiveInt = (n: number) => Number.isInteger(n) && n > 0 && n <= 4096;
  c.num(o, 'input.height', positiveInt, 'a positive integer');
  c.num(o, 'input.width', positiveInt, 'a positive integer');
  c.obj(o, 'outputs');
  c.str(o, 'outputs.logit');
  c.str(o, 'outputs.features');
  if (c.optional(o, 'outputs.ood')) c.str(o, 'outputs.ood');
  c.obj(o, 'preprocessing');
  c.str(o, 'preprocessing.color', ['gray_bt601']);
  c.obj(o, 'preprocessing.resize');
  c.str(o, 'preprocessing.resize.mode', ['stretch', 'letterbox']);
  c.str(o, 'preprocessing.resize.filter', ['bilinear_antialias']);
  c.num(o, 'preprocessing.resize.pad_value', (n) => n >= 0 && n <= 255, 'a number in 0..255');
  c.num(o, 'preprocessing.scale', (n) => n > 0, 'a positive number');
  c.obj(o, 'preprocessing.normalize');
  const mode = c.str(o, 'preprocessing.normalize.mode', ['fixed', 'per_image']);
  if (mode === 'fixed') {
    c.num(o, 'preprocessing.normalize.mean');
    c.num(o, 'preprocessing.normalize.std', (n) => n > 0, 'a positive number');
  }
  c.obj(o, 'postprocessing');
  c.num(o, 'postprocessing.temperature', (n) => n > 0, 'a positive number');
  if ((o.postprocessing as Json).bias !== undefined) c.num(o, 'postprocessing.bias');
  c.num(o, 'postprocessing.threshold', (n) => n >= 0 && n <= 1, 'a number in 0..1');
  c.obj(o, 'gradcam');
  c.str(o, 'gradcam.layer');
  const camOutput = c.str(o, 'gradcam.output');
  const features = (o.outputs as Json).features;
  if (camOutput !== features) c.fail('gradcam.output', `equal to outputs.features ("${String(features)}")`, camOutput);
  const weights = (o.gradcam as Json).weights;
  if (!Array.isArray(weights) || weights.length === 0 || !weights.every((w) => typeof w === 'number' && Number.isFinite(w))) {
    c.fail('gradcam.weights', 'a non-empty array of finite numbers', Array.isArray(weights) ? `array(${weights.length})` : weights);
  }
  c.num(o, 'gradcam.bias');
  if ((o.gradcam as Json).display_scale !== undefined) c.num(o, 'gradcam.display_scale', (n) => n > 0, 'a positive number');
  if (c.optional(o, 'outputs.members')) c.str(o, 'outputs.members');
  if (c.optional(o, 'gate')) {
    c.obj(o, 'gate');
    const out = c.str(o, 'gate.output');
    const named = (o.outputs as Json).ood;
    if (named !== undefined && named !== out) c.fail('gate.output', `equal to outputs.ood ("${String(named)}")`, out);
    c.num(o, 'gate.threshold', (n) => n > 0, 'a positive number');
    if (c.optional(o, 'gate.intended_use')) {
      c.obj(o, 'gate.intended_use');
      c.str(o, 'gate.intended_use.output');
      c.num(o, 'gate.intended_use.threshold', (n) => n > 0, 'a positive number');
    }
  }
  if (c.optional(o, 'uncertainty')) {
    c.obj(o, 'uncertainty');
    const out = c.str(o, 'uncertainty.output');
    const named = (o.outputs as Json).members;
    if (named !== undefined && named !== out) c.fail('uncertainty.output', `equal to outputs.members ("${String(named)}")`, out);
    c.num(o, 'uncertainty.cutoff', (n) => n > 0 && n <= 0.5, 'a number in (0, 0.5]');
    if (c.optional(o, 'uncertainty.margin_logit')) c.num(o, 'uncertainty.margin_logit', (n) => n >= 0, 'a number >= 0');
  }
  // Descriptive fields, checked loosely: only what the page and `info` need to show them.
  if (c.optional(o, 'metrics')) {
    const m = c.obj(o, 'metrics');
    if (m.by_source !== undefined) {
      if (!Array.isArray(m.by_source)) c.fail('metrics.by_source', 'an array', m.by_source);
      (m.by_source as unknown[]).forEach((_, i) => c.str(o, `metrics.by_source.${i}.source`));
    }
    if (m.independent !== undefined) {
      c.obj(o, 'metrics.independent');
      const rows = (m.independent as Json).rows;
      if (!Array.isArray(rows)) c.fail('metrics.independent.rows', 'an array', rows);
    }
  }
  if (c.optional(o, 'intended_use')) c.str(o, 'intended_use');
  if (c.optional(o, 'limitations') && !(Array.isArray(o.limitations) && o.limitations.every((l) => typeof l === 'string'))) {
    c.fail('limitations', 'an array of strings', o.limitations);
  }
  return o as unknown as ModelCard;
}

/** Reads and validates a card; resolves the ONNX path relative to the card. */
export function loadCard(cardPath: string = defaultCardPath()): LoadedCard {
  const abs = resolve(cardPath);
  if (!existsSync(abs)) throw new Error(`Model card not found: ${abs}`);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(abs, 'utf8'));
  } catch (e) {
    throw new Error(`Model card ${abs} is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
  const card = validateCard(json, abs);
  const modelPath = isAbsolute(card.file) ? card.file : resolve(dirname(abs), card.file);
  if (!existsSync(modelPath)) throw new Error(`Model file named by ${abs} ("file") not found: ${modelPath}`);
  return { ...card, cardPath: abs, modelPath };
}

/** Streams the ONNX file through SHA-256 and throws if it differs from card.sha256. */
export async function verifyModelHash(card: LoadedCard): Promise<void> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(card.modelPath)) hash.update(chunk as Buffer);
  const actual = hash.digest('hex');
  if (actual !== card.sha256.toLowerCase()) {
    throw new Error(`Model file ${card.modelPath} does not match its card ${card.cardPath}: sha256 ${actual} != ${card.sha256}.`);
  }
}
