/**
 * Follows Orthanc's change feed and analyses each new radiograph (see watcherScope) once with the Engine,
 * storing a Secondary Capture and a Structured Report into the same study.
 *
 * Restart safety: the last handled change's sequence number is written to a state file after each
 * instance (atomically), so a restart resumes where it stopped. If it stopped between storing a
 * result and writing the cursor, the instance is seen again, but its SR (whose UID derives from the
 * source instance and the model version) is already in Orthanc, so it is not analysed again; and
 * storing an instance with the same UID twice keeps one copy in Orthanc anyway.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { isPneumoError } from '../errors.ts';
import type { DeclineBasis } from '../gate/gate.ts';
import { collect, publicError, type Engine } from '../pipeline.ts';
import { dicomScope } from '../image/dicom-scope.ts';
import { copyAttributes, invalidSourceUids } from './attributes.ts';
import {
  MANUFACTURER,
  resultUids,
  routeDicomWriterLog,
  secondaryCapture,
  structuredReport,
  type Outcome,
  type SourceTags,
} from './dicom-out.ts';
import { OrthancError, type Change, type Orthanc } from './orthanc.ts';

/**
 * Whether the watcher analyses an instance, by the scope rule an upload is decoded under
 * (src/image/dicom-scope.ts): only a radiograph ('analyse'). What may not be one (Modality OT, SC,
 * XC, DOC: secondary captures, scanned paperwork, screenshots, of which a PACS holds many) is
 * analysed on upload with a warning, but skipped here, so that no study fills with results
 * nobody asked for; and a non-radiograph is skipped, where an upload is refused.
 */
export function watcherScope(tags: SourceTags): { analyse: true } | { analyse: false; reason: string } {
  const scope = dicomScope(tags);
  if (scope.verdict === 'analyse') return { analyse: true };
  if (scope.verdict === 'refuse') return { analyse: false, reason: scope.reason };
  return { analyse: false, reason: `${scope.reason} The watcher analyses radiographs only.` };
}

export interface Counts {
  /** Analysed, SC + SR stored. */
  analysed: number;
  /** Refused by the input gate (not a chest X-ray, outside intended use); an SR says why. */
  refused: number;
  /** Could not be analysed (undecodable, too large, ...); an SR says why. */
  failed: number;
  /** Not a radiograph (CT, MR, ...): skipped. */
  skipped_not_radiograph: number;
  /** Instances pneumolens wrote itself: skipped. */
  skipped_own: number;
  /** A result for this instance and model version was already in the study. */
  already_done: number;
  /** Deleted from Orthanc before it was read. */
  gone: number;
}

export interface Failure {
  seq: number;
  /** Orthanc's instance id (a hash, no patient data). */
  instance: string;
  code: string;
  message: string;
  at: string;
}

export interface State {
  version: 1;
  orthanc: string;
  /** The last change handled: the next poll asks for changes after it. */
  since: number;
  counts: Counts;
  /** The last 100 instances that were refused or failed, with the reason. */
  failures: Failure[];
  updated: string;
}

const emptyCounts = (): Counts => ({
  analysed: 0,
  refused: 0,
  failed: 0,
  skipped_not_radiograph: 0,
  skipped_own: 0,
  already_done: 0,
  gone: 0,
});
const MAX_FAILURES = 100;

export async function loadState(path: string): Promise<State | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  const s = JSON.parse(text) as State;
  if (s?.version !== 1 || typeof s.since !== 'number' || !Number.isInteger(s.since) || s.since < 0 || typeof s.orthanc !== 'string') {
    throw new Error(`${path} is not a pneumolens pacs state file`);
  }
  return { ...s, counts: { ...emptyCounts(), ...s.counts }, failures: Array.isArray(s.failures) ? s.failures : [] };
}

/** Written to a temporary file and renamed over the old one: a crash leaves the old or the new state, never half. */
export async function saveState(path: string, state: State): Promise<void> {
  state.updated = new Date().toISOString();
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(state, null, 2) + '\n');
  await rename(tmp, path);
}

export interface WatchOptions {
  orthanc: Orthanc;
  engine: Engine;
  statePath: string;
  /** Changes asked for per request (Orthanc's limit). */
  batch: number;
  /** Wait between polls once the feed is drained. */
  intervalMs: number;
  /** Return once the feed is drained instead of polling on. */
  once: boolean;
  /** Where a new state file starts: every change Orthanc has, or only those after now. */
  start: 'beginning' | 'now';
  log: (line: string) => void;
  /** Also log Orthanc instance ids and SOP Instance UIDs. */
  verbose?: boolean;
  signal?: AbortSignal;
}

export interface WatchSummary {
  counts: Counts;
  since: number;
  /** Orthanc could not be reached or refused a request (in --once mode this ends the run). */
  orthancErrors: number;
}

type Handled = keyof Counts;

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

const str = (v: unknown): string => (typeof v === 'string' ? v.trim() : '');

/**
 * An error to log and keep in the state file. Our own errors (PneumoError, OrthancError) say what
 * failed in our words; any other error's message may quote the data set (dcmjs's do), so only its
 * kind and where it was thrown are kept.
 */
