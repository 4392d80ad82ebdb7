// @ts-check
// pneumolens web page: vanilla JS, no build step, type-checked by `npm run typecheck` (tsconfig.web.json).
// Talks to /api/predict and /api/model.
/** An element of the page by id (any: inputs, images, canvases and dialogs each have their own type). */
const $ = (id) => /** @type {any} */ (document.getElementById(id));

const state = {
  /** The current input: { kind: 'file', file } or { kind: 'url', url }. */
  input: null,
  /** Object URL of the chosen file, when the browser can display it. */
  originalUrl: null,
  /** The original as a loaded <img> for canvas blending (null: not displayable here). */
  originalImg: null,
  /** The last API answer. */
  result: null,
  /** The server's colour-mapped heatmap (answer field `heatmap`) as a loaded <img>, blended here over the original. */
  heatmap: null,
  card: null,
  busy: false,
  again: false,
  force: false, // "Analyse anyway" after the input gate refused the image; reset for a new input
  fresh: false, // the next result is for a new input: move focus to it (not for a re-request)
};

/** Gate refusals (API 422 codes) the page explains in its own words, with "Analyse anyway". */
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
    text:
      'This looks like a chest X-ray, but not one the model is validated for: it was trained and checked only on frontal ' +
      "chest X-rays of children aged 1 to 5 from one hospital (an adult's film, for example, is outside that). " +
      'It was not run, because its answer here would have no measured accuracy.',
    score: 'Intended-use score',
    force: '"Analyse anyway" runs the model with a warning on the result; nobody has measured how accurate it is on such images.',
    status: "Declined: outside the model's intended use (children aged 1 to 5, one hospital).",
  },
};

// ---------- status and errors ----------
function setStatus(text) {
  $('status').textContent = text;
}

function showError(message) {
  const el = $('error');
  el.textContent = message;
  el.hidden = !message;
}

async function errorMessage(res) {
  try {
    const body = await res.json();
    if (body && body.error && body.error.message) return `${body.error.message} (${res.status} ${body.error.code})`;
  } catch {
    /* not JSON */
  }
  return `The server answered ${res.status} ${res.statusText}.`;
}

// ---------- input ----------
function resetPreview() {
  state.force = false;
  if (state.originalUrl) URL.revokeObjectURL(state.originalUrl);
  state.originalUrl = null;
  state.originalImg = null;
}

function loadImage(src) {
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => resolve(null);
    img.src = src;
  });
}

async function chooseFile(file) {
  if (!file) return;
  resetPreview();
  state.fresh = true;
  state.input = { kind: 'file', file };
  state.originalUrl = URL.createObjectURL(file);
  state.originalImg = await loadImage(state.originalUrl);
  const preview = $('preview');
  preview.hidden = false;
  $('preview-img').hidden = !state.originalImg;
  if (state.originalImg) $('preview-img').src = state.originalUrl;
  $('preview-note').textContent = state.originalImg
    ? `${file.size.toLocaleString()} bytes`
    : `${file.size.toLocaleString()} bytes; this browser cannot preview the format (e.g. DICOM or TIFF), the server will read it.`;
  await analyse();
}

async function chooseUrl(url) {
  resetPreview();
  state.fresh = true;
  state.input = { kind: 'url', url };
  $('preview').hidden = false;
  $('preview-img').hidden = true;
  $('preview-note').textContent = 'The server fetches the image from the URL.';
  await analyse();
}

function queryString(alpha) {
  const q = new URLSearchParams({ cam: 'true', colormap: $('colormap').value, alpha: String(alpha) });
  const t = $('threshold').value.trim();
  if (t !== '') q.set('threshold', t);
  if (state.force) q.set('force', 'true');
  return q.toString();
}

/** Sends the current input to the API; alpha only matters for the server-rendered overlay. */
async function request(alpha) {
  const init = { method: 'POST' };
  if (state.input.kind === 'file') {
    const form = new FormData();
    form.append('file', state.input.file);
    init.body = form;
  } else {
    init.headers = { 'content-type': 'application/json' };
    init.body = JSON.stringify({ url: state.input.url });
  }
  return fetch(`/api/predict?${queryString(alpha)}`, init);
}

