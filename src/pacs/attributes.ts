/**
 * The patient and study attributes a result copies from its source instance, checked against the
 * DICOM value representations (PS3.5 6.2) before dcmjs sees them, so that whatever the source
 * carries, writing the result cannot fail. What is valid is copied. What is not is repaired when the
 * repair cannot change its meaning (a date written 1970-01-01 or with a time, a time with colons, a
 * name or description cut to its maximum length) or left empty (a birth date that is no date, a sex
 * that is not M/F/O). Identifiers are the exception: the archive files a result with its patient and
 * study by them (Orthanc by PatientID + StudyInstanceUID), and a cut or emptied identifier files it
 * under another patient, or names another one. So an identifier that breaks its VR's rules (too long,
 * several values) is copied exactly as the source holds it (up to 1024 bytes), which dcmjs writes (text VRs' lengths are
 * not enforced by it) and an archive that took the source takes too. Each repair, omission or
 * unchanged copy of an invalid value is a warning for the SR, naming the attribute, never its value.
 *
 * The values come from Orthanc's simplified tags: text already decoded from the source's Specific
 * Character Set, so non-ASCII names arrive as Unicode and are written as UTF-8 (ISO_IR 192).
 */

/** What a result must carry to join its source: the UIDs it references. */
export const SOURCE_UIDS = ['StudyInstanceUID', 'SeriesInstanceUID', 'SOPInstanceUID', 'SOPClassUID'] as const;

type Kind =
  | { vr: 'PN'; max: 64 }
  | { vr: 'LO' | 'SH'; max: number; identifier: boolean }
  | { vr: 'DA' }
  | { vr: 'TM' }
  | { vr: 'CS'; allowed: readonly string[] }
  | { vr: 'UI' };

/** The attributes copied from the source, with their VR and how an invalid value is treated. */
export const COPIED: ReadonlyArray<readonly [string, Kind]> = [
  ['PatientName', { vr: 'PN', max: 64 }],
  ['PatientID', { vr: 'LO', max: 64, identifier: true }],
  ['IssuerOfPatientID', { vr: 'LO', max: 64, identifier: true }],
  ['PatientBirthDate', { vr: 'DA' }],
  ['PatientSex', { vr: 'CS', allowed: ['M', 'F', 'O'] }],
  ['StudyInstanceUID', { vr: 'UI' }],
  ['StudyDate', { vr: 'DA' }],
  ['StudyTime', { vr: 'TM' }],
  ['StudyID', { vr: 'SH', max: 16, identifier: true }],
  ['AccessionNumber', { vr: 'SH', max: 16, identifier: true }],
  ['ReferringPhysicianName', { vr: 'PN', max: 64 }],
  ['StudyDescription', { vr: 'LO', max: 64, identifier: false }],
];

/** Type 2 attributes of the patient and study modules: present, empty when unknown. */
const TYPE2 = new Set([
  'PatientName',
  'PatientID',
  'PatientBirthDate',
  'PatientSex',
  'StudyDate',
  'StudyTime',
  'StudyID',
  'AccessionNumber',
  'ReferringPhysicianName',
]);

/** Longest identifier copied unchanged when it breaks its VR's length (16-bit explicit-VR lengths end at 65534). */
const MAX_IDENTIFIER_BYTES = 1024;

/** A valid UID (PS3.5 9.1): digits and dots, components without a leading zero, at most 64 characters. */
export function isValidUid(v: unknown): v is string {
  return typeof v === 'string' && v.length <= 64 && /^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$/.test(v);
}

/** The source UIDs a result needs that are missing or invalid (names only). */
export function invalidSourceUids(tags: Record<string, unknown>): string[] {
  return SOURCE_UIDS.filter((k) => !isValidUid(typeof tags[k] === 'string' ? (tags[k] as string).trim() : tags[k]));
}

/** Control characters (C0, DEL, C1) are not allowed in text VRs except ESC, which UTF-8 text does not need. */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;

/** At most `max` characters, counted both as characters and as UTF-16 units (dcmjs counts the latter). */
function cut(s: string, max: number): string {
  let out = '';
  for (const ch of s) {
    if (out.length + ch.length > max) break;
    out += ch;
  }
  return out;
}

function validDate(y: number, m: number, d: number): boolean {
  if (y < 1 || m < 1 || m > 12 || d < 1) return false;
  return d <= new Date(Date.UTC(y, m, 0)).getUTCDate();
}

/** YYYYMMDD; repairs YYYY.MM.DD (ACR-NEMA), YYYY-MM-DD, YYYY/MM/DD and a date followed by a time. */
function date(v: string): { value: string; repaired: boolean } | null {
  const m =
    /^(\d{4})(\d{2})(\d{2})$/.exec(v) ??
    /^(\d{4})[.\-/](\d{2})[.\-/](\d{2})$/.exec(v) ??
    /^(\d{4})(\d{2})(\d{2})(?:[T ]?\d{2,6}(?:\.\d{1,6})?(?:[+-]\d{4})?)$/.exec(v);
  if (!m || !validDate(+m[1], +m[2], +m[3])) return null;
  const value = `${m[1]}${m[2]}${m[3]}`;
  return { value, repaired: value !== v };
}