export function safeError(e: unknown): { code: string; message: string } {
  if (isPneumoError(e)) return { code: e.code, message: e.message };
  if (e instanceof OrthancError) return { code: 'orthanc_error', message: e.message };
  const name = e instanceof Error ? e.name.replace(/[^A-Za-z]/g, '').slice(0, 40) : typeof e;
  const frames = e instanceof Error ? (e.stack ?? '').split('\n').filter((l) => /^\s+at /.test(l)) : [];
  const lib = /node_modules\/((?:@[\w.-]+\/)?[\w.-]+)\//.exec(frames[0] ?? '')?.[1];
  const ours = frames.map((l) => (l.includes('node_modules') ? undefined : /\/(src\/[\w/.-]+:\d+):\d+\)?$/.exec(l)?.[1])).find(Boolean);
  const where = `${lib ? ` in ${lib}` : ''}${ours ? `${lib ? ', called from' : ' at'} ${ours}` : ''}`;
  return {
    code: 'internal_error',
    message: `Internal error (${name}${where}); its message is not logged, as it may quote patient data.`,
  };
}

/** For the log: which source attributes were repaired or left empty in the result (names only). */
function repaired(tags: SourceTags): string {
  const { changed } = copyAttributes(tags);
  return changed.length ? `; source attributes repaired or left empty: ${changed.join(', ')}` : '';
}

/** An Orthanc error worth retrying (unreachable, timeout, 5xx, auth) rather than recording against the instance. */
const transient = (e: unknown): boolean =>
  e instanceof OrthancError && (e.status === undefined || e.status >= 500 || e.status === 401 || e.status === 403);

export class Watcher {
  private state!: State;
  private orthancErrors = 0;

  constructor(private readonly o: WatchOptions) {}

  async run(): Promise<WatchSummary> {
    const { orthanc, log, signal } = this.o;
    routeDicomWriterLog((line) => log(`pacs: ${line}`));
    const loaded = await loadState(this.o.statePath);
    if (loaded && loaded.orthanc !== orthanc.origin) {
      throw new Error(`${this.o.statePath} follows ${loaded.orthanc}, not ${orthanc.origin}; use another --state file`);
    }
    if (loaded) {
      this.state = loaded;
      log(`pacs: resuming after change ${loaded.since} (${this.o.statePath})`);
    } else {
      const since = this.o.start === 'now' ? await orthanc.lastChange() : 0;
      this.state = { version: 1, orthanc: orthanc.origin, since, counts: emptyCounts(), failures: [], updated: '' };
      await saveState(this.o.statePath, this.state);
      log(`pacs: new state file ${this.o.statePath}, starting after change ${since}`);
    }
    while (!signal?.aborted) {
      let drained: boolean;
      try {
        drained = await this.poll();
      } catch (e) {
        if (!transient(e)) throw e;
        this.orthancErrors++;
        log(`pacs: Orthanc error, retrying in ${Math.round(this.o.intervalMs / 1000)} s: ${(e as Error).message}`);
        if (this.o.once) break;
        await sleep(this.o.intervalMs, signal);
        continue;
      }
      if (drained) {
        if (this.o.once) break;
        await sleep(this.o.intervalMs, signal);
      }
    }
    await saveState(this.o.statePath, this.state);
    return { counts: { ...this.state.counts }, since: this.state.since, orthancErrors: this.orthancErrors };
  }

  /** One page of changes; true when there was nothing to handle. */
  private async poll(): Promise<boolean> {
    const { orthanc, signal } = this.o;
    let page = await orthanc.changes(this.state.since, this.o.batch);
    if (page.Changes.length === 0 && page.Last < this.state.since) {
      // Orthanc's database is younger than our cursor (reset or replaced): start over. Results already
      // in a study are recognised by their UIDs, so nothing gets a second result.
      this.o.log(`pacs: Orthanc's last change (${page.Last}) is before the cursor (${this.state.since}); starting from 0`);
      this.state.since = 0;
      page = await orthanc.changes(0, this.o.batch);
    }
    for (const change of page.Changes) {
      if (signal?.aborted) return true;
      if (change.ChangeType === 'NewInstance' && change.ResourceType === 'Instance') {
        let what: Handled;
        try {
          what = await this.handle(change);
        } catch (e) {
          // Orthanc unreachable or failing: retried from this change. Anything else is this
          // instance's problem: recorded, and the watcher goes on.
          if (transient(e)) throw e;
          what = await this.record(change, {}, safeError(e), false);
        }
        this.state.counts[what]++;
      }
      this.state.since = change.Seq;
      await saveState(this.o.statePath, this.state);
    }
    if (page.Done && page.Last > this.state.since) {
      this.state.since = page.Last;
      await saveState(this.o.statePath, this.state);
    }
    // Drained only when a poll brings nothing: the results just stored are changes too, and are
    // seen (and skipped as our own) before --once returns.
    return page.Changes.length === 0;
  }

