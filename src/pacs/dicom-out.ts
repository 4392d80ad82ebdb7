/**
 * The DICOM objects pneumolens stores back into a study, written with dcmjs: a Secondary Capture
 * (the Grad-CAM overlay with the result burned in) and a Comprehensive SR (the values, referencing
 * the source image). UIDs are derived from the source instance and the model version, so writing
 * the same result twice gives the same instances, which the PACS keeps once.
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import type { AnalysisResult } from '../types.ts';
import { drawText, GLYPH_H, GLYPH_W, wrap } from './font.ts';

/** The parts of dcmjs used here (it ships no types). */
interface Dcmjs {
  data: {
    DicomDict: new (meta: Record<string, unknown>) => { dict: Record<string, unknown>; write(): ArrayBuffer };
    DicomMetaDictionary: {
      denaturalizeDataset(ds: Record<string, unknown>): Record<string, unknown>;
      naturalizeDataset(ds: Record<string, unknown>): Record<string, unknown>;
    };
    DicomMessage: { readFile(buffer: ArrayBuffer): { meta: Record<string, unknown>; dict: Record<string, unknown> } };
  };
}
const dcmjs = createRequire(import.meta.url)('dcmjs') as Dcmjs;
const { DicomDict, DicomMetaDictionary, DicomMessage } = dcmjs.data;

export const SOP_CLASS = {
  secondaryCapture: '1.2.840.10008.5.1.4.1.1.7',
  comprehensiveSR: '1.2.840.10008.5.1.4.1.1.88.33',
} as const;
const EXPLICIT_LE = '1.2.840.10008.1.2.1';
/** Written as Manufacturer of every instance pneumolens creates; the watcher never analyses these. */
export const MANUFACTURER = 'pneumolens';
export const NOT_A_DEVICE = 'Research and education tool, not a medical device. Not for diagnosis, treatment or triage.';
const SERIES_NUMBER = { sc: 9901, sr: 9902 } as const;

/** A UID under 2.25 from a SHA-256 of the parts: stable across runs and machines. */
export function derivedUid(...parts: string[]): string {
  const hex = createHash('sha256').update(parts.join('\u0000')).digest('hex').slice(0, 32);
  return '2.25.' + BigInt('0x' + hex).toString();
}

/** The source instance's tags (Orthanc's simplified tags: keyword -> string). */
export type SourceTags = Record<string, unknown>;

/** Patient and study tags copied from the source, so the result joins the same patient and study. */
const COPIED = [
  'PatientName',
  'PatientID',
  'IssuerOfPatientID',
  'PatientBirthDate',
  'PatientSex',
  'StudyInstanceUID',
  'StudyDate',
  'StudyTime',
  'StudyID',
  'AccessionNumber',
  'ReferringPhysicianName',
  'StudyDescription',
] as const;

export interface ResultUids {
  scSeries: string;
  srSeries: string;
  sc: string;
  sr: string;
}

/** The UIDs of what pneumolens writes for one source instance with one model version. */
export function resultUids(tags: SourceTags, model: { name: string; version: string }): ResultUids {
  const study = String(tags.StudyInstanceUID ?? '');
  const sop = String(tags.SOPInstanceUID ?? '');
  const m = `${model.name}@${model.version}`;
  return {
    scSeries: derivedUid('pneumolens', 'sc-series', study, m),
    srSeries: derivedUid('pneumolens', 'sr-series', study, m),
    sc: derivedUid('pneumolens', 'sc', sop, m),
    sr: derivedUid('pneumolens', 'sr', sop, m),
  };
}

/** What happened to one source image, as the SR reports it. */
export type Outcome =
  | { kind: 'analysed'; result: AnalysisResult }
  | { kind: 'refused'; code: string; message: string; model: { name: string; version: string } };

function dicomNow(now: Date): { date: string; time: string } {
  const iso = now.toISOString(); // UTC: 2024-01-02T03:04:05.678Z
  return { date: iso.slice(0, 10).replace(/-/g, ''), time: iso.slice(11, 19).replace(/:/g, '') };
}

