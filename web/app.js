// @ts-check
// pneumolens web page: vanilla JS, no build step, type-checked by `npm run typecheck` (tsconfig.web.json).
// Talks to /api/predict and /api/model, or analyses on this device (on-device.js, issue 21).
import { deviceCard, devicePredict, hasServer, initDevice, onDevice } from './on-device.js';

// The API's answers, typed by the server's own types (src/server/openapi.ts, src/server/errors.ts).
/** @typedef {import('../src/server/openapi.ts').PredictResponse} PredictResponse POST /api/predict, 200 */
/** @typedef {import('../src/server/openapi.ts').RefusalError} RefusalError POST /api/predict, 422 refusal: `error` */
/** @typedef {import('../src/server/openapi.ts').ModelResponse} ModelResponse GET /api/model, 200 */
/** @typedef {import('../src/server/openapi.ts').OpenApiDocument} OpenApiDocument GET /api/openapi.json */
/** @typedef {import('../src/server/errors.ts').ErrorBody} ErrorBody any error answer */
/** @typedef {ErrorBody['error']} ApiError */
/** @typedef {import('../src/types.ts').RejectionReason} RejectionReason */
/** @typedef {import('./on-device.js').PageInput} PageInput */
/** @typedef {Record<string, unknown>} Loose a JSON object of the card whose fields the page checks one by one */
/** @typedef {NonNullable<NonNullable<ModelResponse['metrics']>['by_source']>[number] & Loose} SourceRow */

/**
 * The element of the page with this id, checked to be of its kind (default: any HTML element).
 * @template {HTMLElement} [T=HTMLElement]
 * @param {string} id
 * @param {{ new (): T, prototype: T }} [kind] e.g. HTMLInputElement
 * @returns {T}
 */
function $(id, kind) {
  const e = document.getElementById(id);
  const type = kind ?? HTMLElement;
  if (!(e instanceof type)) throw new TypeError(`The page has no ${type.name} #${id}.`);
  return /** @type {T} */ (e);
}

/** @param {unknown} v @returns {Loose | undefined} the JSON object v, or undefined */
const obj = (v) => (v && typeof v === 'object' && !Array.isArray(v) ? /** @type {Loose} */ (v) : undefined);
/** @param {unknown} v @returns {v is Loose} any object, arrays included */
const isObject = (v) => !!v && typeof v === 'object';
/** @param {unknown} v @returns {unknown[]} v if it is an array, else none */
const list = (v) => (Array.isArray(v) ? v : []);
/** @param {unknown} r @returns {r is SourceRow} a row of a by-source table (metrics.by_source): an object with its source */
const isSourceRow = (r) => isObject(r) && typeof r.source === 'string';

const state = {
  /** @type {PageInput | null} The current input: { kind: 'file', file } or { kind: 'url', url }. */
  input: null,
  /** @type {string | null} Object URL of the chosen file, when the browser can display it. */
  originalUrl: null,
  /** @type {HTMLImageElement | null} The original as a loaded <img> for canvas blending (null: not displayable here). */
  originalImg: null,
  /** @type {PredictResponse | null} The last API answer. */
  result: null,
  /** @type {HTMLImageElement | null} The server's colour-mapped heatmap (answer field `heatmap`) as a loaded <img>, blended here over the original. */
  heatmap: null,
  /** @type {ModelResponse | null} The model card (GET /api/model). */
  card: null,
  busy: false,
  again: false,
  force: false, // "Analyse anyway" after the input gate refused the image; reset for a new input
  fresh: false, // the next result is for a new input: move focus to it (not for a re-request)
  colormap: 'jet', // the colour map of the request in flight, shown in the legend with its result
};

/** @typedef {{ title: string, text: string, score?: string, force: string, status: string }} Refusal */
/**
 * Gate refusals (API 422 codes) the page explains in its own words, with "Analyse anyway".
 * @type {Record<RejectionReason, Refusal>}
 */
const REFUSALS = {
  not_a_chest_xray: {
    title: 'This does not look like a chest X-ray',
    text: 'The model was trained only on frontal chest X-rays, so it was not run on this image: its answer would be meaningless.',
    score: 'Model gate score',
    force: 'The result will carry a warning; do not rely on it.',
    status: 'Refused: this does not look like a chest X-ray.',
  },
  outside_intended_use: {
    title: "Outside the model's intended use",
    // {population}: who the model is for, from the served card (GET /api/model `population`)
    text:
      'The image checks accept it, but the model is not validated on films like it: {population}. ' +
      'It was not run, because its answer here would have no measured accuracy.',
    force: '"Analyse anyway" runs the model with a warning on the result; nobody has measured how accurate it is on such images.',
    status: "Declined: outside the model's intended use.",
  },
};

/** Who the model is validated for, in the card's words (the server derives `population` from the card). */
function populationWords() {
  const p = state.card?.population;
  return typeof p === 'string' && p ? `it is validated only for ${p}` : 'the model card does not say which population it is validated for';
}

/**
 * How far past its threshold a gate score is, in words (the numbers stay in the API's JSON answer).
 * @param {number} score
 * @param {number | null | undefined} threshold
 */
function howFar(score, threshold) {
  if (typeof threshold !== 'number' || !(threshold > 0)) return 'far';
  const r = score / threshold;
  if (!Number.isFinite(r)) return 'far';
  return r <= 2 ? 'just' : r <= 100 ? 'clearly' : 'far';
}

