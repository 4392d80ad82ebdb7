/** Development-split helpers of the cross-source harness (pure). */
import { basename } from 'node:path';

/** Kermany patient from the file name: person123_..., IM-0115-..., NORMAL2-IM-1427-... */
export function kermanyPatient(file: string): string {
  const b = basename(file);
  const m = /^(person\d+)_/.exec(b) ?? /^(NORMAL2-IM-\d+)-/.exec(b) ?? /^(IM-\d+)-/.exec(b);
  if (!m) throw new Error(`cannot tell the patient of Kermany file ${file}`);
  return m[1];
}

export function parseCsv(text: string): Array<Record<string, string>> {
  const [head, ...lines] = text.trim().split(/\r?\n/);
  const cols = head.split(',');
  return lines.map((l) => {
    const cells = l.split(','); // no quoted commas in labels.csv's columns we read
    return Object.fromEntries(cols.map((c, i) => [c, cells[i] ?? '']));
  });
}

/** Up to `n` items, half of each class, spread evenly over the (sorted) list. */
export function takeBalanced<T extends { label: number }>(items: T[], n: number): T[] {
  if (items.length <= n) return items;
  const pick = (xs: T[], k: number) =>
    Array.from({ length: Math.min(k, xs.length) }, (_, i) => xs[Math.floor((i * xs.length) / Math.min(k, xs.length))]);
  const pos = items.filter((i) => i.label === 1);
  const neg = items.filter((i) => i.label === 0);
  const kNeg = Math.min(neg.length, Math.floor(n / 2));
  return [...pick(neg, kNeg), ...pick(pos, n - kNeg)];
}
