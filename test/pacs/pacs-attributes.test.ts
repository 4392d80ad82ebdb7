/**
 * Issue 19 items 1-2 without Orthanc: the attributes a result copies from its source are valid by
 * their VR whatever the source holds (copied, repaired, or left empty with a warning in the SR), so
 * writing the SC and SR never fails; and dcmjs's own log messages reach our log without values.
 * The round trip through a real Orthanc is in pacs.test.ts.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { copyAttributes, instanceNumber, invalidSourceUids, isValidUid } from '../../src/pacs/attributes.ts';
import {
  readDicom,
  routeDicomWriterLog,
  safeDcmjsMessage,
  secondaryCapture,
  structuredReport,
  type Outcome,
} from '../../src/pacs/dicom-out.ts';
import { safeError, watcherScope } from '../../src/pacs/watcher.ts';
import { PneumoError } from '../../src/errors.ts';
import { decodeImage } from '../../src/image/decode.ts';
import { DICOM_WARNING } from '../../src/image/dicom-scope.ts';
import { dicomScope, RADIOGRAPH_SOP_CLASS } from '../../src/image/dicom-scope.ts';
import { radiographDicom } from '../fixtures/make-dicom.ts';
import { testTmp } from '../fixtures/paths.ts';

/** Orthanc's simplified tags of a source whose every patient and study attribute is malformed. */
const MALFORMED = {
  SOPClassUID: '1.2.840.10008.5.1.4.1.1.1',
  SOPInstanceUID: '2.25.1001',
  SeriesInstanceUID: '2.25.1002',
  StudyInstanceUID: '2.25.1003',
  InstanceNumber: '99999999999',
  PatientName: 'Müller^Jörg^^Dr.',
  PatientID: 'ID-' + '4'.repeat(77),
  IssuerOfPatientID: '',
  PatientBirthDate: '19650304000000.000000',
  PatientSex: '70',
  StudyDate: '2024-01-02',
  StudyTime: '10:20:30',
  StudyID: 'S1\\S2',
  AccessionNumber: 'ACC-' + '7'.repeat(26),
  ReferringPhysicianName: 'Ärztin' + 'x'.repeat(70) + '^Eva',
  StudyDescription: 'Thorax p.a. ' + 'ü'.repeat(88),
};

const refused: Outcome = {
  kind: 'refused',
  code: 'not_a_chest_xray',
  message: 'This does not look like a chest X-ray.',
  model: { name: 'tiny', version: '0.0.1' },
};

const seq = (v: any): any[] => (Array.isArray(v) ? v : v ? [v] : []);
const warnings = (sr: Record<string, unknown>): string[] =>
  seq(sr.ContentSequence)
    .filter((i) => seq(i.ConceptNameCodeSequence)[0]?.CodeMeaning === 'Warning')
    .map((i) => i.TextValue as string);