/** A gate reason without the raw score in brackets ("(gate score 4.9e+11 > 1)"): numbers are for the JSON. */
/** @param {unknown} reason */
const inWords = (reason) => String(reason).replace(/\s*\((?:gate|intended-use) score [^)]*\)/g, '');

/**
 * The refusal's one sentence about the model's own score, in words.
 * @param {RefusalError} error
 */
function scoreWords(error) {
  if (error.code === 'outside_intended_use' && error.basis === 'gate_score' && typeof error.score === 'number') {
    // declined by the model's gate score (unlike every film it was fitted on), not by an intended-use head
    return `The model's own check finds it ${howFar(error.score, error.threshold)} unlike the chest X-rays it was trained and validated on.`;
  }
  if (error.code === 'outside_intended_use') {
    if (typeof error.scope !== 'number' || Number.isNaN(error.scope))
      return 'The model could not score how much this film resembles the population it is validated for.';
    return `The model's intended-use check puts this film ${howFar(error.scope, error.scope_threshold)} outside that population.`;
  }
  if (typeof error.score === 'number' && typeof error.threshold === 'number') {
    return error.score > error.threshold || Number.isNaN(error.score)
      ? `The model's own check also finds it ${howFar(error.score, error.threshold)} unlike the chest X-rays it was trained on.`
      : "The model's own check did not object; the image checks above refused it.";
  }
  return 'This model has no check of its own; the image checks above refused it.';
}

// ---------- status and errors ----------
/** @param {string} text */
function setStatus(text) {
  $('status').textContent = text;
}

/** @param {string} message */
function showError(message) {
  const el = $('error');
  el.textContent = message;
  el.hidden = !message;
}

/** @param {Response} res */
async function errorMessage(res) {
  try {
    const body = /** @type {ErrorBody | undefined} */ (obj(await res.json()));
    if (body && body.error && body.error.message) return `${body.error.message} (${res.status} ${body.error.code})`;
  } catch {
    /* not JSON */
  }
  return `The server answered ${res.status} ${res.statusText}.`;
}

// ---------- input ----------
function resetPreview() {
  state.force = false;
  clearAnswer();
  if (state.originalUrl) URL.revokeObjectURL(state.originalUrl);
  state.originalUrl = null;
  state.originalImg = null;
}

/** Nothing of the previous answer stays on the page: a new input, or an error, hides its result and refusal. */
function clearAnswer() {
  state.result = null;
  state.heatmap = null;
  $('result').hidden = true;
  $('rejected').hidden = true;
  showError('');
}

/**
 * @param {string} src
 * @returns {Promise<HTMLImageElement | null>} the loaded image (null: the browser cannot show it)
 */
function loadImage(src) {
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => resolve(null);
    img.src = src;
  });
}

/** @param {File | null | undefined} file */
async function chooseFile(file) {
  if (!file) return;
  resetPreview();
  state.fresh = true;
  state.input = { kind: 'file', file };
  const url = URL.createObjectURL(file);
  state.originalUrl = url;
  state.originalImg = await loadImage(url);
  const preview = $('preview');
  preview.hidden = false;
  $('preview-img').hidden = !state.originalImg;
  if (state.originalImg) $('preview-img', HTMLImageElement).src = url;
  $('preview-note').textContent = state.originalImg
    ? `${file.size.toLocaleString()} bytes`
    : `${file.size.toLocaleString()} bytes; this browser cannot preview the format (e.g. DICOM or TIFF), the server will read it.`;
  await analyse();
}

/** @param {string} url */
async function chooseUrl(url) {
  resetPreview();
  state.fresh = true;
  state.input = { kind: 'url', url };
  $('preview').hidden = false;
  $('preview-img').hidden = true;
  $('preview-note').textContent = 'The server fetches the image from the URL.';
  await analyse();
}

/** @param {number} alpha */
function queryString(alpha) {
  const q = new URLSearchParams({ cam: 'true', colormap: $('colormap', HTMLSelectElement).value, alpha: String(alpha) });
  const t = $('threshold', HTMLInputElement).value.trim();
  if (t !== '') q.set('threshold', t);
  if (state.force) q.set('force', 'true');
  return q.toString();
}

/**
 * Sends the input to the API; alpha only matters for the server-rendered overlay.
 * @param {PageInput} input
 * @param {number} alpha
 * @returns {Promise<Response>}
 */
async function request(input, alpha) {
  if (input.kind === 'file' && onDevice(input)) return devicePredict(input.file, queryString(alpha));
  /** @type {RequestInit} */
  const init = { method: 'POST' };
  if (input.kind === 'file') {
    const form = new FormData();
    form.append('file', input.file);
    init.body = form;
  } else {
    init.headers = { 'content-type': 'application/json' };
    init.body = JSON.stringify({ url: input.url });
  }
  return fetch(`/api/predict?${queryString(alpha)}`, init);
}

/**
 * Whether an API error is a refusal by the input gate (its code is the gate's reason).
 * @param {ApiError | undefined} error
 * @returns {error is ApiError & RefusalError}
 */
const isRefusal = (error) => error?.code === 'not_a_chest_xray' || error?.code === 'outside_intended_use';

