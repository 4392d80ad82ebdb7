/**
 * Which patient each of the site's films belongs to, so that no patient is in two folds: from a
 * `labels.csv` beside the class folders with at least the columns `file` (relative to the folder)
 * and `patient_id`. Without it every file is its own group. The ids are only compared, never
 * written or logged.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Splits CSV text into rows of fields (RFC 4180 quoting, CRLF or LF). */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"' && field === '') quoted = true;
    else if (ch === ',') {
      row.push(field);
      field = '';
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && text[i + 1] === '\n') i++;
      row.push(field);
      if (row.length > 1 || row[0] !== '') rows.push(row);
      row = [];
      field = '';
    } else field += ch;
  }
  if (field !== '' || row.length > 0) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

export interface Grouping {
  source: 'patient_id (labels.csv)' | 'file';
  /** Relative path (forward slashes) -> patient id. */
  patients: Map<string, string>;
}

const norm = (p: string) => p.replace(/\\/g, '/').replace(/^\.\//, '');

/** Reads DIR/labels.csv if there is one; throws a message naming the problem when it is unusable. */
export async function readGrouping(dir: string): Promise<Grouping> {
  let text: string;
  try {
    text = await readFile(join(dir, 'labels.csv'), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { source: 'file', patients: new Map() };
    throw new Error(`labels.csv: ${(e as Error).message}`, { cause: e });
  }
  const [head, ...rows] = parseCsv(text);
  const col = (name: string) => (head ?? []).findIndex((h) => h.trim().toLowerCase() === name);
  const fileCol = col('file');
  const patientCol = col('patient_id');
  if (fileCol < 0 || patientCol < 0) throw new Error('labels.csv needs the columns file and patient_id (file relative to the folder)');
  const patients = new Map<string, string>();
  for (const r of rows) {
    const file = r[fileCol]?.trim();
    const patient = r[patientCol]?.trim();
    if (file && patient) patients.set(norm(file), patient);
  }
  return { source: 'patient_id (labels.csv)', patients };
}

/** The group of a film: its patient where labels.csv names one, else the file itself. */
export function groupOf(grouping: Grouping, relPath: string): { group: string; known: boolean } {
  const rel = norm(relPath);
  const patient = grouping.patients.get(rel);
  return patient === undefined ? { group: `file:${rel}`, known: false } : { group: `patient:${patient}`, known: true };
}