  private async handle(change: Change): Promise<Handled> {
    const { orthanc, engine, log, verbose } = this.o;
    const id = change.ID;
    const ref = verbose ? ` [instance ${id}]` : '';
    let tags: SourceTags;
    try {
      tags = await orthanc.tags(id);
    } catch (e) {
      if (e instanceof OrthancError && e.status === 404) return 'gone';
      throw e;
    }
    if (str(tags.Manufacturer) === MANUFACTURER) return 'skipped_own';
    const scope = watcherScope(tags);
    if (!scope.analyse) {
      log(`pacs: change ${change.Seq}: skipped: ${scope.reason}${ref}`);
      return 'skipped_not_radiograph';
    }
    const badUids = invalidSourceUids(tags);
    if (badUids.length > 0) {
      // A result must reference its source and join its study: without valid UIDs it cannot.
      return this.record(
        change,
        tags,
        {
          code: 'unusable_image',
          message: `The instance's ${badUids.join(', ')} ${badUids.length > 1 ? 'are' : 'is'} missing or not a valid DICOM UID, so no result can be stored in its study.`,
        },
        false,
      );
    }
    if (verbose) log(`pacs: change ${change.Seq}: SOP Instance UID ${str(tags.SOPInstanceUID)}${ref}`);
    const model = { name: engine.card.name, version: engine.card.version };
    const uids = resultUids(tags, model);
    if (await orthanc.hasInstance(uids.sr)) {
      log(`pacs: change ${change.Seq}: already has a result of ${model.name} ${model.version}${ref}`);
      return 'already_done';
    }
    const t0 = performance.now();
    let bytes: Uint8Array;
    try {
      bytes = await orthanc.file(id);
    } catch (e) {
      if (e instanceof OrthancError && e.status === 404) return 'gone';
      if (isPneumoError(e)) return this.record(change, tags, e, true);
      throw e;
    }
    const [analysed] = await collect(engine.analyseStream([bytes], { cam: true, heatmap: false, overlayRgb: true }));
    if (analysed.status === 'rejected') {
      const { code, message } = analysed.error;
      const basis = analysed.result.gate.basis;
      return this.record(change, tags, { code, message, ...(basis ? { basis } : {}) }, true);
    }
    if (analysed.status === 'failed') return this.record(change, tags, publicError(analysed.error), true);
    const result = analysed.result;
    const outcome: Outcome = { kind: 'analysed', result };
    const files: Buffer[] = [];
    // The overlay's pixels as the renderer blended them (the pixels its PNG holds), not decoded back from the PNG.
    const overlay = result.cam?.overlayRgb;
    if (overlay) files.push(secondaryCapture(tags, outcome, overlay.data, overlay.width, overlay.height));
    files.push(structuredReport(tags, outcome, { withSc: files.length > 0 }));
    await this.storeAll(files, change);
    const ms = Math.round(performance.now() - t0);
    const unc = result.uncertain ? ', uncertain' : '';
    log(
      `pacs: change ${change.Seq}: ${result.label} p=${result.probability.toFixed(3)}${unc}; stored ${files.length > 1 ? 'SC + SR' : 'SR'} in ${ms} ms${ref}${repaired(tags)}`,
    );
    return 'analysed';
  }

  /** A refused or failed instance: logged, kept in the state file, and (when `sr`) reported in the study by a small SR. */
  private async record(
    change: Change,
    tags: SourceTags,
    e: { code: string; message: string; basis?: DeclineBasis },
    sr: boolean,
  ): Promise<Handled> {
    const { engine, log, verbose } = this.o;
    const refused = e.code === 'not_a_chest_xray' || e.code === 'outside_intended_use';
    log(
      `pacs: change ${change.Seq}: ${refused ? 'refused' : 'failed'}: ${e.code}: ${e.message}${verbose ? ` [instance ${change.ID}]` : ''}`,
    );
    this.state.failures.push({ seq: change.Seq, instance: change.ID, code: e.code, message: e.message, at: new Date().toISOString() });
    this.state.failures.splice(0, Math.max(0, this.state.failures.length - MAX_FAILURES));
    if (sr) {
      const model = { name: engine.card.name, version: engine.card.version };
      let file: Buffer;
      try {
        const outcome: Outcome = { kind: 'refused', code: e.code, message: e.message, model, ...(e.basis ? { basis: e.basis } : {}) };
        file = structuredReport(tags, outcome, { withSc: false });
      } catch (err) {
        // Never expected (the attributes are checked first); recorded without its message, which may quote values.
        const safe = safeError(err);
        log(`pacs: change ${change.Seq}: the SR could not be written: ${safe.message}`);
        return 'failed';
      }
      await this.storeAll([file], change);
    }
    return refused ? 'refused' : 'failed';
  }

  private async storeAll(files: Buffer[], change: Change): Promise<void> {
    for (const f of files) {
      try {
        await this.o.orthanc.store(f);
      } catch (e) {
        // Orthanc refusing our own file (4xx) would repeat forever: record it and go on.
        if (transient(e)) throw e;
        this.o.log(`pacs: change ${change.Seq}: Orthanc refused the result: ${(e as Error).message}`);
        this.state.failures.push({
          seq: change.Seq,
          instance: change.ID,
          code: 'store_refused',
          message: (e as Error).message,
          at: new Date().toISOString(),
        });
        return;
      }
    }
  }
}