async function analyse() {
  const input = state.input;
  if (!input) return;
  if (state.busy) {
    state.again = true; // e.g. the opacity changed while a request was running: ask once more after it
    return;
  }
  const t = $('threshold', HTMLInputElement).value.trim();
  if (t !== '' && !(Number(t) >= 0 && Number(t) <= 1)) {
    showError('The decision threshold must be a probability from 0 to 1 (0.8 = 80 %).');
    return;
  }
  state.busy = true;
  document.body.classList.add('busy');
  $('result').setAttribute('aria-busy', 'true');
  showError('');
  setStatus('Analysing…');
  try {
    state.colormap = $('colormap', HTMLSelectElement).value;
    const res = await request(input, currentAlpha());
    $('rejected').hidden = true;
    if (res.status === 422) {
      const body = /** @type {ErrorBody | undefined} */ (
        obj(
          await res
            .clone()
            .json()
            .catch(() => null),
        )
      );
      const error = body?.error;
      if (isRefusal(error)) {
        const refusal = REFUSALS[error.code];
        showRejected(error, refusal);
        setStatus(refusal.status);
        return;
      }
    }
    if (!res.ok) {
      const message = await errorMessage(res);
      clearAnswer();
      showError(message);
      setStatus('');
      return;
    }
    /** @type {unknown} */
    const answer = await res.json();
    if (!obj(answer)) throw new TypeError('The answer is not a JSON object.'); // as before: reading its fields would throw here
    const result = /** @type {PredictResponse} */ (answer);
    state.result = result;
    // The server renders the heatmap (one renderer, src/explain/overlay.ts); the page only blends it.
    state.heatmap = state.originalImg && result.heatmap ? await loadImage(result.heatmap) : null;
    showResult(result);
    const r = result;
    setStatus(
      `Done: ${r.label}, probability of pneumonia ${pct(r.probability)} (threshold ${pct(r.threshold)}).` +
        (r.uncertain ? ' Uncertain: refer to a clinician.' : '') +
        (r.warnings?.length ? ` ${r.warnings.length} warning${r.warnings.length > 1 ? 's' : ''}.` : ''),
    );
  } catch {
    clearAnswer();
    showError('Could not reach the server. Is it running?');
    setStatus('');
  } finally {
    state.busy = false;
    state.fresh = false;
    document.body.classList.remove('busy');
    $('result').removeAttribute('aria-busy');
    if (state.again) {
      state.again = false;
      void analyse(); // it shows its own errors
    }
  }
}

// ---------- refusal by the input gate ----------
/**
 * @param {RefusalError} error
 * @param {Refusal} refusal
 */
function showRejected(error, refusal) {
  $('result').hidden = true;
  $('rejected-title').textContent = refusal.title;
  $('rejected-text').textContent = refusal.text.replace('{population}', populationWords());
  const reasons = Array.isArray(error.reasons) && error.reasons.length ? error.reasons : [error.message];
  $('rejected-reasons').replaceChildren(
    ...reasons.map((r) => {
      const li = document.createElement('li');
      li.textContent = inWords(r);
      return li;
    }),
  );
  $('rejected-score').textContent = scoreWords(error);
  $('force-hint').textContent = refusal.force;
  $('rejected').hidden = false;
  // The status line and the whole explanation in view (below the sticky banner), focus on the one action it offers.
  $('status').scrollIntoView({ block: 'start' });
  const button = $('force', HTMLButtonElement);
  button.focus({ preventScroll: button.getBoundingClientRect().bottom <= window.innerHeight });
}

function analyseAnyway() {
  state.force = true;
  state.fresh = true;
  $('rejected').hidden = true;
  void analyse(); // it shows its own errors
}

// ---------- result ----------
/** @param {number} p */
const pct = (p) => `${(p * 100).toFixed(1)} %`;

function currentAlpha() {
  return $('cam-on', HTMLInputElement).checked ? Number($('opacity', HTMLInputElement).value) : 0;
}

/** @param {PredictResponse} r the answer just received (state.result) */
function showResult(r) {
  $('result').hidden = false;
  const label = $('label');
  label.textContent = r.label;
  label.dataset.label = r.label;
  $('result').dataset.label = r.label; // the full-precision answer, for automation and tests
  $('result').dataset.probability = String(r.probability);
  $('probability').textContent = pct(r.probability);
  $('threshold-value').textContent = pct(r.threshold);
  // the gradient spans the whole bar (0 % green to 100 % red); the fill only uncovers it up to p
  $('bar-fill').style.setProperty('--p', `${r.probability * 100}%`);
  $('bar-threshold').style.left = `${r.threshold * 100}%`;
  $('bar').setAttribute('aria-label', `Probability ${pct(r.probability)}, threshold ${pct(r.threshold)}`);
  $('uncertain').hidden = !r.uncertain;
  $('uncertainty').textContent =
    typeof r.uncertainty === 'number'
      ? `Uncertainty ${r.uncertainty.toFixed(3)} (disagreement of the model's ensemble, 0 to 0.5)${r.uncertain ? ": above the model's cutoff" : ''}.`
      : 'This model gives no uncertainty estimate.';
  const warnings = $('warnings');
  warnings.replaceChildren(
    ...r.warnings.map((w) => {
      const li = document.createElement('li');
      li.textContent = w;
      return li;
    }),
  );
  const t = r.timings_ms ?? {};
  $('timings').textContent =
    `${r.image.format.toUpperCase()} ${r.image.width}×${r.image.height}; model ${r.model.name} ${r.model.version}; ${Math.round(t.device_total ?? t.server_total ?? t.total ?? 0)} ms ${r.analysed_on === 'device' ? 'on this device' : 'on the server'}.`;

  const original = $('original', HTMLImageElement);
  original.hidden = !state.originalImg;
  $('original-missing').hidden = !!state.originalImg;
  if (state.originalImg && state.originalUrl) original.src = state.originalUrl;

  drawOverlay();
  showLegend(state.colormap);
  if (state.fresh) {
    // A new result: keyboard and screen-reader users land on it (the status line announces it too).
    const reduced = window.matchMedia('(prefers-reduced-motion: reduce)').matches;
    // from the status line down: on a phone the sticky banner would cover the status above the result
    $('status').scrollIntoView({ behavior: reduced ? 'auto' : 'smooth', block: 'start' });
    $('result-title').focus({ preventScroll: true });
  }
}

