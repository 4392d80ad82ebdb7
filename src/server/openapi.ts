/**
 * The hand-written OpenAPI 3 document of the HTTP API, and the small HTML docs page made from it.
 * The predict query schema defined here is also the one Fastify validates with, so the document
 * and the server cannot disagree about the parameters.
 */

import { codesWithStatus, ERROR_CODES, ERRORS } from '../errors.ts';
import type { CardInfo } from '../eval/card.ts';
import { COLORMAPS, type Colormap } from '../explain/colormaps.ts';
import type { DeclineBasis, GateResult } from '../gate/gate.ts';
import { CHECK_NAMES } from '../gate/image-checks.ts';
import type { SiteSummary } from '../site/profile.ts';
import type { AnalysisResult, RejectionReason } from '../types.ts';

/** Query parameters of POST /api/predict (JSON Schema, validated by Fastify). Add new ones here. */
export const PREDICT_QUERY_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    cam: { type: 'boolean', default: true, description: 'Compute the Grad-CAM overlay (default true).' },
    colormap: {
      type: 'string',
      enum: COLORMAPS,
      description: 'Colour map of the Grad-CAM heatmap (default jet).',
    },
    alpha: { type: 'number', minimum: 0, maximum: 1, description: 'Opacity of the heatmap over the image, 0..1 (default 0.45).' },
    threshold: {
      type: 'number',
      minimum: 0,
      maximum: 1,
      description: "Decision threshold on the calibrated probability, 0..1 (default: the model card's).",
    },
    force: {
      type: 'boolean',
      default: false,
      description:
        'Analyse the image even when the input gate refuses it (default false: such an image is refused with 422 not_a_chest_xray or outside_intended_use). A forced result says so in `warnings` and keeps `rejected: true` and its `reason`.',
    },
  },
} as const;

export interface PredictQuery {
  cam?: boolean;
  colormap?: Colormap;
  alpha?: number;
  threshold?: number;
  force?: boolean;
}

/**
 * The 200 answer of POST /api/predict (schema `Prediction` below): the AnalysisResult in its JSON
 * form, as toPredictResponse (src/server/predict-route.ts) and, on the user's device, src/web/device.ts
 * answerBody build it. The page (web/app.js) reads it with this type.
 */
export interface PredictResponse extends Pick<
  AnalysisResult,
  | 'label'
  | 'probability'
  | 'threshold'
  | 'logit'
  | 'model'
  | 'image'
  | 'timings_ms'
  | 'warnings'
  | 'rejected'
  | 'reason'
  | 'gate'
  | 'uncertainty'
  | 'uncertain'
  | 'site'
> {
  /** PNG data URL of the Grad-CAM overlay; null when cam=false. */
  gradcam: string | null;
  /** PNG data URL of the colour-mapped heatmap alone; null when cam=false. */
  heatmap: string | null;
  /** The Grad-CAM map at the model layer resolution, 0..1, row-major; null when cam=false. */
  gradcam_map: { width: number; height: number; data: number[] } | null;
  /** 'device': answered by the on-device engine (src/web/device.ts); absent in the server's answers. */
  analysed_on?: 'device';
}

/**
 * The `error` of a 422 refusal by the input gate (schema `Error`, codes not_a_chest_xray and
 * outside_intended_use): src/pipeline.ts rejectionError builds it from the gate's result.
 */
export interface RefusalError {
  code: RejectionReason;
  message: string;
  basis?: DeclineBasis;
  score: GateResult['score'];
  threshold: GateResult['threshold'];
  reasons: GateResult['reasons'];
  /** outside_intended_use only. */
  scope?: GateResult['scope'];
  /** outside_intended_use only. */
  scope_threshold?: GateResult['scopeThreshold'];
}

/**
 * The 200 answer of GET /api/model: the card as publicCard (src/server/info-routes.ts) serves it (no local
 * paths; long numeric arrays such as gradcam.weights summarised as {"omitted": true, "length": n}),
 * with `population` and the site profile in use (null: none; absent in src/web/device.ts
 * DeviceEngine.publicCard, the on-device card).
 */
export type ModelResponse = CardInfo & { population: string | null; site?: SiteSummary | null };

const errorContent = { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } };

/** The HTTP statuses of the error table (src/errors.ts) that POST /api/predict can answer with. */
export const PREDICT_ERROR_STATUSES = [
  ...new Set(ERROR_CODES.flatMap((c) => [ERRORS[c].status, ...(('also' in ERRORS[c] ? ERRORS[c].also : []) as number[])])),
]
  .filter((s) => s !== 404 && s !== 405)
  .sort((a, b) => a - b);