async function analyse() {
  if (!state.input) return;
  if (state.busy) {
    state.again = true; // e.g. the opacity changed while a request was running: ask once more after it
    return;
  }
  const t = $('threshold').value.trim();
  if (t !== '' && !(Number(t) >= 0 && Number(t) <= 1)) {
    showError('The decision threshold must be a number between 0 and 1.');
    return;
  }
  state.busy = true;
  document.body.classList.add('busy');
  $('result').setAttribute('aria-busy', 'true');
  showError('');
  setStatus('Analysing…');
  try {
    const res = await request(currentAlpha());
    $('rejected').hidden = true;
    if (res.status === 422) {
      const body = await res
        .clone()
        .json()
        .catch(() => null);
      const refusal = REFUSALS[body?.error?.code];
      if (refusal) {
        showRejected(body.error, refusal);
        setStatus(refusal.status);
        return;
      }
    }
    if (!res.ok) {
      showError(await errorMessage(res));
      setStatus('');
      return;
    }
    state.result = await res.json();
    // The server renders the heatmap (one renderer, src/explain/overlay.ts); the page only blends it.
    state.heatmap = state.originalImg && state.result.heatmap ? await loadImage(state.result.heatmap) : null;
    showResult();
    const r = state.result;
    setStatus(
      `Done: ${r.label}, probability of pneumonia ${pct(r.probability)} (threshold ${pct(r.threshold)}).` +
        (r.uncertain ? ' Uncertain: refer to a clinician.' : '') +
        (r.warnings?.length ? ` ${r.warnings.length} warning${r.warnings.length > 1 ? 's' : ''}.` : ''),
    );
  } catch {
    showError('Could not reach the server. Is it running?');
    setStatus('');
  } finally {
    state.busy = false;
    state.fresh = false;
    document.body.classList.remove('busy');
    $('result').removeAttribute('aria-busy');
    if (state.again) {
      state.again = false;
      analyse();
    }
  }
}

// ---------- refusal by the input gate ----------
function showRejected(error, refusal) {
  $('result').hidden = true;
  $('rejected-title').textContent = refusal.title;
  $('rejected-text').textContent = refusal.text;
  const reasons = Array.isArray(error.reasons) && error.reasons.length ? error.reasons : [error.message];
  $('rejected-reasons').replaceChildren(
    ...reasons.map((r) => {
      const li = document.createElement('li');
      li.textContent = r;
      return li;
    }),
  );
  $('rejected-score').textContent =
    typeof error.score === 'number'
      ? `${refusal.score} ${error.score.toFixed(2)} (refused above ${error.threshold}).`
      : 'This model has no gate score of its own; the refusal comes from the image checks.';
  $('force-hint').textContent = refusal.force;
  $('rejected').hidden = false;
  // The whole explanation in view (below the sticky banner), focus on the one action it offers.
  $('rejected').scrollIntoView({ block: 'start' });
  const button = $('force');
  button.focus({ preventScroll: button.getBoundingClientRect().bottom <= window.innerHeight });
}

function analyseAnyway() {
  state.force = true;
  state.fresh = true;
  $('rejected').hidden = true;
  analyse();
}

// ---------- result ----------
const pct = (p) => `${(p * 100).toFixed(1)} %`;

function currentAlpha() {
  return $('cam-on').checked ? Number($('opacity').value) : 0;
}

function showResult() {
  const r = state.result;
  $('result').hidden = false;
  const label = $('label');
  label.textContent = r.label;
  label.dataset.label = r.label;
  $('probability').textContent = pct(r.probability);
  $('threshold-value').textContent = r.threshold.toFixed(2);
  $('bar-fill').style.width = `${r.probability * 100}%`;
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
    `${r.image.format.toUpperCase()} ${r.image.width}×${r.image.height}; model ${r.model.name} ${r.model.version}; ${Math.round(t.server_total ?? t.total ?? 0)} ms on the server.`;

  const original = $('original');
  original.hidden = !state.originalImg;
  $('original-missing').hidden = !!state.originalImg;
  if (state.originalImg) original.src = state.originalUrl;

  drawOverlay();
  if (state.fresh) {
    // A new result: keyboard and screen-reader users land on it (the status line announces it too).
    const reduced = window.matchMedia('(prefers-reduced-motion: reduce)').matches;
    $('result').scrollIntoView({ behavior: reduced ? 'auto' : 'smooth', block: 'start' });
    $('result-title').focus({ preventScroll: true });
  }
}