/**
 * The server's colour maps (src/explain/colormaps.ts) at 33 evenly spaced points, for the legend
 * only (the heatmap itself is rendered by the server); test/web/web-truth.test.ts checks the rendered
 * legend against that module.
 */
/** @type {Record<string, string>} */
const COLORMAP_STOPS = {
  jet: '#000080 #0000a4 #0000c8 #0000ed #0000ff #0021ff #0041ff #0061ff #0081ff #00a1ff #00c1ff #00e1fb #16ffe1 #30ffc7 #49ffad #63ff94 #7dff7a #94ff63 #adff49 #c7ff30 #e1ff16 #fbf100 #ffd300 #ffb600 #ff9800 #ff7a00 #ff5d00 #ff3f00 #ff2200 #ed0400 #c80000 #a40000 #800000',
  viridis:
    '#470155 #480d60 #48186a #482374 #472d7b #453781 #434186 #404a8a #3d528c #395b8d #34638e #306b8e #2b738e #277a8e #23828d #21898c #1f918b #1f978a #209f88 #24a685 #2aad80 #32b47b #3cbb74 #4ac26c #59c862 #6bce56 #7fd34a #95d73d #abdc30 #c2df25 #d8e21d #ece51b #fce721',
  inferno:
    '#000000 #040417 #0b062c #15083d #21094b #2e0b55 #3c0c5d #490e63 #571168 #64146b #71176c #7e1b6b #8a1f69 #972466 #a32960 #af2f59 #ba3651 #c43d49 #cf453f #d94d34 #e2572a #ea6221 #f06e18 #f57b12 #f9890f #fa990f #faa913 #f9b91c #f7ca2b #f5db41 #f3ea5c #f4f87f #faffa8',
};

/**
 * The Grad-CAM legend: the colour map in use, what the colours mean, and whether its scale is fixed or per film.
 * @param {string} colormap
 */
function showLegend(colormap) {
  const name = COLORMAP_STOPS[colormap] ? colormap : 'jet';
  const shown = $('colormap').querySelector(`option[value="${name}"]`)?.textContent ?? name;
  const positive = String(state.card?.labels?.[1] ?? 'pneumonia').toLowerCase();
  $('cam-legend-bar').style.background = `linear-gradient(90deg, ${COLORMAP_STOPS[name].split(' ').join(', ')})`;
  $('cam-legend-bar').setAttribute('aria-label', `Colour scale (${shown}): low to high evidence for ${positive}`);
  const scale = state.card?.gradcam?.display_scale;
  const fixed = scale !== undefined && scale !== null;
  $('cam-legend-text').textContent =
    `Colour: low → high evidence for ${positive} (${shown} colours). ` +
    (fixed
      ? 'Fixed scale: the same colour means the same evidence on every film, so films can be compared.'
      : "Per-film scale: each film's strongest region gets the top colour, so colours cannot be compared between films.");
}

/**
 * @param {number} w
 * @param {number} h
 */
function displaySize(w, h, max = 1024) {
  const s = Math.min(1, max / Math.max(w, h));
  return { w: Math.max(1, Math.round(w * s)), h: Math.max(1, Math.round(h * s)) };
}

/** Client-side blend when the browser shows the original; else the server's overlay PNG. */
function drawOverlay() {
  const r = state.result;
  if (!r) return;
  const canvas = $('overlay-canvas', HTMLCanvasElement);
  const img = $('overlay-img', HTMLImageElement);
  $('opacity-value').textContent = `${Math.round(Number($('opacity', HTMLInputElement).value) * 100)} %`;
  if (state.originalImg && state.heatmap) {
    canvas.hidden = false;
    img.hidden = true;
    const { w, h } = displaySize(state.originalImg.naturalWidth, state.originalImg.naturalHeight);
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext('2d');
    if (!ctx) throw new Error('This browser gives no 2D canvas.');
    ctx.globalAlpha = 1;
    ctx.drawImage(state.originalImg, 0, 0, w, h);
    // opacity blending only (source-over with globalAlpha, the canvas form of CSS opacity)
    ctx.globalAlpha = currentAlpha();
    if (ctx.globalAlpha > 0) ctx.drawImage(state.heatmap, 0, 0, w, h);
    ctx.globalAlpha = 1;
  } else {
    canvas.hidden = true;
    img.hidden = false;
    img.src = r.gradcam ?? '';
  }
}