function common(tags: SourceTags, now: Date): Record<string, unknown> {
  const out: Record<string, unknown> = { SpecificCharacterSet: 'ISO_IR 192' };
  for (const k of COPIED) {
    const v = tags[k];
    if (typeof v === 'string' && v !== '') out[k] = k === 'PatientName' || k === 'ReferringPhysicianName' ? [{ Alphabetic: v }] : v;
  }
  // Type 2 study attributes present even when the source left them out.
  for (const k of [
    'PatientName',
    'PatientID',
    'PatientBirthDate',
    'PatientSex',
    'StudyDate',
    'StudyTime',
    'StudyID',
    'AccessionNumber',
    'ReferringPhysicianName',
  ]) {
    if (!(k in out)) out[k] = '';
  }
  const { date, time } = dicomNow(now);
  return {
    ...out,
    Manufacturer: MANUFACTURER,
    SeriesDate: date,
    SeriesTime: time,
    ContentDate: date,
    ContentTime: time,
    InstanceCreationDate: date,
    InstanceCreationTime: time,
  };
}

function write(ds: Record<string, unknown>): Buffer {
  for (const k of Object.keys(ds)) if (ds[k] === undefined) delete ds[k];
  const version = new Uint8Array([0, 1]);
  const meta = {
    FileMetaInformationVersion: version.buffer,
    MediaStorageSOPClassUID: ds.SOPClassUID,
    MediaStorageSOPInstanceUID: ds.SOPInstanceUID,
    TransferSyntaxUID: EXPLICIT_LE,
    ImplementationClassUID: derivedUid('pneumolens', 'implementation'),
    ImplementationVersionName: 'PNEUMOLENS',
  };
  const dict = new DicomDict(DicomMetaDictionary.denaturalizeDataset(meta));
  dict.dict = DicomMetaDictionary.denaturalizeDataset(ds);
  return Buffer.from(dict.write());
}

const sourceRef = (tags: SourceTags) => ({
  ReferencedSOPClassUID: String(tags.SOPClassUID ?? ''),
  ReferencedSOPInstanceUID: String(tags.SOPInstanceUID ?? ''),
});

const fmt = (x: number, digits = 3) => x.toFixed(digits);

/** The caption burned into the Secondary Capture. */
export function caption(outcome: Outcome): string[] {
  if (outcome.kind === 'refused') {
    const m = outcome.model;
    return [`pneumolens ${m.version}: not analysed (${outcome.code})`, 'Research tool - not a medical device'];
  }
  const r = outcome.result;
  return [
    `pneumolens ${r.model.version}: ${r.label} p=${fmt(r.probability)} (threshold ${fmt(r.threshold)})`,
    ...(r.uncertain ? ['Uncertain: refer to a clinician'] : []),
    'Research tool - not a medical device',
  ];
}

/**
 * The Secondary Capture: `rgb` (the overlay, interleaved RGB) with a black caption band on top
 * holding the label, probability, threshold, model version and "not a medical device".
 */