describe('attributes copied from the source (issue 19 item 1)', () => {
  it('copies what is valid, repairs what can be repaired, leaves identifiers that do not fit empty; warns by name only', () => {
    const { attributes: a, warnings: w, changed } = copyAttributes(MALFORMED);
    expect(a.PatientName).toEqual([{ Alphabetic: 'Müller^Jörg^^Dr.' }]);
    expect(a.PatientBirthDate).toBe('19650304');
    expect(a.StudyDate).toBe('20240102');
    expect(a.StudyTime).toBe('102030');
    expect(a.StudyInstanceUID).toBe('2.25.1003');
    // Identifiers are never cut or emptied (the archive files the result by them): copied unchanged.
    for (const k of ['PatientID', 'StudyID', 'AccessionNumber'] as const) expect(a[k], k).toBe(MALFORMED[k]);
    expect(a.PatientSex).toBe(''); // Type 2: present, empty
    expect('IssuerOfPatientID' in a).toBe(false); // empty in the source, Type 3
    expect((a.StudyDescription as string).length).toBe(64);
    expect((seq(a.ReferringPhysicianName)[0].Alphabetic as string).split('=')[0].length).toBeLessThanOrEqual(64);
    expect(changed.sort()).toEqual(
      [
        'AccessionNumber',
        'PatientBirthDate',
        'PatientID',
        'PatientSex',
        'ReferringPhysicianName',
        'StudyDate',
        'StudyDescription',
        'StudyID',
        'StudyTime',
      ].sort(),
    );
    const text = w.join('\n');
    for (const v of ['19650304', '4444', '7777', 'S1', 'xxxx', 'Müller']) expect(text).not.toContain(v);
    expect(text).toMatch(/PatientID is longer than DICOM allows \(LO: 64 characters\); copied unchanged/);
    expect(text).toMatch(/PatientBirthDate was not written as a DICOM date \(DA\); rewritten/);
  });

  it('dates, times and codes: valid kept, impossible ones dropped', () => {
    const c = (tags: Record<string, unknown>) => copyAttributes(tags).attributes;
    expect(c({ PatientBirthDate: '20240230' }).PatientBirthDate).toBe(''); // no 30 February
    expect(c({ PatientBirthDate: '1965.03.04' }).PatientBirthDate).toBe('19650304');
    expect(c({ PatientBirthDate: 'unknown' }).PatientBirthDate).toBe('');
    expect(c({ StudyTime: '25:00' }).StudyTime).toBe('');
    expect(c({ StudyTime: '101530.123456' }).StudyTime).toBe('101530.123456');
    expect(c({ PatientSex: 'f' }).PatientSex).toBe('F');
    expect(c({ PatientName: ['a', 'b'] }).PatientName).toBe(''); // not one text value
    expect(c({ PatientName: 'A=山田^太郎' }).PatientName).toEqual([{ Alphabetic: 'A', Ideographic: '山田^太郎' }]);
    const huge = copyAttributes({ PatientID: '9'.repeat(70_000) });
    expect(huge.attributes.PatientID).toBe('');
    expect(huge.warnings).toEqual(['Source attribute PatientID is longer than 1024 bytes; left empty in this result.']);
    expect(instanceNumber('99999999999')).toBe('1');
    expect(instanceNumber(' 7 ')).toBe('7');
  });

  it('UIDs: the ones a result references must be valid, else no result is written for it', () => {
    expect(isValidUid('1.2.840.10008.5.1.4.1.1.1')).toBe(true);
    expect(isValidUid('1.2.' + '3'.repeat(70))).toBe(false);
    expect(isValidUid('1.2.03')).toBe(false);
    expect(invalidSourceUids({ ...MALFORMED, SeriesInstanceUID: 'abc' })).toEqual(['SeriesInstanceUID']);
    expect(invalidSourceUids(MALFORMED)).toEqual([]);
  });

  it('the SR and the SC of the malformed source are written and read back, with the warnings in the SR', () => {
    const sr = readDicom(structuredReport(MALFORMED, refused, { withSc: false }));
    expect(sr.PatientBirthDate).toBe('19650304');
    expect(sr.PatientID).toBe(MALFORMED.PatientID);
    expect(sr.InstanceNumber).toBe(1);
    expect(warnings(sr).length).toBe(9);
    expect(warnings(sr).join(' ')).toMatch(/Source attribute AccessionNumber/);
    const analysed = {
      kind: 'analysed',
      result: {
        label: 'NORMAL',
        probability: 0.1208099585026502,
        threshold: 0.5,
        uncertainty: null,
        uncertain: false,
        warnings: [],
        model: { name: 'tiny', version: '0.0.1' },
        gate: { rejected: false, score: 0.2, threshold: 1, scope: null, scopeThreshold: null, reasons: [] },
      },
    } as unknown as Outcome & { kind: 'analysed' };
    const sc = readDicom(secondaryCapture(MALFORMED, analysed, new Uint8Array(64 * 64 * 3), 64, 64));
    expect(sc.StudyInstanceUID).toBe('2.25.1003');
    expect(sc.PatientBirthDate).toBe('19650304');
  });

  it.skipIf(spawnSync('dsrdump', ['--version']).status !== 0)('dcmtk reads the SR of the malformed source without errors', () => {
    const dir = mkdtempSync(join(testTmp(), 'pneumolens-attr-'));
    try {
      writeFileSync(join(dir, 'sr.dcm'), structuredReport(MALFORMED, refused, { withSc: false }));
      const r = spawnSync('dsrdump', ['-Ec', join(dir, 'sr.dcm')], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).not.toMatch(/^[EF]:/m);
      expect(r.stdout).toContain('Müller');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("dcmjs's log goes through ours, without values (issue 19 item 2)", () => {
  it('a truncation warning names the attribute, never the value', () => {
    const lines: string[] = [];
    routeDicomWriterLog((l) => lines.push(l));
    try {
      // dcmjs itself, as any other module loading it would use it: its logger is shared.
      const dcmjs = createRequire(import.meta.url)('dcmjs') as {
        data: { DicomMetaDictionary: { denaturalizeDataset(ds: Record<string, unknown>): unknown } };
      };
      dcmjs.data.DicomMetaDictionary.denaturalizeDataset({ PatientBirthDate: '19650304CANARY-over-long-value' });
      expect(lines).toEqual([
        'dicom writer warn: a value of PatientBirthDate was longer than 18 characters and was cut (value not logged)',
      ]);
    } finally {
      routeDicomWriterLog((l) => process.stderr.write(l + '\n'));
    }
  });

  it("an unexpected error is logged and stored by its kind and place, never by its message (dcmjs's quote values)", () => {
    let thrown: unknown;
    try {
      // dcmjs's own error for an over-long DA, quoting the value, as the watcher met it before issue 19.
      const dcmjs = createRequire(import.meta.url)('dcmjs') as {
        data: { DicomDict: new (m: Record<string, unknown>) => { dict: Record<string, unknown>; write(): ArrayBuffer } };
      };
      const d = new dcmjs.data.DicomDict({});
      d.dict = { '00100030': { vr: 'DA', Value: ['19650304CANARY'] } };
      d.write();
    } catch (e) {
      thrown = e;
    }
    expect(String((thrown as Error).message)).toContain('19650304CANARY');
    const safe = safeError(thrown);
    expect(safe.code).toBe('internal_error');
    expect(safe.message).not.toContain('CANARY');
    expect(safe.message).toMatch(/^Internal error \(Error in dcmjs, called from src\/|^Internal error \(Error in dcmjs\)/);
  });

  it('unknown messages are withheld', () => {
    expect(safeDcmjsMessage('error', ['Something about', 'DOE^CANARY'])).not.toContain('CANARY');
    expect(safeDcmjsMessage('info', ['Value exceeds max length, vr: DA, value: 19650304000000, length: 14'])).toBe(
      'dicom writer info: a DA value exceeds its maximum length (value not logged)',
    );
  });
});

describe('one scope rule for an upload and the PACS watcher (issue 23 item 3)', () => {
  const SC = '1.2.840.10008.5.1.4.1.1.7'; // Secondary Capture Image Storage
  const CT = '1.2.840.10008.5.1.4.1.1.2'; // CT Image Storage
  const { computedRadiography: CR, digitalXRayForPresentation: DX } = RADIOGRAPH_SOP_CLASS;
  /** What an upload does with a file: refused (422), analysed with a DICOM warning, or analysed. */
  async function upload(file: Buffer): Promise<'refuse' | 'analyse-with-warning' | 'analyse'> {
    try {
      const d = await decodeImage(file);
      return d.notes.some((n) => n.startsWith(DICOM_WARNING)) ? 'analyse-with-warning' : 'analyse';
    } catch (e) {
      expect((e as PneumoError).code).toBe('outside_intended_use');
      return 'refuse';
    }
  }
  const cases: Array<[string, string, string, 'refuse' | 'analyse-with-warning' | 'analyse']> = [
    ['RG film', 'RG', CR, 'analyse'],
    ['RG film stored as a secondary capture', 'RG', SC, 'analyse'],
    ['CR', 'CR', CR, 'analyse'],
    ['DX', 'DX', DX, 'analyse'],
    ['DR', 'DR', DX, 'analyse'],
    ['DX stored as OT', 'OT', DX, 'analyse'],
    ['secondary capture', 'OT', SC, 'analyse-with-warning'],
    ['secondary capture, Modality SC', 'SC', SC, 'analyse-with-warning'],
    ['CT', 'CT', CT, 'refuse'],
    ['CT claiming a CR SOP class', 'CT', CR, 'refuse'],
  ];
  it.each(cases)('%s (Modality %s, SOP class %s): the decoder and the watcher agree', async (_, modality, sopClass, expected) => {
    const file = radiographDicom({
      pixels: new Uint8Array(64 * 64).map((_, i) => i % 251),
      width: 64,
      height: 64,
      study: '2.25.2001',
      series: '2.25.2002',
      sop: '2.25.2003',
      modality,
      sopClass,
      patient: [],
    });
    // The watcher sees the instance as Orthanc gives it: attributes by keyword (here dcmjs's reading).
    const tags = readDicom(file);
    expect([tags.Modality, tags.SOPClassUID]).toEqual([modality, sopClass]);
    expect(await upload(file)).toBe(expected);
    expect(dicomScope(tags).verdict).toBe(expected);
    // The watcher analyses a radiograph, and skips what an upload refuses or analyses only with a warning.
    expect(watcherScope(tags).analyse).toBe(expected === 'analyse');
  });
});