let rerequestTimer = 0;
/** Opacity or toggle change: instant on the canvas; the server-rendered overlay is asked again. */
function onOverlayControl() {
  drawOverlay();
  if (!(state.originalImg && state.heatmap) && state.input) {
    clearTimeout(rerequestTimer);
    rerequestTimer = window.setTimeout(analyse, 350);
  }
}

/**
 * @param {string} name
 * @param {Blob} blob
 */
function download(name, blob) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

/**
 * The overlay as shown: the canvas blend, else the server's overlay PNG.
 * @param {PredictResponse} result
 * @returns {Promise<Blob | null>} null: no overlay to download
 */
async function overlayBlob(result) {
  if (state.originalImg && state.heatmap) {
    const canvas = $('overlay-canvas', HTMLCanvasElement);
    return new Promise((resolve) => canvas.toBlob(resolve, 'image/png'));
  }
  return result.gradcam ? dataUrlBlob(result.gradcam) : null;
}

/** @param {string} dataUrl */
function dataUrlBlob(dataUrl) {
  const [head, b64] = dataUrl.split(',');
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Blob([bytes], { type: head.slice(5).split(';')[0] });
}

/**
 * The JSON report: the API answer as served (its shape is the OpenAPI document's Prediction), without the images.
 * @param {PredictResponse} result
 */
function report(result) {
  const { gradcam: _overlay, heatmap: _heatmap, ...answer } = result;
  return {
    tool: 'pneumolens',
    disclaimer: 'Research and education tool, not a medical device.',
    generated_at: new Date().toISOString(),
    ...answer,
  };
}

// ---------- zoom ----------
/**
 * @param {string | null | undefined} src
 * @param {string} alt
 */
function zoom(src, alt) {
  if (!src) return;
  const img = $('zoom-img', HTMLImageElement);
  img.src = src;
  img.alt = alt;
  $('zoom-dialog', HTMLDialogElement).showModal();
}

// ---------- model card ----------
/**
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {string} [text]
 * @param {string} [cls]
 * @returns {HTMLElementTagNameMap[K]}
 */
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

/** @param {unknown} x */
const f3 = (x) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(3) : '–');
/** @param {unknown} x */
const r3 = (x) => (typeof x === 'number' ? +x.toFixed(3) : x);

/**
 * A table with a (screen-reader) caption and a header row. head: [label, className?, short label?]
 * (the short one is shown, the full one read); cells: text or a Node.
 * @param {string} caption
 * @param {Array<[label: string, cls?: string, short?: string]>} head
 * @param {Array<Array<string | Node>>} rows
 */
function table(caption, head, rows) {
  const t = el('table', undefined, 'sources');
  // explicit roles: on phones the CSS lays rows out as blocks, which would drop the table semantics
  t.setAttribute('role', 'table');
  t.append(el('caption', caption, 'visually-hidden'));
  const tr = el('tr');
  tr.setAttribute('role', 'row');
  for (const [label, cls, short] of head) {
    const th = el('th', short ? undefined : label, cls);
    if (short) {
      const seen = el('span', short);
      seen.setAttribute('aria-hidden', 'true');
      th.append(seen, el('span', label, 'visually-hidden'));
    }
    th.scope = 'col';
    th.setAttribute('role', 'columnheader');
    tr.append(th);
  }
  const thead = el('thead');
  const tbody = el('tbody');
  t.append(thead, tbody);
  thead.append(tr);
  for (const row of rows) {
    const r = el('tr');
    r.setAttribute('role', 'row');
    row.forEach((cell, i) => {
      const c = i === 0 ? el('th', undefined, head[i][1]) : el('td', undefined, head[i][1]);
      if (i === 0) c.scope = 'row';
      c.setAttribute('role', i === 0 ? 'rowheader' : 'cell');
      c.dataset.label = head[i][2] ?? head[i][0]; // shown before the value on phones
      if (cell instanceof Node) c.append(cell);
      else c.textContent = cell;
      r.append(c);
    });
    tbody.append(r);
  }
  // narrow screens scroll the table, not the page; focusable so the keyboard can scroll it too
  const wrap = el('div', undefined, 'table-scroll');
  wrap.tabIndex = 0;
  wrap.setAttribute('role', 'region');
  wrap.setAttribute('aria-label', caption);
  wrap.append(t);
  return wrap;
}

/**
 * The training hospital's validation metrics (card: metrics.validation).
 * @param {ModelResponse} c
 */
function validationSection(c) {
  const v = c.metrics?.validation;
  const sec = el('section');
  sec.setAttribute('aria-labelledby', 'perf-validation');
  const h = el('h3', 'Training hospital: validation patients');
  h.id = 'perf-validation';
  sec.append(h);
  if (!v) {
    sec.append(el('p', 'The model card has no validation metrics.', 'hint'));
    return sec;
  }
  const cm = obj(v.confusion);
  const [tp, fp, tn, fn] = [cm?.tp, cm?.fp, cm?.tn, cm?.fn];
  const labels = Array.isArray(c.labels) ? c.labels : ['NORMAL', 'PNEUMONIA'];
  const counts =
    typeof tp === 'number' && typeof fp === 'number' && typeof tn === 'number' && typeof fn === 'number'
      ? ` (${tn + fp} ${labels[0]}, ${tp + fn} ${labels[1]})`
      : '';
  sec.append(
    el('p', `n = ${v.n ?? '?'} images${counts} of patients held out from training; same hospital and period as the training images.`),
  );
  const dl = el('dl', undefined, 'metrics');
  /** @type {Array<[string, unknown]>} */
  const figures = [
    ['AUC', v.auc],
    ['Sensitivity', v.sensitivity],
    ['Specificity', v.specificity],
    ['Accuracy', v.accuracy],
    ['F1', v.f1],
  ];
  for (const [k, val] of figures) {
    if (typeof val !== 'number') continue;
    const pair = el('div');
    pair.append(el('dt', k), el('dd', val.toFixed(3)));
    dl.append(pair);
  }
  sec.append(dl);
  const split = v.split;
  if (typeof split === 'string') sec.append(el('p', `Split: ${splitRule(split, c)}.`, 'hint'));
  return sec;
}

