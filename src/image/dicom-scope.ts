/**
 * Which DICOM images pneumolens analyses: the one rule, used by the decoder (an upload, src/image/
 * dicom.ts) and by the PACS watcher (src/pacs/watcher.ts), over attributes named by their DICOM
 * keywords (what dcmjs and Orthanc's simplified tags call them).
 *
 * The intended use is frontal chest radiographs. Modality and SOP Class UID are written by the
 * device and reliable:
 * - Modality CR, DX, DR or RG, or (whatever the Modality says, unless it names another kind of
 *   image) a projection radiograph's SOP class: analyse.
 * - Modality OT, SC, XC or DOC (an image that may be anything, a scanned or captured radiograph
 *   too), or no Modality with a SOP class that is not a radiograph's: analyse with a warning.
 * - Any other Modality (CT, MR, US, MG, NM, PT, XA, RF, IO, PX, ...): refuse (422 outside_intended_use).
 * - Neither Modality nor SOP Class UID (a raw data set): analyse; the image-based input gate decides.
 * View Position and Body Part Examined are typed by people, often empty, free text or wrong: a
 * lateral view or a non-chest body part is a warning and never changes the verdict.
 *
 * The decoder analyses both 'analyse' and 'analyse-with-warning' (an upload is a person's choice,
 * and the warning reaches them); the watcher, unattended, analyses only 'analyse' (see watcher.ts).
 */

/** Modalities of a projection radiograph: CR, DX, RG (film/screen, e.g. digitised film) and the DR some devices write. */
export const RADIOGRAPH_MODALITIES: ReadonlySet<string> = new Set(['CR', 'DX', 'DR', 'RG']);
/** Modalities whose images may be anything, including a scanned or captured radiograph. */
export const ANY_IMAGE_MODALITIES: ReadonlySet<string> = new Set(['OT', 'SC', 'XC', 'DOC']);

/** The SOP classes of projection radiographs (PS3.4 B.5), with their standard names. */
export const RADIOGRAPH_SOP_CLASS = {
  computedRadiography: '1.2.840.10008.5.1.4.1.1.1',
  digitalXRayForPresentation: '1.2.840.10008.5.1.4.1.1.1.1',
  digitalXRayForProcessing: '1.2.840.10008.5.1.4.1.1.1.1.1',
} as const;
export const RADIOGRAPH_SOP_CLASSES: ReadonlyMap<string, string> = new Map([
  [RADIOGRAPH_SOP_CLASS.computedRadiography, 'Computed Radiography Image Storage'],
  [RADIOGRAPH_SOP_CLASS.digitalXRayForPresentation, 'Digital X-Ray Image Storage - For Presentation'],
  [RADIOGRAPH_SOP_CLASS.digitalXRayForProcessing, 'Digital X-Ray Image Storage - For Processing'],
]);

const CHEST_BODY_PART = /CHEST|THORAX|THORAC|TORAX|LUNG|BRUST|POUMON|PECHO/;
const LATERAL_VIEW = /^(LL|RL|LAT|LATERAL|LLD|RLD|LLO|RLO)$|LATERAL/;

/** A warning the pipeline passes to the user (see warningsFor in src/pipeline.ts). */
export const DICOM_WARNING = 'DICOM warning: ';

/**
 * A DICOM string as it may be echoed back to the user (an error or a warning): letters, digits,
 * space, '_' and '-' only, at most 16 characters (the CS length), so no markup, control characters
 * or long text from a file reach an answer.
 */
export function safeDicomText(s: string): string {
  return s.replace(/[^A-Z0-9_ -]/gi, '').slice(0, 16);
}

/** The attributes the rule reads, by keyword; values as a DICOM reader gives them (strings; anything else counts as absent). */
export interface ScopeAttributes {
  Modality?: unknown;
  SOPClassUID?: unknown;
  ViewPosition?: unknown;
  BodyPartExamined?: unknown;
}

export type ScopeVerdict =
  /** A radiograph: analysed; `warnings` (view, body part) go to the user. */
  | { verdict: 'analyse'; warnings: string[] }
  /** May not be a radiograph: an upload is analysed with `warnings` (the first says why); the watcher skips it. */
  | { verdict: 'analyse-with-warning'; reason: string; warnings: string[] }
  /** Not a radiograph: refused before any pixel is decoded (422 outside_intended_use); the watcher skips it. */
  | { verdict: 'refuse'; reason: string };

const text = (v: unknown): string => (typeof v === 'string' ? v.replace(/\0/g, '').trim() : '');

/** The scope verdict of a DICOM image from its Modality, SOP Class UID, View Position and Body Part Examined. */
export function dicomScope(a: ScopeAttributes): ScopeVerdict {
  const modality = text(a.Modality).toUpperCase();
  const sopClass = text(a.SOPClassUID);
  const radiographClass = RADIOGRAPH_SOP_CLASSES.has(sopClass);
  let reason: string | undefined;
  if (modality && !RADIOGRAPH_MODALITIES.has(modality)) {
    if (!ANY_IMAGE_MODALITIES.has(modality)) {
      return {
        verdict: 'refuse',
        reason: `The DICOM Modality is ${safeDicomText(modality)}, not a radiograph; pneumolens reads frontal chest radiographs (CR, DX).`,
      };
    }
    if (!radiographClass) reason = `Modality ${safeDicomText(modality)} (not CR/DX): the image may not be a chest radiograph.`;
  } else if (!modality && sopClass && !radiographClass) {
    const uid = sopClass.replace(/[^0-9.]/g, '').slice(0, 64);
    reason = `no Modality, and the SOP Class UID ${uid} is not a radiograph's: the image may not be a chest radiograph.`;
  }
  const warnings = reason ? [`${DICOM_WARNING}${reason}`] : [];
  const view = text(a.ViewPosition).toUpperCase();
  if (view && LATERAL_VIEW.test(view)) {
    warnings.push(
      `${DICOM_WARNING}View Position ${safeDicomText(view)} is a lateral view; the model was trained on frontal (PA/AP) views only.`,
    );
  }
  const bodyPart = text(a.BodyPartExamined).toUpperCase();
  if (bodyPart && !CHEST_BODY_PART.test(bodyPart))
    warnings.push(`${DICOM_WARNING}Body Part Examined is ${safeDicomText(bodyPart)}, not chest.`);
  return reason ? { verdict: 'analyse-with-warning', reason, warnings } : { verdict: 'analyse', warnings };
}
