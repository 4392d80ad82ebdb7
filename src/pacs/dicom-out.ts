/**
 * The DICOM objects pneumolens stores back into a study, written with dcmjs: a Secondary Capture
 * (the Grad-CAM overlay with the result burned in) and a Comprehensive SR (the values, referencing
 * the source image). UIDs are derived from the source instance and the model version, so writing
 * the same result twice gives the same instances, which the PACS keeps once.
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { declineSummary, type DeclineBasis } from '../gate/gate.ts';
import type { AnalysisResult } from '../types.ts';
import { copyAttributes, instanceNumber } from './attributes.ts';
import { drawText, GLYPH_H, GLYPH_W, wrap } from './font.ts';

/** The parts of dcmjs used here (it ships no types). */
interface Dcmjs {
  /** A loglevel logger (https://github.com/pimterry/loglevel); rebuild() applies methodFactory to it and its children. */
  log: { methodFactory: (methodName: string, level: number, loggerName: unknown) => (...args: unknown[]) => void; rebuild(): void };
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

/**
 * dcmjs logs through its own loglevel logger straight to the console, and its messages quote data
 * set values ("Truncating value <birth date> of PatientBirthDate ..."). Every message goes to
 * `dicomLog` instead: the known ones reduced to the attribute or VR they name, every other one
 * withheld. No value reaches a log.
 */
let dicomLog: (line: string) => void = (line) => process.stderr.write(line + '\n');

/** Where dcmjs's warnings and errors go (the PACS watcher passes its log), without values. */
export function routeDicomWriterLog(log: (line: string) => void): void {
  dicomLog = log;
}

/** A dcmjs log message in words that carry no value of the data set. */
export function safeDcmjsMessage(level: string, args: unknown[]): string {
  const text = args.map((a) => (typeof a === 'string' ? a : '')).join(' ');
  const truncated = / of ([A-Za-z0-9]{1,64}) because it is longer than (\d{1,6})$/.exec(text);
  if (text.startsWith('Truncating value ') && truncated) {
    return `dicom writer ${level}: a value of ${truncated[1]} was longer than ${truncated[2]} characters and was cut (value not logged)`;
  }
  const exceeds = /^Value exceeds max length, vr: ([A-Z]{2}),/.exec(text);
  if (exceeds) return `dicom writer ${level}: a ${exceeds[1]} value exceeds its maximum length (value not logged)`;
  if (text.startsWith('Unknown name in dataset')) return `dicom writer ${level}: an unknown attribute name in a data set (not logged)`;
  return `dicom writer ${level}: a message of dcmjs was withheld (it may quote data set values)`;
}

dcmjs.log.methodFactory = (methodName: string) => {
  return (...args: unknown[]) => dicomLog(safeDcmjsMessage(methodName, args));
};
dcmjs.log.rebuild();

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
  | {
      kind: 'refused';
      code: string;
      message: string;
      model: { name: string; version: string };
      /** For a gate decline: which test decided it (the SR says so in words). */
      basis?: DeclineBasis;
    };

function dicomNow(now: Date): { date: string; time: string } {
  const iso = now.toISOString(); // UTC: 2024-01-02T03:04:05.678Z
  return { date: iso.slice(0, 10).replace(/-/g, ''), time: iso.slice(11, 19).replace(/:/g, '') };
}

/**
 * The patient and study attributes (copied from the source, each valid by its VR: see
 * attributes.ts) and the dates of this instance. `warnings` says what was repaired or left empty.
 */
function common(tags: SourceTags, now: Date): { ds: Record<string, unknown>; warnings: string[] } {
  const { attributes, warnings } = copyAttributes(tags);
  const { date, time } = dicomNow(now);
  return {
    ds: {
      SpecificCharacterSet: 'ISO_IR 192',
      ...attributes,
      Manufacturer: MANUFACTURER,
      SeriesDate: date,
      SeriesTime: time,
      ContentDate: date,
      ContentTime: time,
      InstanceCreationDate: date,
      InstanceCreationTime: time,
    },
    warnings,
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

/** A probability for people: a percentage with one decimal (99.6%), never more digits than that. */
export const percent = (x: number): string => `${(Math.round(x * 1000) / 10).toFixed(1)}%`;

/** The label with its probability and threshold in words, as the SC caption and the SR say it. */
export function resultInWords(r: Pick<AnalysisResult, 'label' | 'probability' | 'threshold'>): string {
  return `${r.label}: probability of pneumonia ${percent(r.probability)} (decision threshold ${percent(r.threshold)})`;
}

/** Why an image was not analysed, in words: the gate's reason and what decided it, or the error code. */
export function notAnalysedInWords(outcome: Outcome & { kind: 'refused' }): string {
  const gate = outcome.code === 'not_a_chest_xray' || outcome.code === 'outside_intended_use';
  if (gate && (outcome.basis || outcome.code === 'not_a_chest_xray')) {
    return `Not analysed: ${declineSummary({ reason: outcome.code as 'not_a_chest_xray', ...(outcome.basis ? { basis: outcome.basis } : {}) })}`;
  }
  if (outcome.code === 'outside_intended_use') return 'Not analysed: outside the intended use';
  return `Not analysed: the image could not be analysed (${outcome.code})`;
}

/** The caption burned into the Secondary Capture. */
export function caption(outcome: Outcome): string[] {
  if (outcome.kind === 'refused') {
    const m = outcome.model;
    return [`pneumolens ${m.version}: ${notAnalysedInWords(outcome)}`, 'Research tool - not a medical device'];
  }
  const r = outcome.result;
  return [
    `pneumolens ${r.model.version}: ${resultInWords(r)}`,
    ...(r.uncertain ? ['Uncertain: refer to a clinician'] : []),
    ...(r.site ? [r.site.statement] : []),
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
  // The result line (the first) in yellow, also where it wraps; the rest in white.
  const lines = caption(outcome).flatMap((l, k) =>
    wrap(l, Math.max(1, Math.floor((width - 2 * margin) / charW))).map((text) => ({ text, k })),
  );
  const band = lines.length * lineH + 2 * margin;
  const H = height + band;
  const pixels = new Uint8Array(width * H * 3); // band stays black
  pixels.set(rgb.subarray(0, width * height * 3), width * band * 3);
  lines.forEach((l, i) =>
    drawText(pixels, width, H, margin, margin + i * lineH, l.text, scale, l.k === 0 ? [255, 255, 0] : [255, 255, 255]),
  );
  const ds: Record<string, unknown> = {
    ...common(tags, now).ds,
    SOPClassUID: SOP_CLASS.secondaryCapture,
    SOPInstanceUID: uids.sc,
    Modality: 'OT',
    ConversionType: 'WSD',
    SeriesInstanceUID: uids.scSeries,
    SeriesNumber: String(SERIES_NUMBER.sc),
    SeriesDescription: 'pneumolens Grad-CAM (not a medical device)',
    InstanceNumber: instanceNumber(tags.InstanceNumber),
    ImageType: ['DERIVED', 'SECONDARY'],
    DerivationDescription: `Grad-CAM overlay of ${r.model.name} ${r.model.version}; ${resultInWords(r)}. ${NOT_A_DEVICE}`,
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
    // Four significant digits: more would claim a precision a calibrated probability does not have.
    MeasuredValueSequence: [{ NumericValue: Number(value.toPrecision(4)), MeasurementUnitsCodeSequence: UNITLESS }],
  };
}

/** Local codes (99PNL) for values with no standard code. */
const C = {
  report: code('18748-4', 'LN', 'Diagnostic imaging report'),
  finding: code('121071', 'DCM', 'Finding'),
  summary: code('SUMMARY', '99PNL', 'Result in words'),
  reasonCode: code('REASON', '99PNL', 'Reason not analysed (code)'),
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
  site: code('SITE', '99PNL', 'Site profile'),
} as const;

/** The gate's verdict in words (scores only as "N times its limit": exp-form scores reach 1e16). */
function gateText(r: AnalysisResult): string {
  const g = r.gate;
  if (g.rejected) return `${declineSummary(g)}: ${g.reasons.join('; ')}`;
  const parts = ['passed the image checks'];
  if (g.score !== null && g.threshold !== null)
    parts.push("the model's gate score is within its limit (like the chest X-rays it was trained on)");
  if (g.scope !== null && g.scopeThreshold !== null)
    parts.push('its intended-use score is within its limit (like the validated population)');
  return `Accepted: ${parts.join('; ')}`;
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
    items.push(textItem(C.summary, resultInWords(r) + (r.uncertain ? '; uncertain: refer to a clinician' : '')));
    items.push(numItem(C.probability, r.probability));
    items.push(numItem(C.threshold, r.threshold));
    if (r.uncertainty !== null) items.push(numItem(C.uncertainty, r.uncertainty));
    items.push(textItem(C.gate, gateText(r)));
    if (r.site) items.push(textItem(C.site, r.site.statement));
    for (const w of r.warnings) items.push(textItem(C.warning, w));
  } else {
    items.push(textItem(C.finding, notAnalysedInWords(outcome)));
    items.push(textItem(C.reasonCode, outcome.code));
    items.push(textItem(C.gate, outcome.message));
  }
  // What could not be copied from the source as it was: the result still lands, and says so.
  const head = common(tags, opts.now ?? new Date());
  for (const w of head.warnings) items.push(textItem(C.warning, w));
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
    ...head.ds,
    SOPClassUID: SOP_CLASS.comprehensiveSR,
    SOPInstanceUID: uids.sr,
    Modality: 'SR',
    SeriesInstanceUID: uids.srSeries,
    SeriesNumber: String(SERIES_NUMBER.sr),
    SeriesDescription: 'pneumolens result (not a medical device)',
    InstanceNumber: instanceNumber(tags.InstanceNumber),
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