/**
 * The split's rule without the counts the card pools over every development source ("(497 patients,
 * 248 NORMAL / 632 PNEUMONIA images)"): under one source's n they would read as its own.
 */
/**
 * @param {string} split
 * @param {ModelResponse} c
 */
function splitRule(split, c) {
  const sources = Array.isArray(c.metrics?.by_source) ? c.metrics.by_source.length : 0;
  return sources > 1 ? split.replace(/\s*\([^()]*\bimages?\)\s*$/, '') : split;
}

/**
 * Why a source's AUC interval is not informative, or null: the rule of src/eval/metrics.ts
 * `ciInformative` (fewer than MIN_PER_CLASS_FOR_CI images of a class, or an interval of width
 * zero); test/web/web-truth.test.ts checks the page against that module.
 */
const MIN_PER_CLASS_FOR_CI = 30;
/**
 * @param {SourceRow} r
 * @param {readonly number[]} ci r.auc_ci: [lower, upper]
 * @param {readonly string[]} labels
 */
function ciNotInformative(r, ci, labels) {
  const few = [
    ...(typeof r.n_normal === 'number' && r.n_normal < MIN_PER_CLASS_FOR_CI ? [`${r.n_normal} ${labels[0]}`] : []),
    ...(typeof r.n_pneumonia === 'number' && r.n_pneumonia < MIN_PER_CLASS_FOR_CI ? [`${r.n_pneumonia} ${labels[1]}`] : []),
  ];
  const why = [];
  if (few.length) why.push(`only ${few.join(' and ')} images`);
  if (!(ci[1] - ci[0] > 1e-12)) why.push('every bootstrap resample gave the same AUC');
  return why.length ? why.join('; ') : null;
}

/**
 * Card text for people: JSON paths it cites ("see metrics.by_source") become the sections of this page.
 * @param {unknown} text
 */
function readable(text) {
  return String(text)
    .replace(/\bby_source and independent\b/g, 'the tables under "Other hospitals and sources" above')
    .replace(/\bmetrics\.by_source\b/g, 'the table "Other hospitals and sources" above')
    .replace(/\bmetrics\.independent\b/g, 'the independent grading above')
    .replace(/\bmetrics\.validation\b/g, 'the validation results above');
}

/**
 * Performance outside the training hospital (card: metrics.by_source, metrics.independent), shown
 * beside validation with the same weight; without them, one line says what validation cannot.
 * @param {ModelResponse} c
 */
