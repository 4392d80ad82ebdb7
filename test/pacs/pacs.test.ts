/**
 * The PACS round trip (issue 9 part 3): `pneumolens pacs` against a real Orthanc started here on a
 * free loopback port in a temporary folder. Without Orthanc (`apt-get install orthanc`) the Orthanc
 * tests are skipped with a notice; the DICOM writer tests always run.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/pipeline.ts';
import { run } from '../../src/cli/main.ts';
import { caption, derivedUid, readDicom, resultUids, secondaryCapture, SOP_CLASS, structuredReport } from '../../src/pacs/dicom-out.ts';
import { Orthanc } from '../../src/pacs/orthanc.ts';
import { Watcher } from '../../src/pacs/watcher.ts';
import { decodeImage } from '../../src/image/decode.ts';
import { MALFORMED_PATIENT, radiographDicom, type DicomElement } from '../fixtures/make-dicom.ts';
import { writeTinyModel } from '../fixtures/make-onnx.ts';
import { texturedGrayPng } from '../fixtures/non-cxr.ts';
import { GOLDEN, REPO, testTmp } from '../fixtures/paths.ts';

const PATIENT = 'DOE^JANE';

interface DcmjsWrite {
  data: {
    DicomDict: new (meta: Record<string, unknown>) => { dict: Record<string, unknown>; write(): ArrayBuffer };
    DicomMetaDictionary: { denaturalizeDataset(ds: Record<string, unknown>): Record<string, unknown>; uid(): string };
  };
}
const dcmjs = createRequire(import.meta.url)('dcmjs') as DcmjsWrite;

async function pngGray(name: string): Promise<{ data: Uint8Array; width: number; height: number }> {
  const { data, info } = await sharp(join(GOLDEN, name)).toColourspace('b-w').raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data), width: info.width, height: info.height };
}

/** An 8-bit grayscale DICOM of a committed X-ray (or of any gray pixels), written with dcmjs. */
async function xrayDicom(o: {
  png?: string;
  pixels?: { data: Uint8Array; width: number; height: number };
  modality: string;
  study: string;
  sop?: string;
  /** Default CT Image Storage for a CT, else Computed Radiography Image Storage. */
  sopClass?: string;
}): Promise<{ file: Buffer; sop: string }> {
  const img = o.pixels ?? (await pngGray(o.png!));
  const sop = o.sop ?? dcmjs.data.DicomMetaDictionary.uid();
  const sopClass = o.sopClass ?? (o.modality === 'CT' ? '1.2.840.10008.5.1.4.1.1.2' : '1.2.840.10008.5.1.4.1.1.1');
  const ds: Record<string, unknown> = {
    SpecificCharacterSet: 'ISO_IR 100',
    SOPClassUID: sopClass,
    SOPInstanceUID: sop,
    PatientName: [{ Alphabetic: PATIENT }],
    PatientID: 'PATIENT-ID-12345',
    StudyInstanceUID: o.study,
    SeriesInstanceUID: derivedUid('test-series', o.study, o.modality),
    StudyDate: '20240102',
    Modality: o.modality,
    BodyPartExamined: o.modality === 'CT' ? 'HEAD' : 'CHEST',
    InstanceNumber: '1',
    SamplesPerPixel: 1,
    PhotometricInterpretation: 'MONOCHROME2',
    Rows: img.height,
    Columns: img.width,
    BitsAllocated: 8,
    BitsStored: 8,
    HighBit: 7,
    PixelRepresentation: 0,
    PixelData: [img.data.buffer.slice(img.data.byteOffset, img.data.byteOffset + img.data.byteLength)],
    _vrMap: { PixelData: 'OB' },
  };
  if (o.modality === 'CT') Object.assign(ds, { RescaleSlope: '1', RescaleIntercept: '-1024', ImageType: ['ORIGINAL', 'PRIMARY', 'AXIAL'] });
  const meta = {
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: sopClass,
    MediaStorageSOPInstanceUID: sop,
    TransferSyntaxUID: '1.2.840.10008.1.2.1',
    ImplementationClassUID: '2.25.1',
  };
  const dict = new dcmjs.data.DicomDict(dcmjs.data.DicomMetaDictionary.denaturalizeDataset(meta));
  dict.dict = dcmjs.data.DicomMetaDictionary.denaturalizeDataset(ds);
  return { file: Buffer.from(dict.write()), sop };
}

const seq = (v: any): any[] => (Array.isArray(v) ? v : v ? [v] : []);

/** A content item's text or number, by its code meaning. */
function srValue(sr: Record<string, unknown>, meaning: string): string | number | undefined {
  const it = seq(sr.ContentSequence).find((i) => seq(i.ConceptNameCodeSequence)[0]?.CodeMeaning === meaning);
  if (!it) return undefined;
  if (it.ValueType === 'NUM') return Number(seq(it.MeasuredValueSequence)[0].NumericValue);
  return it.TextValue;
}