function displaySize(w, h, max = 1024) {
  const s = Math.min(1, max / Math.max(w, h));
  return { w: Math.max(1, Math.round(w * s)), h: Math.max(1, Math.round(h * s)) };
}

/** Client-side blend when the browser shows the original; else the server's overlay PNG. */
function drawOverlay() {
  const r = state.result;
  if (!r) return;
  const canvas = $('overlay-canvas');
  const img = $('overlay-img');
  $('opacity-value').textContent = `${Math.round(Number($('opacity').value) * 100)} %`;
  if (state.originalImg && state.heatmap) {
    canvas.hidden = false;
    img.hidden = true;
    const { w, h } = displaySize(state.originalImg.naturalWidth, state.originalImg.naturalHeight);
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext('2d');
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
    rerequestTimer = setTimeout(analyse, 350);
  }
}

function download(name, blob) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

async function overlayBlob() {
  if (state.originalImg && state.heatmap) {
    return new Promise((resolve) => $('overlay-canvas').toBlob(resolve, 'image/png'));
  }
  return dataUrlBlob(state.result.gradcam);
}

function dataUrlBlob(dataUrl) {
  const [head, b64] = dataUrl.split(',');
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Blob([bytes], { type: head.slice(5).split(';')[0] });
}

/** The JSON report: the API answer as served (its shape is the OpenAPI document's Prediction), without the images. */
function report() {
  const { gradcam: _overlay, heatmap: _heatmap, ...answer } = state.result;
  return {
    tool: 'pneumolens',
    disclaimer: 'Research and education tool, not a medical device.',
    generated_at: new Date().toISOString(),
    ...answer,
  };
}

// ---------- zoom ----------
function zoom(src, alt) {
  if (!src) return;
  const img = $('zoom-img');
  img.src = src;
  img.alt = alt;
  $('zoom-dialog').showModal();
}

// ---------- model card ----------
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

const f3 = (x) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(3) : '–');
const r3 = (x) => (typeof x === 'number' ? +x.toFixed(3) : x);

/**
 * A table with a (screen-reader) caption and a header row. head: [label, className?, short label?]
 * (the short one is shown, the full one read); cells: text or a Node.
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
  t.append(el('thead'), el('tbody'));
  t.tHead.append(tr);
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
    t.tBodies[0].append(r);
  }
  // narrow screens scroll the table, not the page; focusable so the keyboard can scroll it too
  const wrap = el('div', undefined, 'table-scroll');
  wrap.tabIndex = 0;
  wrap.setAttribute('role', 'region');
  wrap.setAttribute('aria-label', caption);
  wrap.append(t);
  return wrap;
}

/** The training hospital's validation metrics (card: metrics.validation). */
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
  sec.append(el('p', `n = ${v.n ?? '?'} images of patients held out from training; same hospital and period as the training images.`));
  const dl = el('dl', undefined, 'metrics');
  for (const [k, val] of [
    ['AUC', v.auc],
    ['Sensitivity', v.sensitivity],
    ['Specificity', v.specificity],
    ['Accuracy', v.accuracy],
    ['F1', v.f1],
  ]) {
    if (typeof val !== 'number') continue;
    const pair = el('div');
    pair.append(el('dt', k), el('dd', val.toFixed(3)));
    dl.append(pair);
  }
  sec.append(dl);
  if (v.split) sec.append(el('p', `Split: ${v.split}.`, 'hint'));
  return sec;
}

/**
 * Performance outside the training hospital (card: metrics.by_source, metrics.independent), shown
 * beside validation with the same weight; without them, one line says what validation cannot.
 */