/** An error response: its prose, then its codes, listed from the error table. */
const errorResponse = (status: number, description: string) => {
  const codes = codesWithStatus(status);
  return { description: `${description} Codes: ${codes.map((c) => `\`${c}\``).join(', ')}.`, content: errorContent };
};

const retryAfter = {
  'Retry-After': { description: 'Seconds to wait before retrying.', schema: { type: 'integer' } },
};

/** What each error status of POST /api/predict means, in words; the codes are appended from the error table. */
function predictErrorProse(mb: number): Record<number, string> {
  return {
    400:
      'Malformed request: bad query parameter, bad JSON, missing file or more than one, multipart without a boundary or cut short, ' +
      'bytes that are not HTTP, or a URL that is not allowed (code `url_forbidden`).',
    403: 'A browser request from another origin (code `forbidden`): pages of other sites may not post here unless the origin is in PNEUMOLENS_ALLOWED_ORIGINS.',
    408: 'The upload stalled (no data for the idle timeout, default 10 s) or was not complete within the upload timeout (default 30 s); code `request_timeout`. The connection is closed.',
    413:
      `The file (or the image at the URL) is larger than ${mb} MB, or the image would decode to more than the decode budget ` +
      '(width x height x channels x bytes per sample, default 128 MiB; a deflated DICOM inflating beyond it counts too).',
    415: 'Not an image format that is read (JPEG, PNG, WebP, TIFF, DICOM), or a request content type that is not accepted.',
    422:
      'The image is corrupt, truncated, too large in pixels, or otherwise unusable; or (code `not_a_chest_xray`) the image checks found it is not a chest X-ray ' +
      '(colour photo, document or screenshot, blank image, extreme shape, pixel noise); ' +
      'or (code `outside_intended_use`) it passes those checks but the model was not validated on it: its gate score says it is unlike the chest X-rays it was trained and validated on (`basis: gate_score`: another body part or view, or a chest X-ray of another population, hospital or device), or its intended-use score puts it outside the validated population (`basis: intended_use_score`). ' +
      "Both carry `basis`, `score` (the model's gate score, null when the model has none), `threshold` and `reasons` (one line each); outside_intended_use also `scope` and `scope_threshold`. " +
      'Repeat with `force=true` to analyse it anyway.',
    431: 'The request headers are too large (code `headers_too_large`).',
    500: 'Unexpected server error (logged; no details are given).',
    502: 'The image URL could not be fetched (code `url_fetch_failed`).',
    503:
      'Busy (all analysis slots and the queue are taken, or too many uploads are in transit), the model is not loaded yet, or the server is shutting down. ' +
      'Retry-After is the measured time for the queue to drain.',
    504: 'The queue wait and analysis did not finish within the request timeout (code `timeout`), or the URL host did not answer in time (code `url_fetch_failed`).',
  };
}

/** A site profile as every answer names it (SiteSummary, src/site/profile.ts). */
const SITE_PROFILE_SCHEMA = {
  type: 'object',
  description:
    "The site profile the answer was decided with (PNEUMOLENS_SITE / --site): its calibration, threshold and scope replace the card's. Absent without one; /api/model gives it as `site` (null without one).",
  properties: {
    name: { type: 'string' },
    created: { type: 'string' },
    validated: {
      type: 'boolean',
      description: "false: the local AUC's CI fell below the floor; films outside the intended use stay declined.",
    },
    n: { type: 'integer', description: 'Films the profile was validated on at that site.' },
    auc: { type: 'number', nullable: true, description: 'Local AUC, k-fold by patient.' },
    auc_ci95: { type: 'array', nullable: true, items: { type: 'number' }, description: '[lower, upper] 95% bootstrap interval.' },
    threshold: { type: 'number' },
    policy: { type: 'string' },
    statement: { type: 'string', description: 'For people: "Site profile NAME: validated on N films here, AUC x [lo, hi]".' },
  },
} as const;

/** One response per error status of the table: a status without prose is a programming error. */
function predictErrorResponses(mb: number): Record<string, ReturnType<typeof errorResponse> & { headers?: typeof retryAfter }> {
  const prose = predictErrorProse(mb);
  return Object.fromEntries(
    PREDICT_ERROR_STATUSES.map((status) => {
      if (!prose[status]) throw new Error(`openapi: no description for status ${status} of the error table`);
      return [String(status), { ...errorResponse(status, prose[status]), ...(status === 503 ? { headers: retryAfter } : {}) }];
    }),
  );
}

export function openApiDocument(info: { version: string; maxUploadBytes: number }) {
  const mb = +(info.maxUploadBytes / (1024 * 1024)).toFixed(1);
  return {
    openapi: '3.0.3',
    info: {
      title: 'pneumolens API',
      version: info.version,
      description:
        'Chest X-ray pneumonia detector: calibrated probability and Grad-CAM explanation. ' +
        'Research and education tool, not a medical device.',
      license: { name: 'MIT' },
    },
    paths: {
      '/api/predict': {
        post: {
          summary: 'Analyse one chest X-ray',
          description:
            `Send the image as multipart/form-data (field \`file\`, at most ${mb} MB) or as JSON \`{"url": "https://..."}\`. ` +
            'JPEG, PNG, WebP, TIFF and DICOM are read; the format is recognised from the bytes, never from the file name or Content-Type. ' +
            'URLs must point to public http(s) hosts (an administrator can allow intranet hosts with PNEUMOLENS_URL_ALLOW). ' +
            'An image the image checks find is not a chest X-ray is refused with 422 `not_a_chest_xray`; an image the model was not validated on (unlike its training chest X-rays by its gate score, or outside the validated population by its intended-use score) with 422 `outside_intended_use`; both with `basis`, `score` and `reasons`, unless `force=true`. ' +
            'When the model has an ensemble, `uncertainty` is its disagreement and `uncertain: true` means: uncertain, refer to a clinician.',
          parameters: Object.entries(PREDICT_QUERY_SCHEMA.properties).map(([name, schema]) => {
            const { description, ...rest } = schema as { description: string } & Record<string, unknown>;
            return { name, in: 'query', required: false, description, schema: rest };
          }),
          requestBody: {
            required: true,
            content: {
              'multipart/form-data': {
                schema: {
                  type: 'object',
                  required: ['file'],
                  properties: {
                    file: {
                      type: 'string',
                      format: 'binary',
                      maxLength: info.maxUploadBytes,
                      description: 'The image file (maxLength: its size limit in bytes).',
                    },
                  },
                },
              },
              'application/json': {
                schema: {
                  type: 'object',
                  required: ['url'],
                  additionalProperties: false,
                  properties: { url: { type: 'string', format: 'uri', maxLength: 2048, example: 'https://example.org/cxr.png' } },
                },
              },
            },
          },
          'x-examples': [
            'curl -F file=@chest.png "http://localhost:8080/api/predict?cam=true&alpha=0.5"',
            'curl -H "content-type: application/json" -d \'{"url":"https://example.org/cxr.png"}\' http://localhost:8080/api/predict',
          ],
          responses: {
            '200': {
              description: 'The analysis.',
              content: { 'application/json': { schema: { $ref: '#/components/schemas/Prediction' } } },
            },
            ...predictErrorResponses(mb),
          },
        },
      },
      '/api/health': {
        get: {
          summary: 'Liveness and readiness',
          description:
            'Answers 200 when the model is loaded and the server takes requests, 503 while loading, after a failed load or while shutting down.',
          responses: {
            '200': { description: 'Ready.', content: { 'application/json': { schema: { $ref: '#/components/schemas/Health' } } } },
            '503': {
              description: 'Alive but not ready.',
              content: { 'application/json': { schema: { $ref: '#/components/schemas/Health' } } },
            },
          },
        },
      },
      '/api/model': {
        get: {
          summary: 'The model card',
          description:
            'Name, version, labels, preprocessing, calibration, threshold, validation metrics, intended use and limitations of the loaded model. ' +
            'Long numeric arrays (such as the Grad-CAM weights) are summarised as {"omitted": true, "length": n}. ' +
            "`population` (added to the card) says who the model is validated for, in the card's own words (null when the card says none).",
          responses: {
            '200': {
              description: 'The model card.',
              content: {
                'application/json': {
                  schema: { type: 'object', required: ['population'], properties: { population: { type: 'string', nullable: true } } },
                },
              },
            },
            '503': errorResponse(503, 'The model is not loaded (yet).'),
          },
        },
      },
      '/api/openapi.json': {
        get: {
          summary: 'This document',
          responses: { '200': { description: 'OpenAPI 3 document.', content: { 'application/json': { schema: { type: 'object' } } } } },
        },
      },
    },
    components: {
      schemas: {
        Error: {
          type: 'object',
          required: ['error'],
          properties: {
            error: {
              type: 'object',
              required: ['code', 'message'],
              properties: {
                code: {
                  type: 'string',
                  enum: ERROR_CODES,
                  example: 'unsupported_media_type',
                  description: ERROR_CODES.join(', '),
                },
                message: { type: 'string', description: 'For people; may change between versions.' },
                basis: {
                  type: 'string',
                  enum: ['image_checks', 'gate_score', 'intended_use_score'],
                  description:
                    "not_a_chest_xray and outside_intended_use only: what declined it. image_checks (not_a_chest_xray): a property no radiograph has; gate_score (outside_intended_use): the image passes those checks but the model's gate says it is unlike the chest X-rays it was trained and validated on (another body part or view, or a chest X-ray of a population, hospital or device it was not validated for); intended_use_score (outside_intended_use): a chest X-ray outside the validated population.",
                },
                score: {
                  type: 'number',
                  nullable: true,
                  description:
                    "not_a_chest_xray and outside_intended_use: the model's gate score (above threshold = unlike the training films); null when the model has no gate.",
                },
                threshold: {
                  type: 'number',
                  nullable: true,
                  description: 'not_a_chest_xray and outside_intended_use: the gate threshold of the model card.',
                },
                reasons: {
                  type: 'array',
                  items: { type: 'string' },
                  description: 'not_a_chest_xray and outside_intended_use only: why the image was refused, for people.',
                },
                scope: {
                  type: 'number',
                  nullable: true,
                  description:
                    'outside_intended_use only: the intended-use score (above scope_threshold = outside the validated population).',
                },
                scope_threshold: {
                  type: 'number',
                  nullable: true,
                  description: 'outside_intended_use only: its threshold in the model card.',
                },
                retry_after_s: { type: 'number', description: 'busy only: the same as the Retry-After header.' },
              },
              additionalProperties: true,
            },
          },
        },
        Prediction: {
          type: 'object',
          required: [
            'label',
            'probability',
            'threshold',
            'model',
            'image',
            'timings_ms',
            'gradcam',
            'warnings',
            'rejected',
            'gate',
            'uncertainty',
            'uncertain',
          ],
          properties: {
            label: { type: 'string', example: 'PNEUMONIA', description: 'PNEUMONIA if probability >= threshold, else NORMAL.' },
            probability: { type: 'number', minimum: 0, maximum: 1, description: 'Calibrated probability of pneumonia.' },
            threshold: { type: 'number', description: 'The decision threshold used.' },
            logit: { type: 'number', description: 'Raw model logit (before temperature scaling).' },
            model: { type: 'object', properties: { name: { type: 'string' }, version: { type: 'string' } } },
            image: {
              type: 'object',
              properties: {
                width: { type: 'integer' },
                height: { type: 'integer' },
                format: { type: 'string', enum: ['jpeg', 'png', 'webp', 'tiff', 'dicom'] },
              },
            },
            timings_ms: {
              type: 'object',
              additionalProperties: { type: 'number' },
              description: 'Per stage (decode, preprocess, infer, explain, total), plus upload or fetch, queue wait and server_total.',
            },
            gradcam: { type: 'string', nullable: true, description: 'PNG data URL of the Grad-CAM overlay; null when cam=false.' },
            heatmap: {
              type: 'string',
              nullable: true,
              description:
                'PNG data URL of the colour-mapped Grad-CAM heatmap alone (opaque, an indexed-colour PNG whose palette is the colour map, the size of the overlay), for blending over the image with any opacity; null when cam=false.',
            },
            gradcam_map: {
              type: 'object',
              nullable: true,
              description: 'The Grad-CAM map at the model layer resolution, normalised to 0..1, row-major.',
              properties: { width: { type: 'integer' }, height: { type: 'integer' }, data: { type: 'array', items: { type: 'number' } } },
            },
            warnings: {
              type: 'array',
              items: { type: 'string' },
              description:
                'For people. Starts with "uncertain: refer to a clinician..." when `uncertain`, and with "Analysed anyway (forced)..." for a forced analysis of a rejected image.',
            },
            rejected: {
              type: 'boolean',
              description:
                'The input gate judged this is not a chest X-ray (only in a 200 answer with force=true; then do not rely on the result).',
            },
            reason: { type: 'string', enum: ['not_a_chest_xray', 'outside_intended_use'], description: 'Present when rejected.' },
            gate: { $ref: '#/components/schemas/Gate' },
            uncertainty: {
              type: 'number',
              nullable: true,
              minimum: 0,
              maximum: 0.5,
              description:
                "Ensemble disagreement: population std of the ensemble members' calibrated probabilities; null when the model has no ensemble.",
            },
            uncertain: { type: 'boolean', description: "uncertainty above the model card's cutoff: uncertain, refer to a clinician." },
            site: { $ref: '#/components/schemas/SiteProfile' },
          },
        },
        SiteProfile: SITE_PROFILE_SCHEMA,
        Gate: {
          type: 'object',
          description: 'The input gate: cheap image checks plus, when the model has one, its out-of-distribution score.',
          properties: {
            rejected: { type: 'boolean' },
            reason: { type: 'string', enum: ['not_a_chest_xray', 'outside_intended_use'] },
            basis: {
              type: 'string',
              enum: ['image_checks', 'gate_score', 'intended_use_score'],
              description: 'When rejected: what decided the reason (see the Error schema).',
            },
            score: {
              type: 'number',
              nullable: true,
              description:
                "The model's gate score, normalised so that above `threshold` = not like the training chest X-rays; null when the model has none.",
            },
            threshold: { type: 'number', nullable: true },
            scope: {
              type: 'number',
              nullable: true,
              description:
                'The intended-use score: above `scopeThreshold` = a chest X-ray outside the population the model is validated for; null when the model has no intended-use head.',
            },
            scopeThreshold: { type: 'number', nullable: true },
            checks: {
              type: 'object',
              properties: {
                passed: { type: 'boolean' },
                stats: {
                  type: 'object',
                  description:
                    'Measured image statistics: aspect (width/height), saturation (0..1), grayStd and grayRange (0..255), nearWhite and modeFraction (0..1), samples.',
                  additionalProperties: { type: 'number' },
                },
                failures: {
                  type: 'array',
                  items: {
                    type: 'object',
                    properties: {
                      check: { type: 'string', enum: CHECK_NAMES },
                      value: { type: 'number' },
                      threshold: { type: 'number' },
                      reason: { type: 'string' },
                    },
                  },
                },
              },
            },
            reasons: { type: 'array', items: { type: 'string' } },
            message: { type: 'string' },
          },
        },
        Health: {
          type: 'object',
          properties: {
            status: {
              type: 'string',
              enum: ['ok', 'degraded', 'loading', 'failed', 'shutting_down'],
              description: 'degraded: an engine worker was stopped at a deadline (or died) and its replacement is starting.',
            },
            ready: { type: 'boolean' },
            model: { type: 'object', nullable: true, properties: { name: { type: 'string' }, version: { type: 'string' } } },
            site: {
              ...SITE_PROFILE_SCHEMA,
              nullable: true,
              description: 'The site profile the answers are decided with (PNEUMOLENS_SITE / --site), or null: the model card alone.',
            },
            uptime_s: { type: 'number' },
            load: {
              type: 'object',
              properties: {
                active: { type: 'integer' },
                queued: { type: 'integer' },
                max_concurrent: { type: 'integer' },
                max_queue: { type: 'integer' },
                uploads_in_flight: { type: 'integer', description: 'Request bodies (uploads and URL fetches) being received.' },
                connections: { type: 'integer', description: 'Open connections (at most PNEUMOLENS_MAX_CONNECTIONS; 503 beyond).' },
                engine_workers: { type: 'integer', description: 'Engine worker threads running.' },
                engine_workers_expected: { type: 'integer' },
                recycled_after_deadline: { type: 'integer', description: 'Workers stopped because an analysis passed its deadline.' },
                upload_bytes_in_flight: { type: 'integer', description: 'Bytes of those bodies received so far.' },
              },
            },
          },
        },
      },
    },
  };
}