let engine: Engine;
beforeAll(async () => {
  engine = await Engine.load({ threads: 1 });
});
afterAll(async () => {
  await engine?.dispose();
});

describe('DICOM written back (dcmjs)', () => {
  it('derived UIDs are valid, stable and distinct', () => {
    const a = derivedUid('x', 'y');
    expect(a).toMatch(/^2\.25\.[1-9]\d*$/);
    expect(a.length).toBeLessThanOrEqual(64);
    expect(derivedUid('x', 'y')).toBe(a);
    expect(derivedUid('x', 'z')).not.toBe(a);
  });

  it('SC and SR carry the result, the study and the references; the SC shows the caption', async () => {
    const study = derivedUid('unit-study');
    const { file, sop } = await xrayDicom({ png: 'pneumonia_gray_224.png', modality: 'CR', study });
    const result = await engine.analyse(file);
    const tags = { ...readDicom(file), PatientName: PATIENT };
    const overlay = await sharp(result.cam!.overlayPng).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    const sc = readDicom(
      secondaryCapture(tags, { kind: 'analysed', result }, new Uint8Array(overlay.data), overlay.info.width, overlay.info.height),
    );
    const uids = resultUids(tags, result.model);
    expect(sc.SOPClassUID).toBe(SOP_CLASS.secondaryCapture);
    expect(sc.SOPInstanceUID).toBe(uids.sc);
    expect(sc.StudyInstanceUID).toBe(study);
    expect(sc.PatientID).toBe('PATIENT-ID-12345');
    expect(sc.Manufacturer).toBe('pneumolens');
    expect(sc.BurnedInAnnotation).toBe('YES');
    expect(seq(sc.SourceImageSequence)[0].ReferencedSOPInstanceUID).toBe(sop);
    expect(sc.Columns).toBe(overlay.info.width);
    expect(sc.Rows as number).toBeGreaterThan(overlay.info.height); // the caption band
    // The SC is an image pneumolens itself can read; its caption band has lit (text) pixels.
    const back = await decodeImage(
      secondaryCapture(tags, { kind: 'analysed', result }, new Uint8Array(overlay.data), overlay.info.width, overlay.info.height),
    );
    expect(back.image.channels).toBe(3);
    const band = (sc.Rows as number) - overlay.info.height;
    let lit = 0;
    for (let i = 0; i < back.image.width * band * 3; i++) if (back.image.data[i] > 200) lit++;
    expect(lit).toBeGreaterThan(100);

    const sr = readDicom(structuredReport(tags, { kind: 'analysed', result }, { withSc: true }));
    expect(sr.SOPClassUID).toBe(SOP_CLASS.comprehensiveSR);
    expect(sr.SOPInstanceUID).toBe(uids.sr);
    expect(sr.StudyInstanceUID).toBe(study);
    expect(sr.Modality).toBe('SR');
    expect(srValue(sr, 'Finding')).toBe('PNEUMONIA');
    // Four significant digits (issue 19: no 0.1208099585026502), in words with one decimal of a percent.
    expect(srValue(sr, 'Calibrated probability of pneumonia')).toBe(Number(result.probability.toPrecision(4)));
    expect(srValue(sr, 'Decision threshold')).toBe(Number(result.threshold.toPrecision(4)));
    expect(srValue(sr, 'Result in words')).toBe(
      `PNEUMONIA: probability of pneumonia ${(Math.round(result.probability * 1000) / 10).toFixed(1)}% (decision threshold ${(Math.round(result.threshold * 1000) / 10).toFixed(1)}%)` +
        (result.uncertain ? '; uncertain: refer to a clinician' : ''),
    );
    expect(srValue(sr, 'Algorithm Version')).toBe(result.model.version);
    expect(srValue(sr, 'Input gate result')).toMatch(/^Accepted: passed the image checks/);
    for (const item of seq(sr.ContentSequence).filter((i) => i.ValueType === 'TEXT'))
      expect(item.TextValue).not.toMatch(/\d\.\d{5,}|e\+\d/);
    expect(caption({ kind: 'analysed', result })[0]).toMatch(
      /^pneumolens \S+: PNEUMONIA: probability of pneumonia \d+\.\d% \(decision threshold \d+\.\d%\)$/,
    );
    expect(srValue(sr, 'Intended use')).toMatch(/not a medical device/);
    const refs = seq(sr.ContentSequence)
      .filter((i) => i.ValueType === 'IMAGE')
      .map((i) => seq(i.ReferencedSOPSequence)[0].ReferencedSOPInstanceUID);
    expect(refs).toEqual([sop, uids.sc]);
  });
});