function outsideSection(c) {
  const sec = el('section');
  sec.setAttribute('aria-labelledby', 'perf-outside');
  const h = el('h3', 'Other hospitals and sources');
  h.id = 'perf-outside';
  sec.append(h);
  const bySource = list(c.metrics?.by_source).filter(isSourceRow);
  const ind = c.metrics?.independent;
  // list(), not Array.isArray: that narrows the card's readonly rows to any[]
  const indRows = list(ind?.rows).filter(isObject);
  if (bySource.length === 0 && indRows.length === 0) {
    sec.append(
      el(
        'p',
        "Validation comes from the training hospital and overstates performance elsewhere: this model card has no results on other hospitals' images.",
        'callout',
      ),
    );
    return sec;
  }
  if (bySource.length > 0) {
    sec.append(el('p', 'Held-out patients of each source, measured during development:'));
    const declines = bySource.some((r) => typeof r.declined_outside_intended_use === 'number');
    /** @param {SourceRow} r */
    const auc = (r) => {
      const cell = document.createDocumentFragment();
      cell.append(f3(r.auc));
      const ci = r.auc_ci;
      if (Array.isArray(ci) && ci.length === 2) {
        const why = ciNotInformative(r, ci, Array.isArray(c.labels) ? c.labels : ['NORMAL', 'PNEUMONIA']);
        cell.append(
          el('br'),
          el('span', why ? `(interval not informative: ${why})` : `(${f3(ci[0])}–${f3(ci[1])})`, why ? 'hint ci-none' : 'hint'),
        );
      }
      return cell;
    };
    /** @type {Array<[string, string?, string?]>} */
    const declinedColumn = declines ? [['Declined as outside the intended use', 'num', 'Declined']] : [];
    sec.append(
      table(
        'Performance by image source',
        [
          ['Source'],
          ['n', 'num'],
          ['AUC (95% interval)', 'num', 'AUC'],
          ['Sensitivity', 'num', 'Sens.'],
          ['Specificity', 'num', 'Spec.'],
          ['Expected calibration error', 'num', 'ECE'],
          ...declinedColumn,
        ],
        bySource.map((r) => {
          const name = document.createDocumentFragment();
          name.append(String(r.source));
          if (r.note) name.append(el('br'), el('span', String(r.note), 'hint note'));
          const row = [name, String(r.n ?? '–'), auc(r), f3(r.sensitivity), f3(r.specificity), f3(r.ece)];
          const d = r.declined_outside_intended_use;
          if (declines) row.push(typeof d === 'number' ? pct(d) : '–');
          return row;
        }),
      ),
    );
  }
  const prev = obj(c.metrics?.previous);
  const prevRows = list(prev?.by_source)
    .filter(isSourceRow)
    .filter((r) => !String(r.source).includes(' view'));
  if (prevRows.length > 0) {
    sec.append(el('p', `The previous model (version ${String(prev?.version ?? '?')}) on its own development split, for comparison:`));
    sec.append(
      table(
        'Previous model by image source',
        [
          ['Source'],
          ['n', 'num'],
          ['AUC', 'num'],
          ['Sensitivity', 'num', 'Sens.'],
          ['Specificity', 'num', 'Spec.'],
          ['Expected calibration error', 'num', 'ECE'],
        ],
        prevRows.map((r) => [String(r.source), String(r.n ?? '–'), f3(r.auc), f3(r.sensitivity), f3(r.specificity), f3(r.ece)]),
      ),
    );
  }
  const loso = obj(c.metrics?.leave_one_source_out);
  const losoRows = list(loso?.rows).filter(isObject);
  if (losoRows.length > 0) {
    sec.append(el('p', 'A hospital never seen (leave-one-source-out), and what each training lever did:'));
    /** @param {unknown} o */
    const vals = (o) =>
      o && typeof o === 'object'
        ? Object.values(o)
            .map((v) => f3(v))
            .join(' / ')
        : '–';
    sec.append(
      table(
        'Hospital never seen, by lever',
        [
          ['Lever'],
          ['AUC on the unseen hospital', 'num', 'Unseen AUC'],
          ["Other sites' sensitivity", 'num', 'Other sites'],
          ['Own validation AUC', 'num', 'Own AUC'],
          ['Grad-CAM share in the lungs', 'num', 'CAM in lungs'],
        ],
        losoRows.map((r) => [
          String(r.lever ?? '').replaceAll('_', ' '), // "L10_zoom_warmup_seed0" wraps on a narrow screen
          vals(r.unseen_nih_auc),
          vals(r.other_sites_sensitivity),
          f3(r.kermany_val_auc),
          f3(r.cam_in_lungs_pneumonia),
        ]),
      ),
    );
    const method = loso?.method;
    if (typeof method === 'string') sec.append(el('p', method, 'hint'));
  }
  if (indRows.length > 0) {
    const graded = typeof ind?.model_version === 'string' ? ind.model_version : '';
    sec.append(el('p', `Independent grading on hidden sets${graded ? ` (model version ${graded})` : ''}:`));
    if (graded && graded !== c.version) {
      sec.append(
        el(
          'p',
          `These results are for version ${graded}, not for the version served here (${c.version}); they may not describe it.`,
          'callout',
        ),
      );
    }
    sec.append(
      table(
        'Independent grading on hidden sets',
        [['Set'], ['n', 'num'], ['Result']],
        indRows.map((r) => [String(r.set ?? ''), String(r.n ?? ''), String(r.result ?? '')]),
      ),
    );
    if (ind?.note) sec.append(el('p', String(ind.note), 'hint'));
  }
  return sec;
}

/**
 * The page header says who the model is for, from the served card's `population` (GET /api/model).
 * @param {ModelResponse} c
 */
function showPopulation(c) {
  const p = $('population');
  p.textContent =
    typeof c.population === 'string' && c.population
      ? `Validated only for ${c.population}. Results on other patients are not validated.`
      : 'The model card does not say which population this model is validated for: treat every result as unvalidated.';
  p.hidden = false;
}

async function loadCard() {
  const box = $('model-card');
  try {
    const res = (await deviceCard()) ?? (await fetch('/api/model'));
    if (!res.ok) {
      box.replaceChildren(el('p', await errorMessage(res), 'hint'));
      return;
    }
    /** @type {unknown} */
    const card = await res.json();
    if (!obj(card)) throw new TypeError('The model card is not a JSON object.'); // as before: reading its fields would throw here
    const c = /** @type {ModelResponse} */ (card);
    state.card = c;
    showPopulation(c);
    // The site profile the server decides with (PNEUMOLENS_SITE), from GET /api/model `site`.
    const badge = $('site-badge');
    badge.textContent = c.site && typeof c.site.statement === 'string' ? c.site.statement : '';
    badge.hidden = !badge.textContent;
    badge.title = c.site
      ? `This site's calibration and threshold (${pct(c.site.threshold)}, ${c.site.policy}) replace the model card's below.`
      : '';
    badge.classList.toggle('not-validated', !!c.site && c.site.validated === false);
    /** @type {HTMLElement[]} */
    const parts = [el('p', `${c.name} ${c.version}${c.architecture ? `: ${c.architecture}` : ''}`, 'model-name')];
    const outside = outsideSection(c);
    // with tables the outside results take the full width; the one-line caveat sits beside validation
    const perf = el('div', undefined, outside.querySelector('table') ? 'perf stacked' : 'perf');
    perf.append(validationSection(c), outside);
    parts.push(perf);
    const pp = c.postprocessing;
    if (pp)
      parts.push(
        el(
          'p',
          `Decision threshold ${pct(Number(pp.threshold))} (${pp.threshold_policy ?? 'chosen on validation'}); calibration: temperature ${r3(pp.temperature)}, bias ${r3(pp.bias ?? 0)}.`,
        ),
      );
    if (c.intended_use) parts.push(el('h3', 'Intended use'), el('p', readable(c.intended_use)));
    if (Array.isArray(c.limitations) && c.limitations.length) {
      const ul = el('ul');
      for (const l of c.limitations) ul.append(el('li', readable(l)));
      parts.push(el('h3', 'Limitations'), ul);
    }
    box.replaceChildren(...parts);
  } catch {
    box.replaceChildren(el('p', 'Could not load the model card.', 'hint'));
  }
}