/** HH[MM[SS[.FFFFFF]]]; repairs HH:MM[:SS[.F]]. */
function time(v: string): { value: string; repaired: boolean } | null {
  const plain = /^(\d{2})(?:(\d{2})(?:(\d{2})(\.\d{1,6})?)?)?$/.exec(v);
  const colons = plain ? null : /^(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,6})?)?$/.exec(v);
  const m = plain ?? colons;
  if (!m) return null;
  if (+m[1] > 23 || (m[2] !== undefined && +m[2] > 59) || (m[3] !== undefined && +m[3] > 60)) return null;
  const value = `${m[1]}${m[2] ?? ''}${m[3] ?? ''}${m[4] ?? ''}`;
  return { value, repaired: value !== v };
}

export interface CopiedAttributes {
  /** dcmjs naturalized attributes (PN as [{ Alphabetic, ... }]), every Type 2 attribute present. */
  attributes: Record<string, unknown>;
  /** One sentence per attribute repaired or left empty; names only, never values. */
  warnings: string[];
  /** The keywords of those attributes. */
  changed: string[];
}

/** The patient and study attributes of `tags` that a result can carry, valid by their VR. */
export function copyAttributes(tags: Record<string, unknown>): CopiedAttributes {
  const attributes: Record<string, unknown> = {};
  const warnings: string[] = [];
  const changed: string[] = [];
  const note = (k: string, what: string) => {
    warnings.push(`Source attribute ${k} ${what}.`);
    changed.push(k);
  };
  for (const [k, kind] of COPIED) {
    const raw = tags[k];
    if (raw === undefined || raw === null) continue;
    if (typeof raw !== 'string') {
      note(k, 'is not a single text value; left empty in this result');
      continue;
    }
    let v = raw.trim();
    if (v === '') continue;
    switch (kind.vr) {
      case 'UI':
        if (isValidUid(v)) attributes[k] = v;
        else note(k, 'is not a valid DICOM UID; left out of this result');
        break;
      case 'DA':
      case 'TM': {
        const d = kind.vr === 'DA' ? date(v) : time(v);
        const name = kind.vr === 'DA' ? 'date (DA)' : 'time (TM)';
        if (!d) note(k, `is not a valid DICOM ${name}; left empty in this result`);
        else {
          attributes[k] = d.value;
          if (d.repaired) note(k, `was not written as a DICOM ${name}; rewritten in the standard form`);
        }
        break;
      }
      case 'CS': {
        const u = v.toUpperCase();
        if (kind.allowed.includes(u)) {
          attributes[k] = u;
          if (u !== v) note(k, 'was not in upper case; rewritten');
        } else note(k, `is not one of ${kind.allowed.join(', ')}; left empty in this result`);
        break;
      }
      case 'LO':
      case 'SH': {
        const clean = v.replace(CONTROL, '');
        const multi = clean.includes('\\');
        const tooLong = [...clean].length > kind.max || clean.length > kind.max;
        if (kind.identifier) {
          if (Buffer.byteLength(raw, 'utf8') > MAX_IDENTIFIER_BYTES) {
            // Far beyond any archive's identifier, and past what an explicit-VR element can hold.
            note(k, `is longer than ${MAX_IDENTIFIER_BYTES} bytes; left empty in this result`);
            break;
          }
          attributes[k] = raw;
          if (clean !== v || multi || tooLong) {
            const why = tooLong
              ? `is longer than DICOM allows (${kind.vr}: ${kind.max} characters)`
              : multi
                ? 'holds several values where DICOM allows one'
                : 'contains control characters';
            note(k, `${why}; copied unchanged, as an identifier must not be altered (the result is filed with its source by it)`);
          }
        } else {
          v = cut(clean.replace(/\\/g, ' ').trim(), kind.max);
          if (v !== raw.trim()) note(k, `did not fit DICOM's ${kind.vr} (at most ${kind.max} characters of text); shortened or cleaned`);
          if (v) attributes[k] = v;
        }
        break;
      }
      case 'PN': {
        // Orthanc writes the component groups as Alphabetic=Ideographic=Phonetic.
        const clean = v.replace(CONTROL, '').replace(/\\/g, ' ');
        const groups = clean.split('=').slice(0, 3);
        const fixed = groups.map((g) =>
          cut(
            g
              .split('^')
              .slice(0, 5)
              .map((c) => c.trim())
              .join('^'),
            kind.max,
          ),
        );
        if (fixed.join('=') !== v)
          note(k, `did not fit DICOM's PN (at most 5 components, ${kind.max} characters per group); shortened or cleaned`);
        const pn: Record<string, string> = {};
        (['Alphabetic', 'Ideographic', 'Phonetic'] as const).forEach((name, i) => {
          if (fixed[i]) pn[name] = fixed[i];
        });
        if (Object.keys(pn).length > 0) attributes[k] = [pn];
        break;
      }
    }
  }
  for (const k of TYPE2) if (!(k in attributes)) attributes[k] = '';
  return { attributes, warnings, changed };
}

/** Integer String (IS) of a source InstanceNumber, or the default. */
export function instanceNumber(v: unknown, fallback = 1): string {
  const n = typeof v === 'string' && /^\s*[+-]?\d{1,10}\s*$/.test(v) ? Number(v) : NaN;
  return String(Number.isSafeInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 ? n : fallback);
}