const HAS_DCMTK = spawnSync('dsrdump', ['--version']).status === 0;

describe.skipIf(!HAS_DCMTK)('DICOM written back, checked by dcmtk', () => {
  it('dsrdump reads the SR without errors; dcm2pnm renders the SC; UTF-8 names survive', async () => {
    const dir = mkdtempSync(join(testTmp(), 'pneumolens-sr-'));
    try {
      const { file } = await xrayDicom({ png: 'pneumonia_gray_224.png', modality: 'CR', study: derivedUid('dcmtk-study') });
      const result = await engine.analyse(file);
      const tags = { ...readDicom(file), PatientName: 'Dürer^Jörg' };
      const o = await sharp(result.cam!.overlayPng).removeAlpha().raw().toBuffer({ resolveWithObject: true });
      writeFileSync(
        join(dir, 'sc.dcm'),
        secondaryCapture(tags, { kind: 'analysed', result }, new Uint8Array(o.data), o.info.width, o.info.height),
      );
      writeFileSync(join(dir, 'sr.dcm'), structuredReport(tags, { kind: 'analysed', result }, { withSc: true }));
      const sr = spawnSync('dsrdump', ['-Ec', '+Pf', join(dir, 'sr.dcm')], { encoding: 'utf8' });
      expect(sr.status, sr.stderr).toBe(0);
      expect(sr.stderr).not.toMatch(/^[EF]:/m);
      expect(sr.stdout).toContain('Dürer');
      expect(sr.stdout).toMatch(/Finding.*PNEUMONIA/);
      const pnm = spawnSync('dcm2pnm', ['--write-png', join(dir, 'sc.dcm'), join(dir, 'sc.png')], { encoding: 'utf8' });
      expect(pnm.status, pnm.stderr).toBe(0);
      const meta = await sharp(join(dir, 'sc.png')).metadata();
      expect(meta.width).toBe(o.info.width);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Against a real Orthanc

const ORTHANC_BIN =
  ['/usr/sbin/Orthanc', '/usr/bin/Orthanc'].find((p) => existsSync(p)) ??
  (spawnSync('sh', ['-c', 'command -v Orthanc'], { encoding: 'utf8' }).stdout.trim() || null);
if (!ORTHANC_BIN) {
  console.warn(
    '\n*** test/pacs/pacs.test.ts: Orthanc is not installed, so the PACS round-trip tests are SKIPPED. ***\n' +
      '*** Install it with: apt-get install -y orthanc orthanc-dicomweb (.ci/run does).             ***\n',
  );
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

const USER = 'pneumolens';
const PASSWORD = 'test-secret-7f3a';

describe.skipIf(!ORTHANC_BIN)('PACS round trip with a real Orthanc', () => {
  let dir: string;
  let orthancProc: ChildProcess | null = null;
  let url: string;
  let client: Orthanc;
  let orthancLog = '';

  async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
    const res = await fetch(url + path, {
      ...init,
      headers: { authorization: 'Basic ' + Buffer.from(`${USER}:${PASSWORD}`).toString('base64'), ...(init.headers ?? {}) },
      signal: AbortSignal.timeout(10_000),
    });
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
    return (await res.json()) as T;
  }
  const upload = (file: Buffer) =>
    api<{ ParentStudy: string; ID: string }>('/instances', {
      method: 'POST',
      body: new Uint8Array(file) as BodyInit,
      headers: { 'content-type': 'application/dicom' },
    });
  const instanceFile = async (id: string) =>
    Buffer.from(
      await (
        await fetch(`${url}/instances/${id}/file`, {
          headers: { authorization: 'Basic ' + Buffer.from(`${USER}:${PASSWORD}`).toString('base64') },
        })
      ).arrayBuffer(),
    );
  type Inst = { ID: string; MainDicomTags: { SOPInstanceUID: string } };
  const studyInstances = (studyId: string) => api<Inst[]>(`/studies/${studyId}/instances`);

  beforeAll(async () => {
    dir = mkdtempSync(join(testTmp(), 'pneumolens-orthanc-'));
    const port = await freePort();
    const config = {
      Name: 'pneumolens-test',
      HttpPort: port,
      DicomServerEnabled: false, // no DICOM port is opened
      DicomPort: await freePort(),
      StorageDirectory: join(dir, 'db'),
      IndexDirectory: join(dir, 'db'),
      RemoteAccessAllowed: false, // loopback clients only
      AuthenticationEnabled: true,
      RegisteredUsers: { [USER]: PASSWORD },
      Plugins: [],
      SaveJobs: false,
      HttpTimeout: 10,
    };
    writeFileSync(join(dir, 'orthanc.json'), JSON.stringify(config));
    url = `http://127.0.0.1:${port}`;
    orthancProc = spawn(ORTHANC_BIN!, [join(dir, 'orthanc.json')], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    orthancProc.stdout!.on('data', (d) => (orthancLog += d));
    orthancProc.stderr!.on('data', (d) => (orthancLog += d));
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        await api('/system');
        break;
      } catch {
        if (Date.now() > deadline || orthancProc.exitCode !== null) throw new Error(`Orthanc did not start:\n${orthancLog.slice(-2000)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    client = new Orthanc({ url, username: USER, password: PASSWORD, timeoutMs: 10_000 });
  }, 60_000);

  afterAll(async () => {
    if (orthancProc && orthancProc.exitCode === null) {
      const exited = new Promise((r) => orthancProc!.once('exit', r));
      orthancProc.kill('SIGTERM');
      const t = setTimeout(() => orthancProc?.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function pacs(args: string[], env: Record<string, string> = {}): Promise<{ code: number; err: string }> {
    let err = '';
    const io = {
      stdout: { write: () => true },
      stderr: { write: (s: string) => ((err += s), true) },
      cwd: dir,
      env: { PNEUMOLENS_ORTHANC_USER: USER, PNEUMOLENS_ORTHANC_PASSWORD: PASSWORD, ...env },
      engine,
    };
    const code = await run(['pacs', '--orthanc', url, '--state', join(dir, 'state.json'), '--once', '--interval', '0.2', ...args], io);
    return { code, err };
  }

  it('analyses a chest CR once, stores SC + SR in its study, refuses a noise image with an SR, skips CT; a restart adds nothing', async () => {
    const study = derivedUid('e2e-study');
    const chest = await xrayDicom({ png: 'pneumonia_gray_224.png', modality: 'CR', study });
    const ct = await xrayDicom({ png: 'normal_gray_200x240.png', modality: 'CT', study });
    // A CR whose pixels are noise: the input gate refuses it.
    const noise = new Uint8Array(256 * 256);
    let s = 12345;
    for (let i = 0; i < noise.length; i++) noise[i] = (s = (s * 1103515245 + 12345) >>> 0) >>> 24;
    const junk = await xrayDicom({ pixels: { data: noise, width: 256, height: 256 }, modality: 'CR', study });
    const studyId = (await upload(chest.file)).ParentStudy;
    await upload(ct.file);
    await upload(junk.file);
    expect(await studyInstances(studyId)).toHaveLength(3);

    const t0 = performance.now();
    const first = await pacs([]);
    const firstMs = performance.now() - t0;
    expect(first.code, first.err).toBe(0);
    console.log(`pacs --once on 3 new instances: ${firstMs.toFixed(0)} ms\n${first.err}`);
    // The SC and SRs it stored are new changes too, seen in the same run and skipped as its own.
    expect(first.err).toMatch(/1 analysed, 1 refused, 0 failed, 1 not radiographs, 3 own results, 0 already done/);
    // No patient data and no credentials in the log; UIDs only with --verbose.
    expect(first.err).not.toContain('DOE');
    expect(first.err).not.toContain('PATIENT-ID');
    expect(first.err).not.toContain(PASSWORD);
    expect(first.err).not.toContain(chest.sop);

    const after = await studyInstances(studyId);
    expect(after).toHaveLength(6); // CR, CT, noise CR + SC and SR of the chest + SR of the refusal
    const uids = resultUids({ StudyInstanceUID: study, SOPInstanceUID: chest.sop }, engine.card);
    const byUid = new Map(after.map((i) => [i.MainDicomTags.SOPInstanceUID, i.ID]));
    expect(byUid.has(uids.sc) && byUid.has(uids.sr)).toBe(true);
    const junkUids = resultUids({ StudyInstanceUID: study, SOPInstanceUID: junk.sop }, engine.card);
    expect(byUid.has(junkUids.sr)).toBe(true);
    expect(byUid.has(junkUids.sc)).toBe(false);
    const ctUids = resultUids({ StudyInstanceUID: study, SOPInstanceUID: ct.sop }, engine.card);
    expect(byUid.has(ctUids.sr) || byUid.has(ctUids.sc)).toBe(false);

    // What Orthanc stored: the right study, patient, references and values.
    const expected = await engine.analyse(chest.file);
    const sc = readDicom(await instanceFile(byUid.get(uids.sc)!));
    expect(sc.StudyInstanceUID).toBe(study);
    expect(sc.PatientID).toBe('PATIENT-ID-12345');
    expect(sc.Modality).toBe('OT');
    expect(seq(sc.SourceImageSequence)[0].ReferencedSOPInstanceUID).toBe(chest.sop);
    const sr = readDicom(await instanceFile(byUid.get(uids.sr)!));
    expect(sr.StudyInstanceUID).toBe(study);
    expect(srValue(sr, 'Finding')).toBe(expected.label);
    expect(srValue(sr, 'Calibrated probability of pneumonia') as number).toBeCloseTo(expected.probability, 3);
    expect(srValue(sr, 'Algorithm Name')).toBe(engine.card.name);
    expect(srValue(sr, 'Algorithm Version')).toBe(engine.card.version);
    const evidence = seq(seq(sr.CurrentRequestedProcedureEvidenceSequence)[0].ReferencedSeriesSequence);
    expect(evidence.flatMap((s) => seq(s.ReferencedSOPSequence).map((r) => r.ReferencedSOPInstanceUID))).toEqual([chest.sop, uids.sc]);
    const refusal = readDicom(await instanceFile(byUid.get(junkUids.sr)!));
    expect(srValue(refusal, 'Finding')).toBe('Not analysed: not a chest X-ray (failed the image checks)');
    expect(srValue(refusal, 'Reason not analysed (code)')).toBe('not_a_chest_xray');
    // Both series are in the study, under their own numbers.
    const series = await api<Array<{ MainDicomTags: { SeriesNumber?: string; Modality?: string } }>>(`/studies/${studyId}/series`);
    expect(series.map((x) => x.MainDicomTags.SeriesNumber).sort()).toEqual(expect.arrayContaining(['9901', '9902']));

    // Restart: the cursor resumes after the last change; the SC/SRs it wrote are seen and skipped.
    const state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8'));
    expect(state.orthanc).toBe(`${url}/`);
    expect(JSON.stringify(state)).not.toContain(PASSWORD);
    expect(state.failures.map((f: { code: string }) => f.code)).toEqual(['not_a_chest_xray']);
    const chest2 = await xrayDicom({ png: 'normal_gray_200x240.png', modality: 'CR', study });
    await upload(chest2.file);
    const second = await pacs([]);
    expect(second.code, second.err).toBe(0);
    expect(second.err).toMatch(/resuming after change/);
    expect(second.err).toMatch(/2 analysed, 1 refused, 0 failed, 1 not radiographs, 5 own results, 0 already done/);
    expect(await studyInstances(studyId)).toHaveLength(9);

    // A lost state file: everything is walked again, but results already in the study are recognised.
    rmSync(join(dir, 'state.json'));
    const third = await pacs([]);
    expect(third.code, third.err).toBe(0);
    expect(third.err).toMatch(/0 analysed, 0 refused, 0 failed, 1 not radiographs, 5 own results, 3 already done/);
    expect(await studyInstances(studyId)).toHaveLength(9);
  });

  it('following the feed: an upload gets its result while the watcher runs; measured latency', async () => {
    const study = derivedUid('e2e-follow');
    const watcherState = join(dir, 'follow.json');
    const ctl = new AbortController();
    const logs: string[] = [];
    const w = new Watcher({
      orthanc: client,
      engine,
      statePath: watcherState,
      batch: 10,
      intervalMs: 100,
      once: false,
      start: 'now',
      log: (l) => logs.push(l),
      signal: ctl.signal,
    });
    const running = w.run();
    try {
      await new Promise((r) => setTimeout(r, 300));
      const chest = await xrayDicom({ png: 'normal_gray_200x240.png', modality: 'DX', study });
      const uids = resultUids({ StudyInstanceUID: study, SOPInstanceUID: chest.sop }, engine.card);
      const t0 = performance.now();
      await upload(chest.file);
      let ms = -1;
      while (performance.now() - t0 < 20_000) {
        if (await client.hasInstance(uids.sr)) {
          ms = performance.now() - t0;
          break;
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      console.log(`upload -> SR in the study: ${ms.toFixed(0)} ms (poll interval 100 ms)\n${logs.join('\n')}`);
      expect(ms).toBeGreaterThan(0);
      expect(await client.hasInstance(uids.sc)).toBe(true);
    } finally {
      ctl.abort();
    }
    const summary = await running;
    expect(summary.counts.analysed).toBe(1);
  });

  /** A CR of a committed X-ray (or of `pixels`) whose patient elements are written byte for byte as given. */
  async function rawSource(study: string, patient: DicomElement[], pixels?: { data: Uint8Array; width: number; height: number }) {
    const img = pixels ?? (await pngGray('pneumonia_gray_224.png'));
    const sop = dcmjs.data.DicomMetaDictionary.uid();
    const file = radiographDicom({
      pixels: img.data,
      width: img.width,
      height: img.height,
      study,
      series: derivedUid('raw-series', study),
      sop,
      patient,
    });
    return { file, sop };
  }

  it('issue 19 item 1: a source with every patient attribute malformed gets its SC and SR, the SR saying what was repaired', async () => {
    const study = derivedUid('e2e-malformed');
    const state = join(dir, 'malformed.json');
    expect((await pacs(['--state', state, '--start', 'now'])).code).toBe(0);
    const src = await rawSource(study, MALFORMED_PATIENT.elements());
    const studyId = (await upload(src.file)).ParentStudy;
    const run1 = await pacs(['--state', state]);
    expect(run1.code, run1.err).toBe(0);
    expect(run1.err).toMatch(/1 analysed, 0 refused, 0 failed/);
    expect(run1.err).toMatch(/source attributes repaired or left empty: /);
    for (const v of ['Müller', '19650304', '4444', '7777']) expect(run1.err).not.toContain(v);
    const uids = resultUids({ StudyInstanceUID: study, SOPInstanceUID: src.sop }, engine.card);
    const byUid = new Map((await studyInstances(studyId)).map((i) => [i.MainDicomTags.SOPInstanceUID, i.ID]));
    expect(byUid.has(uids.sc), 'the SC landed in the study').toBe(true);
    expect(byUid.has(uids.sr), 'the SR landed in the study').toBe(true);
    const sr = readDicom(await instanceFile(byUid.get(uids.sr)!));
    const sc = readDicom(await instanceFile(byUid.get(uids.sc)!));
    for (const ds of [sr, sc]) {
      expect(ds.StudyInstanceUID).toBe(study);
      expect(seq(ds.PatientName)[0]?.Alphabetic ?? ds.PatientName).toBe(MALFORMED_PATIENT.expected.PatientName);
      expect(ds.PatientBirthDate).toBe(MALFORMED_PATIENT.expected.PatientBirthDate);
      expect(ds.StudyDate).toBe(MALFORMED_PATIENT.expected.StudyDate);
      expect(ds.StudyTime).toBe(MALFORMED_PATIENT.expected.StudyTime);
      expect(ds.PatientID).toBe(MALFORMED_PATIENT.expected.PatientID);
      expect(ds.AccessionNumber).toBe(MALFORMED_PATIENT.expected.AccessionNumber);
      expect(ds.PatientSex ?? '').toBe('');
    }
    const warned = seq(sr.ContentSequence)
      .filter((i) => seq(i.ConceptNameCodeSequence)[0]?.CodeMeaning === 'Warning')
      .map((i) => i.TextValue as string)
      .join('\n');
    for (const k of MALFORMED_PATIENT.warned) expect(warned, k).toContain(`Source attribute ${k} `);
    // Orthanc files the result under the same patient and study as its source.
    const study2 = await api<{ ID: string; Instances?: string[] }>(`/instances/${byUid.get(uids.sr)}/study`);
    expect(study2.ID).toBe(studyId);
  });

  it('issue 23: the watcher takes what an upload analyses as a radiograph: an RG film stored as a secondary capture is analysed, a secondary capture is skipped', async () => {
    const SC = '1.2.840.10008.5.1.4.1.1.7'; // Secondary Capture Image Storage
    const study = derivedUid('e2e-scope');
    const state = join(dir, 'scope.json');
    expect((await pacs(['--state', state, '--start', 'now'])).code).toBe(0);
    // Digitised film: Modality RG (Radiographic imaging, conventional film/screen) in a Secondary Capture object.
    const rg = await xrayDicom({ png: 'pneumonia_gray_224.png', modality: 'RG', sopClass: SC, study });
    const capture = await xrayDicom({ png: 'normal_gray_200x240.png', modality: 'OT', sopClass: SC, study });
    // On upload: the RG film is a radiograph (no DICOM warning), the capture is analysed with one.
    expect((await decodeImage(rg.file)).notes.join(' ')).not.toContain('DICOM warning');
    expect((await decodeImage(capture.file)).notes.join(' ')).toContain('DICOM warning: Modality OT');
    const studyId = (await upload(rg.file)).ParentStudy;
    await upload(capture.file);
    const run1 = await pacs(['--state', state]);
    expect(run1.code, run1.err).toBe(0);
    expect(run1.err).toMatch(/1 analysed, 0 refused, 0 failed, 1 not radiographs, 2 own results, 0 already done/);
    expect(run1.err).toMatch(
      /skipped: Modality OT \(not CR\/DX\): the image may not be a chest radiograph\. The watcher analyses radiographs only\./,
    );
    const inStudy = new Set((await studyInstances(studyId)).map((i) => i.MainDicomTags.SOPInstanceUID));
    const uidsOf = (sop: string) => resultUids({ StudyInstanceUID: study, SOPInstanceUID: sop }, engine.card);
    expect(inStudy.has(uidsOf(rg.sop).sc) && inStudy.has(uidsOf(rg.sop).sr), 'the RG film has its SC and SR').toBe(true);
    expect(inStudy.has(uidsOf(capture.sop).sr) || inStudy.has(uidsOf(capture.sop).sc), 'the capture has no result').toBe(false);
  });

  it('issue 19 item 3: the SR says which reason and what decided it (tiny model with a gate and no intended-use head)', async () => {
    // A model whose gate score is the mean of its input: a bright film that passes the image checks
    // scores above the threshold. Its card has gate and no gate.intended_use (like model 3.0.0 may).
    const tiny = writeTinyModel({ size: 32, channels: 4, stride: 4, ood: true }, (c) => (c.gate = { output: 'ood', threshold: 0.5 }));
    const tinyEngine = await Engine.load({ card: tiny.cardPath, threads: 1 });
    try {
      expect(tinyEngine.card.gate?.intended_use).toBeUndefined();
      const study = derivedUid('e2e-reasons');
      const gray = async (png: Buffer) => {
        const { data, info } = await sharp(png).toColourspace('b-w').raw().toBuffer({ resolveWithObject: true });
        return { data: new Uint8Array(data), width: info.width, height: info.height };
      };
      // An identity window keeps the gray levels (without VOI, min-max would stretch the bright film to 0..255).
      const identity: DicomElement[] = [
        { tag: [0x0028, 0x1050], vr: 'DS', value: '128' },
        { tag: [0x0028, 0x1051], vr: 'DS', value: '256' },
      ];
      const bright = await rawSource(study, identity, await gray(texturedGrayPng(240, 280, 6, 140, 250)));
      const dark = await rawSource(study, identity, await gray(texturedGrayPng(240, 280, 5, 0, 120)));
      const noise = new Uint8Array(200 * 200);
      let r = 7;
      for (let i = 0; i < noise.length; i++) noise[i] = (r = (r * 1103515245 + 12345) >>> 0) >>> 24;
      const junk = await rawSource(study, [], { data: noise, width: 200, height: 200 });
      const state = join(dir, 'reasons.json');
      const watch = () =>
        new Watcher({
          orthanc: client,
          engine: tinyEngine,
          statePath: state,
          batch: 50,
          intervalMs: 100,
          once: true,
          start: 'now',
          log: () => {},
        }).run();
      await watch();
      const studyId = (await upload(bright.file)).ParentStudy;
      await upload(dark.file);
      await upload(junk.file);
      const summary = await watch();
      expect(summary.counts).toMatchObject({ analysed: 1, refused: 2, failed: 0 });
      const inStudy = new Map((await studyInstances(studyId)).map((i) => [i.MainDicomTags.SOPInstanceUID, i.ID]));
      const srOf = async (sop: string) =>
        readDicom(await instanceFile(inStudy.get(resultUids({ StudyInstanceUID: study, SOPInstanceUID: sop }, tinyEngine.card).sr)!));
      const b = await srOf(bright.sop);
      expect(srValue(b, 'Finding')).toBe(
        'Not analysed: outside the intended use (unlike the chest X-rays the model was trained and validated on)',
      );
      expect(srValue(b, 'Reason not analysed (code)')).toBe('outside_intended_use');
      expect(srValue(b, 'Input gate result')).toMatch(/^This radiograph is unlike the chest X-rays the model was trained and validated on/);
      expect(String(srValue(b, 'Finding'))).not.toMatch(/not a chest X-ray/i);
      const j = await srOf(junk.sop);
      expect(srValue(j, 'Finding')).toBe('Not analysed: not a chest X-ray (failed the image checks)');
      expect(srValue(j, 'Reason not analysed (code)')).toBe('not_a_chest_xray');
      const d = await srOf(dark.sop);
      expect(srValue(d, 'Input gate result')).toMatch(/^Accepted: passed the image checks; the model's gate score is within its limit/);
      expect(
        seq(d.ContentSequence)
          .map((i) => i.TextValue ?? '')
          .join(' '),
      ).not.toMatch(/\d\.\d{5,}|e\+\d/);
    } finally {
      await tinyEngine.dispose();
      rmSync(tiny.dir, { recursive: true, force: true });
    }
  });

  it('issue 19 item 2: canary patient attributes appear in no output and no file pneumolens writes, except the DICOM results', async () => {
    const study = derivedUid('e2e-canary');
    const root = mkdtempSync(join(testTmp(), 'pneumolens-canary-'));
    const home = join(root, 'home');
    const tmp = join(root, 'tmp');
    const cwd = join(root, 'cwd');
    for (const d of [home, tmp, cwd]) mkdirSync(d);
    const CANARIES = ['CANARY', '19650304', '1965-03-04', '1965.03.04'];
    const canary: DicomElement[] = [
      { tag: [0x0010, 0x0010], vr: 'PN', value: 'DOE^CANARY' },
      { tag: [0x0010, 0x0020], vr: 'LO', value: 'CANARY123' },
      // Over-long for DA (a DT value): what made dcmjs log "Truncating value ... of PatientBirthDate".
      { tag: [0x0010, 0x0030], vr: 'DA', value: '19650304000000.000000' },
      { tag: [0x0008, 0x0050], vr: 'SH', value: 'CANARY-ACCESSION-0001' },
      { tag: [0x0008, 0x1030], vr: 'LO', value: 'CANARY chest ' + 'x'.repeat(70) },
    ];
    const cli = (args: string[]) =>
      spawnSync(process.execPath, [join(REPO, 'bin', 'pneumolens.js'), 'pacs', '--orthanc', url, '--once', ...args], {
        cwd,
        encoding: 'utf8',
        timeout: 120_000,
        env: { PATH: process.env.PATH, HOME: home, TMPDIR: tmp, PNEUMOLENS_ORTHANC_USER: USER, PNEUMOLENS_ORTHANC_PASSWORD: PASSWORD },
      });
    try {
      // The default state file: in the state folder under HOME, named after the server.
      const first = cli(['--start', 'now']);
      expect(first.status, first.stderr).toBe(0);
      const noise = new Uint8Array(256 * 256);
      let r = 99;
      for (let i = 0; i < noise.length; i++) noise[i] = (r = (r * 1103515245 + 12345) >>> 0) >>> 24;
      const chest = await rawSource(study, canary);
      const junk = await rawSource(study, canary, { data: noise, width: 256, height: 256 });
      const studyId = (await upload(chest.file)).ParentStudy;
      await upload(junk.file);
      const second = cli(['--verbose']);
      expect(second.status, second.stderr).toBe(0);
      const outputs = { 'stdout 1': first.stdout, 'stderr 1': first.stderr, 'stdout 2': second.stdout, 'stderr 2': second.stderr };
      for (const [name, text] of Object.entries(outputs)) for (const c of CANARIES) expect(text, `${name} holds ${c}`).not.toContain(c);
      expect(second.stderr).toMatch(/1 analysed, 1 refused, 0 failed/);
      // Both results landed (so the canaries were really written, into the DICOM results only).
      const uidsOf = (sop: string) => resultUids({ StudyInstanceUID: study, SOPInstanceUID: sop }, engine.card);
      const inStudy = new Set((await studyInstances(studyId)).map((i) => i.MainDicomTags.SOPInstanceUID));
      expect([uidsOf(chest.sop).sc, uidsOf(chest.sop).sr, uidsOf(junk.sop).sr].every((u) => inStudy.has(u))).toBe(true);
      const sr = readDicom(
        await instanceFile((await studyInstances(studyId)).find((i) => i.MainDicomTags.SOPInstanceUID === uidsOf(chest.sop).sr)!.ID),
      );
      expect(sr.PatientID).toBe('CANARY123');

      const files: string[] = [];
      const walk = (d: string) => {
        for (const e of readdirSync(d)) {
          const p = join(d, e);
          if (statSync(p).isDirectory()) walk(p);
          else files.push(p);
        }
      };
      walk(root);
      const state = files.find((f) => /\/\.local\/state\/pneumolens\/pacs-127\.0\.0\.1_\d+\.json$/.test(f));
      expect(state, `the default state file, among ${files.join(', ')}`).toBeDefined();
      expect(readdirSync(cwd), 'nothing is written into the current folder').toEqual([]);
      expect(first.stderr).toContain(`new state file ${state}`);
      expect(JSON.parse(readFileSync(state!, 'utf8')).failures.map((f: { code: string }) => f.code)).toEqual(['not_a_chest_xray']);
      for (const f of files) {
        const body = readFileSync(f).toString('latin1');
        for (const c of CANARIES) expect(body.includes(c) || f.includes(c), `${f} holds ${c}`).toBe(false);
      }
      console.log(`canary run: ${files.length} files written under HOME/TMPDIR/cwd, none holds a canary; stderr:\n${second.stderr}`);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }, 240_000);

  it('bad credentials and an unreachable Orthanc are clear errors, not crashes', async () => {
    const bad = await pacs(['--state', join(dir, 'bad.json')], { PNEUMOLENS_ORTHANC_PASSWORD: 'wrong' });
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/HTTP 401/);
    expect(bad.err).not.toContain('wrong');
    const port = await freePort();
    const down = await run(
      ['pacs', '--orthanc', `http://u:hunter2@127.0.0.1:${port}`, '--once', '--state', join(dir, 'down.json'), '--timeout', '2'],
      {
        stdout: { write: () => true },
        stderr: { write: (s: string) => ((downErr += s), true) },
        cwd: dir,
        env: {},
        engine,
      },
    );
    expect(down).toBe(1);
    expect(downErr).not.toContain('hunter2');
  });
});
let downErr = '';