async function loadLimits() {
  try {
    // any missing step of the path below throws, and the default text stays
    const doc = /** @type {OpenApiDocument} */ (obj(await (await fetch('/api/openapi.json')).json()));
    // the limit as a number (bytes) from the document's schema of the upload, never from its prose
    const file = doc.paths['/api/predict'].post.requestBody.content['multipart/form-data'].schema.properties.file;
    if (Number.isFinite(file.maxLength)) $('max-size').textContent = `${+(file.maxLength / (1024 * 1024)).toFixed(1)} MB`;
  } catch {
    /* keep the default text */
  }
}

/** Keeps --banner-h equal to the sticky disclaimer's height (0 where it does not stick). */
function trackBanner() {
  const banner = $('banner');
  const set = () => {
    const sticky = getComputedStyle(banner).position === 'sticky';
    document.documentElement.style.setProperty('--banner-h', `${sticky ? banner.offsetHeight : 0}px`);
  };
  set();
  if ('ResizeObserver' in window) new ResizeObserver(set).observe(banner);
  window.addEventListener('resize', set);
}

// ---------- wiring ----------
function init() {
  trackBanner();
  const fileInput = $('file', HTMLInputElement);
  fileInput.addEventListener('change', () => chooseFile(fileInput.files?.[0]));
  const dz = $('dropzone');
  for (const ev of ['dragenter', 'dragover']) {
    dz.addEventListener(ev, (e) => {
      e.preventDefault();
      dz.classList.add('over');
    });
  }
  for (const ev of ['dragleave', 'drop']) dz.addEventListener(ev, () => dz.classList.remove('over'));
  dz.addEventListener('drop', (e) => {
    e.preventDefault();
    const f = e.dataTransfer?.files?.[0];
    if (f) void chooseFile(f); // analyse() shows its own errors
  });
  // Dropping outside the zone must not navigate away from the page.
  window.addEventListener('dragover', (e) => e.preventDefault());
  window.addEventListener('drop', (e) => e.preventDefault());

  $('url-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const url = $('url', HTMLInputElement).value.trim();
    if (!/^https?:\/\//i.test(url)) {
      showError('Enter an http:// or https:// URL.');
      $('url').focus();
      return;
    }
    void chooseUrl(url); // analyse() shows its own errors
  });
  $('again').addEventListener('click', analyse);
  $('force').addEventListener('click', analyseAnyway);
  $('colormap').addEventListener('change', () => state.result && analyse());
  const opacity = $('opacity', HTMLInputElement);
  const camOn = $('cam-on', HTMLInputElement);
  opacity.addEventListener('input', () => {
    if (state.originalImg && state.heatmap) drawOverlay();
    else $('opacity-value').textContent = `${Math.round(Number(opacity.value) * 100)} %`;
  });
  opacity.addEventListener('change', onOverlayControl);
  camOn.addEventListener('change', () => {
    opacity.disabled = !camOn.checked;
    onOverlayControl();
  });
  $('zoom-original').addEventListener('click', () => zoom(state.originalImg ? state.originalUrl : null, 'The original image, enlarged'));
  $('zoom-overlay').addEventListener('click', () => {
    const src = state.originalImg && state.heatmap ? $('overlay-canvas', HTMLCanvasElement).toDataURL('image/png') : state.result?.gradcam;
    zoom(src, 'The Grad-CAM overlay, enlarged');
  });
  const dialog = $('zoom-dialog', HTMLDialogElement);
  dialog.addEventListener('click', (e) => {
    if (e.target === dialog) dialog.close();
  });
  $('download-png').addEventListener('click', async () => {
    if (state.result) {
      const name = `pneumolens-gradcam-${Date.now()}.png`;
      const blob = await overlayBlob(state.result);
      if (blob) download(name, blob);
    }
  });
  $('download-json').addEventListener('click', () => {
    const result = state.result;
    if (result) {
      download(`pneumolens-report-${Date.now()}.json`, new Blob([JSON.stringify(report(result), null, 2)], { type: 'application/json' }));
    }
  });
  initDevice()
    .catch((e) => showError(`The on-device mode could not start: ${e instanceof Error ? e.message : String(e)}`))
    .finally(() => {
      void loadCard(); // it shows its own errors in the card's box
      if (hasServer()) void loadLimits(); // the static build has no API to ask; on an error it keeps the default text
    });
}

init();