export function secondaryCapture(
  tags: SourceTags,
  outcome: Outcome & { kind: 'analysed' },
  rgb: Uint8Array,
  width: number,
  height: number,
  now = new Date(),
): Buffer {
  const r = outcome.result;
  const uids = resultUids(tags, r.model);
  const scale = Math.max(1, Math.floor(width / 320));
  const charW = (GLYPH_W + 1) * scale;
  const lineH = (GLYPH_H + 3) * scale;
  const margin = 2 * scale;
  const lines = caption(outcome).flatMap((l) => wrap(l, Math.max(1, Math.floor((width - 2 * margin) / charW))));
  const band = lines.length * lineH + 2 * margin;
  const H = height + band;
  const pixels = new Uint8Array(width * H * 3); // band stays black
  pixels.set(rgb.subarray(0, width * height * 3), width * band * 3);
  lines.forEach((l, i) => drawText(pixels, width, H, margin, margin + i * lineH, l, scale, i === 0 ? [255, 255, 0] : [255, 255, 255]));
  const ds: Record<string, unknown> = {
    ...common(tags, now),
    SOPClassUID: SOP_CLASS.secondaryCapture,
    SOPInstanceUID: uids.sc,
    Modality: 'OT',
    ConversionType: 'WSD',
    SeriesInstanceUID: uids.scSeries,
    SeriesNumber: String(SERIES_NUMBER.sc),
    SeriesDescription: 'pneumolens Grad-CAM (not a medical device)',
    InstanceNumber: String(Number(tags.InstanceNumber) || 1),
    ImageType: ['DERIVED', 'SECONDARY'],
    DerivationDescription: `Grad-CAM overlay of ${r.model.name} ${r.model.version}; ${r.label} p=${fmt(r.probability)} threshold ${fmt(r.threshold)}. ${NOT_A_DEVICE}`,
    SourceImageSequence: [sourceRef(tags)],
    ManufacturerModelName: r.model.name,
    SoftwareVersions: r.model.version,
    BurnedInAnnotation: 'YES',
    SamplesPerPixel: 3,
    PhotometricInterpretation: 'RGB',
    PlanarConfiguration: 0,
    Rows: H,
    Columns: width,
    BitsAllocated: 8,
    BitsStored: 8,
    HighBit: 7,
    PixelRepresentation: 0,
    LossyImageCompression: '00',
    PixelData: [pixels.buffer.slice(pixels.byteOffset, pixels.byteOffset + pixels.byteLength)],
    _vrMap: { PixelData: 'OB' },
  };
  return write(ds);
}

const code = (value: string, scheme: string, meaning: string) => [
  { CodeValue: value, CodingSchemeDesignator: scheme, CodeMeaning: meaning },
];
const UNITLESS = code('1', 'UCUM', 'no units');

function textItem(concept: ReturnType<typeof code>, text: string): Record<string, unknown> {
  // TextValue (UT) holds up to 2^32-2 characters; keep items readable.
  return { RelationshipType: 'CONTAINS', ValueType: 'TEXT', ConceptNameCodeSequence: concept, TextValue: text.slice(0, 1024) };
}

function numItem(concept: ReturnType<typeof code>, value: number): Record<string, unknown> {
  return {
    RelationshipType: 'CONTAINS',
    ValueType: 'NUM',
    ConceptNameCodeSequence: concept,
    MeasuredValueSequence: [{ NumericValue: Number(value.toPrecision(6)), MeasurementUnitsCodeSequence: UNITLESS }],
  };
}

/** Local codes (99PNL) for values with no standard code. */
const C = {
  report: code('18748-4', 'LN', 'Diagnostic imaging report'),
  finding: code('121071', 'DCM', 'Finding'),
  probability: code('PROB', '99PNL', 'Calibrated probability of pneumonia'),
  threshold: code('THRESH', '99PNL', 'Decision threshold'),
  uncertainty: code('UNC', '99PNL', 'Ensemble uncertainty'),
  gate: code('GATE', '99PNL', 'Input gate result'),
  warning: code('WARN', '99PNL', 'Warning'),
  algorithmName: code('111001', 'DCM', 'Algorithm Name'),
  algorithmVersion: code('111003', 'DCM', 'Algorithm Version'),
  disclaimer: code('DISCLAIM', '99PNL', 'Intended use'),
  source: code('121112', 'DCM', 'Source of Measurement'),
  overlay: code('GRADCAM', '99PNL', 'Grad-CAM overlay'),
} as const;

function gateText(r: AnalysisResult): string {
  const g = r.gate;
  const score = g.score !== null ? ` score ${fmt(g.score)} (threshold ${g.threshold !== null ? fmt(g.threshold) : 'none'})` : '';
  return g.rejected ? `rejected: ${g.reason ?? 'not_a_chest_xray'}${score}; ${g.reasons.join('; ')}` : `accepted${score}`;
}