function outsideSection(c) {
  const sec = el('section');
  sec.setAttribute('aria-labelledby', 'perf-outside');
  const h = el('h3', 'Other hospitals and sources');
  h.id = 'perf-outside';
  sec.append(h);
  const bySource = Array.isArray(c.metrics?.by_source) ? c.metrics.by_source.filter((r) => r && typeof r.source === 'string') : [];
  const ind = c.metrics?.independent;
  const indRows = Array.isArray(ind?.rows) ? ind.rows.filter((r) => r && typeof r === 'object') : [];
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
    const auc = (r) => {
      const cell = document.createDocumentFragment();
      cell.append(f3(r.auc));
      if (Array.isArray(r.auc_ci) && r.auc_ci.length === 2) {
        cell.append(el('br'), el('span', `(${f3(r.auc_ci[0])}–${f3(r.auc_ci[1])})`, 'hint'));
      }
      return cell;
    };
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
          ...(declines ? [['Declined as outside the intended use', 'num', 'Declined']] : []),
        ],
        bySource.map((r) => {
          const name = document.createDocumentFragment();
          name.append(String(r.source));
          if (r.note) name.append(el('br'), el('span', String(r.note), 'hint note'));
          const row = [name, String(r.n ?? '–'), auc(r), f3(r.sensitivity), f3(r.specificity), f3(r.ece)];
          const d = r.declined_outside_intended_use;
          if (declines) row.push(typeof d === 'number' ? `${(100 * d).toFixed(1)}%` : '–');
          return row;
        }),
      ),
    );
  }
  if (indRows.length > 0) {
    const graded = typeof ind.model_version === 'string' ? ind.model_version : '';
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
    if (ind.note) sec.append(el('p', String(ind.note), 'hint'));
  }
  return sec;
}

async function loadCard() {
  const box = $('model-card');
  try {
    const res = await fetch('/api/model');
    if (!res.ok) {
      box.replaceChildren(el('p', await errorMessage(res), 'hint'));
      return;
    }
    const c = await res.json();
    state.card = c;
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
          `Decision threshold ${r3(pp.threshold)} (${pp.threshold_policy ?? 'chosen on validation'}); calibration: temperature ${r3(pp.temperature)}, bias ${r3(pp.bias ?? 0)}.`,
        ),
      );
    if (c.intended_use) parts.push(el('h3', 'Intended use'), el('p', c.intended_use));
    if (Array.isArray(c.limitations) && c.limitations.length) {
      const ul = el('ul');
      for (const l of c.limitations) ul.append(el('li', l));
      parts.push(el('h3', 'Limitations'), ul);
    }
    box.replaceChildren(...parts);
  } catch {
    box.replaceChildren(el('p', 'Could not load the model card.', 'hint'));
  }
}

async function loadLimits() {
  try {
    const doc = await (await fetch('/api/openapi.json')).json();
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
  $('file').addEventListener('change', (e) => chooseFile(e.target.files[0]));
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
    if (f) chooseFile(f);
  });
  // Dropping outside the zone must not navigate away from the page.
  window.addEventListener('dragover', (e) => e.preventDefault());
  window.addEventListener('drop', (e) => e.preventDefault());

  $('url-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const url = $('url').value.trim();
    if (!/^https?:\/\//i.test(url)) {
      showError('Enter an http:// or https:// URL.');
      $('url').focus();
      return;
    }
    chooseUrl(url);
  });
  $('again').addEventListener('click', analyse);
  $('force').addEventListener('click', analyseAnyway);
  $('colormap').addEventListener('change', () => state.result && analyse());
  $('opacity').addEventListener('input', () => {
    if (state.originalImg && state.heatmap) drawOverlay();
    else $('opacity-value').textContent = `${Math.round(Number($('opacity').value) * 100)} %`;
  });
  $('opacity').addEventListener('change', onOverlayControl);
  $('cam-on').addEventListener('change', () => {
    $('opacity').disabled = !$('cam-on').checked;
    onOverlayControl();
  });
  $('zoom-original').addEventListener('click', () => zoom(state.originalImg ? state.originalUrl : null, 'The original image, enlarged'));
  $('zoom-overlay').addEventListener('click', () => {
    const src = state.originalImg && state.heatmap ? $('overlay-canvas').toDataURL('image/png') : state.result?.gradcam;
    zoom(src, 'The Grad-CAM overlay, enlarged');
  });
  $('zoom-dialog').addEventListener('click', (e) => {
    if (e.target === $('zoom-dialog')) $('zoom-dialog').close();
  });
  $('download-png').addEventListener('click', async () => {
    if (state.result) download(`pneumolens-gradcam-${Date.now()}.png`, await overlayBlob());
  });
  $('download-json').addEventListener('click', () => {
    if (state.result) {
      download(`pneumolens-report-${Date.now()}.json`, new Blob([JSON.stringify(report(), null, 2)], { type: 'application/json' }));
    }
  });
  loadCard();
  loadLimits();
}

init();
