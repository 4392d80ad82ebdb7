/**
 * Predict output: one row per file, rendered as an aligned table, CSV or JSON. Columns are listed
 * once in COLUMNS; JSON carries every result field except the bulky ones, so fields the engine adds
 * later (e.g. rejected / reason / uncertainty) appear without changes here.
 */
import type { AnalysisResult } from '../types.ts';
import type { FileOutcome } from './batch.ts';

export interface PredictRow extends FileOutcome {
  /** Path of the written Grad-CAM overlay, with --cam. */
  camFile?: string;
}

export const REJECTED_LABEL = 'REJECTED: not a chest X-ray';
export const DECLINED_LABEL = 'DECLINED: outside the intended use';

interface Column {
  header: string;
  value(row: PredictRow): string;
  /** Shorter form for the table (default: value). */
  display?(row: PredictRow): string;
}

const prob = (r: AnalysisResult): string => r.probability.toFixed(4);
/**
 * The result whose prediction may be shown: only an analysed one (the engine's outcome; a forced
 * analysis of a gate-rejected image is analysed, and marked). Rejected images show no label.
 */
const shown = (row: PredictRow): AnalysisResult | undefined => (row.status === 'analysed' ? row.result : undefined);

function labelDisplay(row: PredictRow): string {
  const r = row.result;
  if (!r) return '';
  if (row.status === 'rejected') return r.reason === 'outside_intended_use' ? DECLINED_LABEL : REJECTED_LABEL;
  const marks = [
    ...(r.rejected ? [r.reason === 'outside_intended_use' ? 'forced: outside the intended use' : 'forced: not a chest X-ray?'] : []),
    ...(r.uncertain ? ['uncertain: refer to a clinician'] : []),
  ];
  return marks.length ? `${r.label} (${marks.join('; ')})` : r.label;
}

export const COLUMNS: Column[] = [
  { header: 'file', value: (row) => row.file },
  { header: 'label', value: (row) => shown(row)?.label ?? '', display: labelDisplay },
  { header: 'probability', value: (row) => (shown(row) ? prob(row.result!) : '') },
  {
    header: 'threshold',
    value: (row) => (shown(row) ? String(row.result!.threshold) : ''),
    display: (row) => (shown(row) ? String(Number(row.result!.threshold.toFixed(4))) : ''),
  },
  {
    header: 'uncertainty',
    value: (row) => (shown(row) && row.result!.uncertainty !== null ? row.result!.uncertainty.toFixed(4) : ''),
  },
  { header: 'uncertain', value: (row) => (shown(row) ? String(row.result!.uncertain) : '') },
  { header: 'rejected', value: (row) => (row.result ? String(row.result.rejected) : '') },
  { header: 'reason', value: (row) => row.result?.reason ?? '' },
  { header: 'logit', value: (row) => (shown(row) ? row.result!.logit.toFixed(4) : '') },
  { header: 'width', value: (row) => (row.result ? String(row.result.image.width) : '') },
  { header: 'height', value: (row) => (row.result ? String(row.result.image.height) : '') },
  { header: 'format', value: (row) => row.result?.image.format ?? '' },
  { header: 'warnings', value: (row) => row.result?.warnings.join('; ') ?? '' },
  { header: 'cam_file', value: (row) => row.camFile ?? '' },
  { header: 'error_code', value: (row) => row.error?.code ?? '' },
  { header: 'error_message', value: (row) => row.error?.message ?? '' },
];

/** The table shows the few columns a person reads; errors replace the label, refusals fill it. */
const TABLE_COLUMNS = ['file', 'label', 'probability', 'threshold'];

function csvCell(s: string): string {
  return /[",\n\r]/.test(s) || /^[=+\-@]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function csvHeader(): string {
  return COLUMNS.map((c) => c.header).join(',') + '\n';
}

export function csvRow(row: PredictRow): string {
  return COLUMNS.map((c) => csvCell(c.value(row))).join(',') + '\n';
}

/**
 * One JSON result. A rejected image keeps `rejected`, `reason`, `message` and `gate` but has no
 * label, probability, logit or uncertainty: those would be meaningless for it.
 */
export function jsonRow(row: PredictRow): Record<string, unknown> {
  if (row.status === 'failed') return { file: row.file, error: row.error };
  const { cam, timings_ms: _timings, ...rest } = row.result as AnalysisResult;
  if (row.status === 'rejected') {
    const { label: _l, probability: _p, logit: _g, threshold: _t, uncertainty: _u, uncertain: _c, ...kept } = rest;
    return { file: row.file, ...kept, message: rest.gate.message };
  }
  return { file: row.file, ...rest, ...(row.camFile ? { cam_file: row.camFile } : {}) };
}

export function table(rows: PredictRow[]): string {
  // The uncertainty column only when the model estimates it.
  const withUnc = rows.some((r) => shown(r) && r.result!.uncertainty !== null);
  const cols = COLUMNS.filter((c) => TABLE_COLUMNS.includes(c.header) || (withUnc && c.header === 'uncertainty'));
  const head = cols.map((c) => c.header.toUpperCase());
  const cell = (c: Column, r: PredictRow): string => (c.display ?? c.value)(r);
  const ok = rows.filter((r) => !r.error).map((r) => cols.map((c) => cell(c, r)));
  const widths = head.map((h, j) =>
    Math.max(h.length, ...ok.map((r) => r[j].length), ...rows.filter((r) => r.error).map((r) => (j === 0 ? r.file.length : 0))),
  );
  const line = (cells: string[]): string =>
    cells
      .map((v, j) => (j === cells.length - 1 ? v : v.padEnd(widths[j])))
      .join('  ')
      .trimEnd() + '\n';
  return (
    line(head) +
    rows.map((r) => (r.error ? line([r.file, `ERROR ${r.error.code}: ${r.error.message}`]) : line(cols.map((c) => cell(c, r))))).join('')
  );
}