/**
 * The Structured Report: finding (label, or "not analysed: reason"), probability, threshold,
 * uncertainty, gate result, model name/version, the disclaimer, and references to the source image
 * (and to the Secondary Capture when there is one).
 */
export function structuredReport(tags: SourceTags, outcome: Outcome, opts: { withSc: boolean; now?: Date }): Buffer {
  const model = outcome.kind === 'analysed' ? outcome.result.model : outcome.model;
  const uids = resultUids(tags, model);
  const items: Record<string, unknown>[] = [];
  if (outcome.kind === 'analysed') {
    const r = outcome.result;
    items.push(textItem(C.finding, r.label));
    items.push(numItem(C.probability, r.probability));
    items.push(numItem(C.threshold, r.threshold));
    if (r.uncertainty !== null) items.push(numItem(C.uncertainty, r.uncertainty));
    items.push(textItem(C.gate, gateText(r)));
    for (const w of r.warnings) items.push(textItem(C.warning, w));
  } else {
    items.push(textItem(C.finding, `not analysed: ${outcome.code}`));
    items.push(textItem(C.gate, `${outcome.code}: ${outcome.message}`));
  }
  items.push(textItem(C.algorithmName, model.name));
  items.push(textItem(C.algorithmVersion, model.version));
  items.push(textItem(C.disclaimer, NOT_A_DEVICE));
  items.push({
    RelationshipType: 'CONTAINS',
    ValueType: 'IMAGE',
    ConceptNameCodeSequence: C.source,
    ReferencedSOPSequence: [sourceRef(tags)],
  });
  if (opts.withSc) {
    items.push({
      RelationshipType: 'CONTAINS',
      ValueType: 'IMAGE',
      ConceptNameCodeSequence: C.overlay,
      ReferencedSOPSequence: [{ ReferencedSOPClassUID: SOP_CLASS.secondaryCapture, ReferencedSOPInstanceUID: uids.sc }],
    });
  }
  const evidence = [
    {
      StudyInstanceUID: String(tags.StudyInstanceUID ?? ''),
      ReferencedSeriesSequence: [
        { SeriesInstanceUID: String(tags.SeriesInstanceUID ?? ''), ReferencedSOPSequence: [sourceRef(tags)] },
        ...(opts.withSc
          ? [
              {
                SeriesInstanceUID: uids.scSeries,
                ReferencedSOPSequence: [{ ReferencedSOPClassUID: SOP_CLASS.secondaryCapture, ReferencedSOPInstanceUID: uids.sc }],
              },
            ]
          : []),
      ],
    },
  ];
  const ds: Record<string, unknown> = {
    ...common(tags, opts.now ?? new Date()),
    SOPClassUID: SOP_CLASS.comprehensiveSR,
    SOPInstanceUID: uids.sr,
    Modality: 'SR',
    SeriesInstanceUID: uids.srSeries,
    SeriesNumber: String(SERIES_NUMBER.sr),
    SeriesDescription: 'pneumolens result (not a medical device)',
    InstanceNumber: String(Number(tags.InstanceNumber) || 1),
    ManufacturerModelName: model.name,
    SoftwareVersions: model.version,
    ReferencedPerformedProcedureStepSequence: [],
    PerformedProcedureCodeSequence: [],
    CurrentRequestedProcedureEvidenceSequence: evidence,
    ValueType: 'CONTAINER',
    ConceptNameCodeSequence: C.report,
    ContinuityOfContent: 'SEPARATE',
    CompletionFlag: 'COMPLETE',
    VerificationFlag: 'UNVERIFIED',
    ContentSequence: items,
  };
  return write(ds);
}

/** Reads a DICOM file written here (or any) into dcmjs's naturalized form; for tests and checks. */
export function readDicom(file: Uint8Array): Record<string, unknown> {
  const buf = file.buffer.slice(file.byteOffset, file.byteOffset + file.byteLength) as ArrayBuffer;
  return DicomMetaDictionary.naturalizeDataset(DicomMessage.readFile(buf).dict);
}
