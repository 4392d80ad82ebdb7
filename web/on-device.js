// @ts-check
// The page's on-device mode (issue 21): where `npm run build:web` put device/device.js next to this
// page, the model is loaded into the browser and a chosen file is analysed here, by the engine's
// own code (src/web/device.ts): the image never leaves the computer. With a pneumolens server
// behind the page, a switch offers "on this device" (the default) or "on the server"; on a plain
// static host, this device is the only way. Image URLs are always fetched by the server.

/** @typedef {typeof import('../src/web/device.ts')} DeviceModule the module device/device.js (src/web/device.ts, bundled) */
/** @typedef {import('../src/web/device.ts').DeviceEngine} DeviceEngine */
/** @typedef {{ kind: 'file', file: File }} FileInput */
/** @typedef {FileInput | { kind: 'url', url: string }} PageInput the page's current input (web/app.js) */

const state = {
  /** Whether a pneumolens server answers /api/ (false on a static host). */
  server: false,
  /** @type {'device' | 'server'} */
  mode: 'server',
  /** @type {Promise<DeviceEngine> | null} the engine while and after it loads; null: no on-device build here */
  engine: null,
  /** @type {string | null} why the on-device engine is not available */
  failed: null,
};

/** @param {number} n */
const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;

/** The switch and the loading indicator, placed under the file chooser. */
function controls() {
  const box = document.createElement('fieldset');
  box.className = 'mode';
  box.id = 'mode';
  box.innerHTML =
    '<legend>Where to analyse</legend>' +
    '<label class="check"><input type="radio" name="mode" value="device" id="mode-device"> On this device <span class="hint">(the image stays on this computer)</span></label> ' +
    '<label class="check"><input type="radio" name="mode" value="server" id="mode-server"> On the server</label>' +
    '<p class="hint" id="device-status" role="status" aria-live="polite"></p>' +
    '<progress id="device-progress" max="1" value="0" hidden></progress>';
  document.getElementById('dropzone')?.after(box);
  return box;
}

/** @param {string} text */
function setDeviceStatus(text) {
  const el = document.getElementById('device-status');
  if (el) el.textContent = text;
}

/**
 * Detects the server and the on-device build and shows the switch; resolves then, while the model
 * goes on loading (a file chosen meanwhile waits for it).
 */
export async function initDevice() {
  // Where the on-device build is, if anywhere: the static build says so in its own page (a meta
  // element that npm run build:web adds), a pneumolens server in a header of its health answer. So
  // nothing is requested that is not there (no 404 in the console), and a static page asks no /api/.
  const meta = document.querySelector('meta[name="pneumolens-device"]');
  let where = meta?.getAttribute('content') ?? null;
  if (!meta) {
    const health = await fetch('/api/health', { cache: 'no-store' }).catch(() => null);
    state.server = !!health && (health.ok || health.status === 503);
    where = state.server ? (health?.headers.get('x-pneumolens-device') ?? null) : null;
  }
  /** @type {DeviceModule | null} */
  let mod = null;
  if (where) {
    try {
      /** @type {unknown} */
      const loaded = await import(new URL(where, document.baseURI).href);
      const m = /** @type {Partial<DeviceModule> | null} */ (loaded);
      // the page relies on DeviceEngine.load; a module without it is no on-device build
      mod = typeof m?.DeviceEngine?.load === 'function' ? /** @type {DeviceModule} */ (m) : null;
    } catch {
      mod = null;
    }
  }
  if (!mod) {
    if (!state.server) state.failed = 'This page has neither a server nor the on-device build (npm run build:web).';
    return;
  }
  const box = controls();
  const radios = /** @type {NodeListOf<HTMLInputElement>} */ (box.querySelectorAll('input[name="mode"]'));
  const serverRadio = /** @type {HTMLInputElement} */ (box.querySelector('#mode-server'));
  serverRadio.disabled = !state.server;
  if (!state.server) serverRadio.parentElement?.setAttribute('title', 'No pneumolens server behind this page');
  state.mode = 'device';
  /** @type {HTMLInputElement} */ (box.querySelector('#mode-device')).checked = true;
  for (const r of radios) r.addEventListener('change', () => r.checked && (state.mode = /** @type {'device' | 'server'} */ (r.value)));
  const progress = /** @type {HTMLProgressElement} */ (box.querySelector('#device-progress'));
  progress.hidden = false;
  setDeviceStatus('Loading the model into this browser…');
  document.body.dataset.device = 'loading';
  state.engine = mod.DeviceEngine.load({
    onProgress: (p) => {
      if (p.phase === 'model' && p.total) {
        progress.value = Number(p.loaded) / p.total;
        setDeviceStatus(
          p.cached ? 'Model found in this browser’s cache.' : `Downloading the model: ${mb(Number(p.loaded))} of ${mb(p.total)}…`,
        );
      } else if (p.phase === 'runtime') setDeviceStatus('Starting the model…');
    },
  });
  state.engine.then(
    (engine) => {
      progress.hidden = true;
      document.body.dataset.device = 'ready';
      setDeviceStatus(
        `Ready: the model runs in this browser (${engine.runtime}${engine.threads === 1 && !crossOriginIsolated ? '; one thread: the page is not cross-origin isolated' : ''}). ` +
          'Files you choose are analysed here and never uploaded.',
      );
    },
    (e) => {
      state.engine = null;
      state.failed = `The model could not be loaded in this browser: ${e instanceof Error ? e.message : String(e)}`;
      progress.hidden = true;
      document.body.dataset.device = 'failed';
      setDeviceStatus(state.failed + (state.server ? ' The server analyses instead.' : ''));
      if (state.server) {
        state.mode = 'server';
        serverRadio.checked = true;
      }
      /** @type {HTMLInputElement} */ (box.querySelector('#mode-device')).disabled = true;
    },
  );
}

/**
 * Whether this input is analysed here: a file, in device mode, with the engine loading or loaded.
 * @param {PageInput | null} input
 */
export function onDevice(input) {
  return !!input && input.kind === 'file' && state.mode === 'device' && state.engine !== null;
}

/** The server has the only way to read image URLs. */
export function hasServer() {
  return state.server;
}

/**
 * Analyses the file here; the answer is a Response shaped like the server's, for the page to read alike.
 * @param {Blob} file
 * @param {string} query
 */
export async function devicePredict(file, query) {
  const engine = await state.engine;
  if (!engine) throw new Error('The on-device engine is not available.'); // the page answers as for any failed request
  const a = await engine.predict(file, query);
  return new Response(JSON.stringify(a.body), { status: a.status, headers: { 'content-type': 'application/json' } });
}

/** The model card as GET /api/model would answer, where there is no server (null: ask the server). */
export async function deviceCard() {
  if (state.server) return null;
  if (!state.engine) {
    const message = state.failed ?? 'No model: this page has no server and no on-device build.';
    return new Response(JSON.stringify({ error: { code: 'not_found', message } }), { status: 404 });
  }
  const engine = await state.engine.catch(() => null);
  if (!engine) return new Response(JSON.stringify({ error: { code: 'not_found', message: state.failed } }), { status: 503 });
  return new Response(JSON.stringify(engine.publicCard()), { status: 200, headers: { 'content-type': 'application/json' } });
}