export type OpenApiDocument = ReturnType<typeof openApiDocument>;

/**
 * A schema of the document with its `$ref`s resolved, for a route's `response` schema: Fastify then
 * serialises the answers with the document itself (a required field the server does not send is a
 * 500, a field the document does not describe is not sent), so the two cannot drift apart.
 */
export function resolvedSchema(doc: OpenApiDocument, name: keyof OpenApiDocument['components']['schemas']): Record<string, unknown> {
  const schemas = doc.components.schemas as Record<string, unknown>;
  const resolve = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(resolve);
    if (!v || typeof v !== 'object') return v;
    const ref = (v as { $ref?: unknown }).$ref;
    if (typeof ref === 'string') return resolve(schemas[ref.replace('#/components/schemas/', '')]);
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, resolve(x)]));
  };
  return resolve(schemas[name]) as Record<string, unknown>;
}

const esc = (s: unknown) =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);

/** Inline `code` spans of the descriptions, after escaping. */
const md = (s: unknown) => esc(s).replace(/`([^`]+)`/g, '<code>$1</code>');

function schemaText(schema: Record<string, unknown> | undefined): string {
  if (!schema) return '';
  if (typeof schema.$ref === 'string') return schema.$ref.split('/').pop() as string;
  const parts: string[] = [String(schema.type ?? 'object')];
  if (Array.isArray(schema.enum)) parts.push(`one of ${schema.enum.join(', ')}`);
  if (schema.minimum !== undefined || schema.maximum !== undefined) parts.push(`${schema.minimum ?? '…'} to ${schema.maximum ?? '…'}`);
  if (schema.default !== undefined) parts.push(`default ${JSON.stringify(schema.default)}`);
  return parts.join(', ');
}

/** A readable, dependency-free HTML page generated from the OpenAPI document. */
export function renderDocsHtml(doc: OpenApiDocument): string {
  const sections: string[] = [];
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, opRaw] of Object.entries(methods)) {
      const op = opRaw as {
        summary: string;
        description?: string;
        parameters?: Array<{ name: string; description: string; schema: Record<string, unknown> }>;
        requestBody?: { content: Record<string, { schema: { properties?: Record<string, { description?: string; type?: string }> } }> };
        responses: Record<string, { description: string }>;
        'x-examples'?: string[];
      };
      const id = `${method}-${path}`.replace(/[^a-z0-9]+/gi, '-');
      let html = `<section class="endpoint" id="${esc(id)}"><h2><span class="method">${esc(method.toUpperCase())}</span> <code>${esc(path)}</code></h2>`;
      html += `<p><strong>${esc(op.summary)}</strong></p>`;
      if (op.description) html += `<p>${md(op.description)}</p>`;
      if (op.parameters?.length) {
        html +=
          '<h3>Query parameters</h3><table><thead><tr><th scope="col">Name</th><th scope="col">Type</th><th scope="col">Description</th></tr></thead><tbody>';
        for (const p of op.parameters) {
          html += `<tr><td><code>${esc(p.name)}</code></td><td>${esc(schemaText(p.schema))}</td><td>${md(p.description)}</td></tr>`;
        }
        html += '</tbody></table>';
      }
      if (op.requestBody) {
        html += '<h3>Request body</h3><ul>';
        for (const [type, c] of Object.entries(op.requestBody.content)) {
          const fields = Object.entries(c.schema.properties ?? {})
            .map(([k, v]) => `<code>${esc(k)}</code> (${esc(v.type ?? '')})`)
            .join(', ');
          html += `<li><code>${esc(type)}</code>: ${fields}</li>`;
        }
        html += '</ul>';
      }
      if (op['x-examples']?.length) {
        html += '<h3>Examples</h3>' + op['x-examples'].map((e) => `<pre><code>${esc(e)}</code></pre>`).join('');
      }
      html += '<h3>Responses</h3><table><thead><tr><th scope="col">Status</th><th scope="col">Meaning</th></tr></thead><tbody>';
      for (const [status, r] of Object.entries(op.responses)) html += `<tr><td>${esc(status)}</td><td>${md(r.description)}</td></tr>`;
      html += '</tbody></table></section>';
      sections.push(html);
    }
  }
  const errorCodes = doc.components.schemas.Error.properties.error.properties.code.description;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(doc.info.title)} ${esc(doc.info.version)}: documentation</title>
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/style.css">
</head>
<body class="docs">
<header class="site-header"><h1>${esc(doc.info.title)} <small>${esc(doc.info.version)}</small></h1>
<p class="disclaimer" role="note">Research and education tool, not a medical device.</p></header>
<main>
<p>${md(doc.info.description)}</p>
<p>Machine-readable: <a href="/api/openapi.json">/api/openapi.json</a> (OpenAPI ${esc(doc.openapi)}). Web page: <a href="/">/</a>.</p>
<h2>Errors</h2>
<p>Every error is JSON <code>{"error": {"code": "...", "message": "..."}}</code> with the HTTP status. Codes: ${esc(errorCodes)}.</p>
${sections.join('\n')}
</main>
</body>
</html>
`;
}
