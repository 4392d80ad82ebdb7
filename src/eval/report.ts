/**
 * Self-contained HTML evaluation report: inline CSS, inline SVG plots, overlays as data-URL PNGs,
 * no scripts and no external assets, so the single file can be mailed or archived as is.
 */
import { describeCard, type CardInfo } from './card.ts';
import { esc, histogramPlot, prPlot, reliabilityPlot, rocPlot } from './svg.ts';
import type { Curves, MetricsSummary } from './summary.ts';

export const DISCLAIMER = 'Research and education tool, not a medical device.';

export interface ReportItem {
  file: string;
  /** True class: 0 = labels[0] (NORMAL), 1 = labels[1] (PNEUMONIA). */
  truth: 0 | 1;
  probability: number;
}

export interface GalleryItem extends ReportItem {
  kind: 'false_positive' | 'false_negative';
  overlayPng?: Uint8Array;
}

export interface FailedItem {
  file: string;
  code: string;
  message: string;
}

/**
 * Each reason the input gate gives, named and counted on its own everywhere (terminal, JSON, HTML
 * report): a film outside the intended use is a chest X-ray, not "not a chest X-ray".
 */
export const REJECTION_REASONS = {
  not_a_chest_xray: { title: 'Rejected', short: 'rejected, not a chest X-ray', counted: 'judged not chest X-rays by the input gate' },
  outside_intended_use: {
    title: 'Declined',
    short: 'declined, outside the intended use',
    counted: "declined as outside the model's intended use (the model is not validated on such films)",
  },
} as const;

export type RejectionCode = keyof typeof REJECTION_REASONS;
export const REJECTION_CODES = Object.keys(REJECTION_REASONS) as RejectionCode[];

/** The reason of a rejection's code (an unknown code counts as not a chest X-ray, the gate's default). */
export const rejectionCode = (code: string): RejectionCode => (code in REJECTION_REASONS ? (code as RejectionCode) : 'not_a_chest_xray');

/** How many rejections of each reason, every reason present (0 when none). */
export function countByReason(items: ReadonlyArray<{ code: string }>): Record<RejectionCode, number> {
  const counts = Object.fromEntries(REJECTION_CODES.map((c) => [c, 0])) as Record<RejectionCode, number>;
  for (const it of items) counts[rejectionCode(it.code)]++;
  return counts;
}

/** The AUC's interval for people: the numbers, or that it is not informative and why. */
export function ciText(ci: MetricsSummary['auc_ci95'], digits: number, extra = ''): string {
  if (!ci) return '';
  const level = `${Math.round(ci.level * 100)}% CI`;
  if (ci.informative === false) return ` (${level} not informative: ${ci.not_informative_because ?? 'see the JSON'})`;
  return ` (${level} ${ci.lower.toFixed(digits)}-${ci.upper.toFixed(digits)}${extra})`;
}

export interface ReportInput {
  /** What was evaluated (a directory path, shown as is). */
  dataset: string;
  generatedAt?: Date;
  card: CardInfo;
  summary: MetricsSummary;
  curves: Curves;
  items: ReportItem[];
  failures: FailedItem[];
  /** Images the input gate rejected (code: not_a_chest_xray or outside_intended_use); not counted. */
  rejected?: FailedItem[];
  /** Evaluated with --force: rejected images were analysed and counted anyway. */
  forcedRejected?: number;
  /** With --force: how many of each reason were counted anyway. */
  forcedByReason?: Partial<Record<RejectionCode, number>>;
  gallery: GalleryItem[];
}

/**
 * The k most confident mistakes of each kind at `threshold`: false positives with the highest
 * probability and false negatives with the lowest.
 */
export function worstErrors(items: ReportItem[], threshold: number, k: number): GalleryItem[] {
  const fp = items
    .filter((it) => it.truth === 0 && it.probability >= threshold)
    .sort((a, b) => b.probability - a.probability)
    .slice(0, k)
    .map((it): GalleryItem => ({ ...it, kind: 'false_positive' }));
  const fn = items
    .filter((it) => it.truth === 1 && it.probability < threshold)
    .sort((a, b) => a.probability - b.probability)
    .slice(0, k)
    .map((it): GalleryItem => ({ ...it, kind: 'false_negative' }));
  return [...fp, ...fn];
}

const pct = (v: number | null): string => (v === null ? 'n/a' : `${(v * 100).toFixed(1)}%`);
const dec = (v: number | null, d = 3): string => (v === null ? 'n/a' : v.toFixed(d));
/** A threshold to at most 4 decimals, without trailing zeros. */
export const thr = (t: number): string => String(Number(t.toFixed(4)));

const CSS = `
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1180px;padding:16px 24px;color:#222}
h1{font-size:22px;margin:8px 0}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.disclaimer{background:#fff4e5;border:1px solid #f0b35b;padding:8px 12px;border-radius:4px;font-weight:600}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f5f5f5}td.l,th.l{text-align:left}.plots{display:flex;flex-wrap:wrap;gap:12px}
.cm td{width:90px;height:44px;text-align:center;font-size:15px}.cm .ok{background:#d9f0d3}.cm .bad{background:#f8d7d7}
tr.op td{background:#e8f0fe;font-weight:600}.gallery{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;width:220px;font-size:12px}figure img{width:220px;height:auto;border:1px solid #ccc}
figcaption{word-break:break-all}.muted{color:#777}
`;

function table(head: string[], rows: string[][], rowClass?: (i: number) => string): string {
  const h = `<tr>${head.map((c, i) => `<th${i === 0 ? ' class="l"' : ''}>${c}</th>`).join('')}</tr>`;
  const b = rows
    .map(
      (r, i) =>
        `<tr${rowClass?.(i) ? ` class="${rowClass(i)}"` : ''}>${r.map((c, j) => `<td${j === 0 ? ' class="l"' : ''}>${c}</td>`).join('')}</tr>`,
    )
    .join('\n');
  return `<table>${h}\n${b}</table>`;
}

function dataUrl(png: Uint8Array): string {
  return `data:image/png;base64,${Buffer.from(png.buffer, png.byteOffset, png.byteLength).toString('base64')}`;
}

export function renderReport(input: ReportInput): string {
  const s = input.summary;
  const labels = input.card.labels ?? ['NORMAL', 'PNEUMONIA'];
  const [neg, pos] = [esc(labels[0]), esc(labels[1])];
  const c = s.confusion;
  const when = (input.generatedAt ?? new Date()).toISOString();
  const out: string[] = [];
  out.push(
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">`,
  );
  out.push(`<title>pneumolens evaluation: ${esc(input.card.name)} ${esc(input.card.version)}</title><style>${CSS}</style></head><body>`);
  out.push(`<h1>pneumolens evaluation report</h1>`);
  out.push(`<p class="disclaimer">${DISCLAIMER} Metrics describe this data set only; they are not a clinical validation.</p>`);
  out.push(
    `<p>Model <b>${esc(input.card.name)} ${esc(input.card.version)}</b> on <code>${esc(input.dataset)}</code>: ${s.n} images (${s.negatives} ${neg}, ${s.positives} ${pos}), threshold ${thr(s.threshold)}. Generated ${esc(when)}.</p>`,
  );
  if (input.failures.length > 0)
    out.push(`<p><b>${input.failures.length}</b> file(s) could not be analysed and are not counted (listed at the end).</p>`);
  const rejected = input.rejected ?? [];
  const byReason = countByReason(rejected);
  for (const code of REJECTION_CODES) {
    if (byReason[code] === 0) continue;
    out.push(
      `<p class="reason-${code}"><b>${byReason[code]}</b> image(s) ${esc(REJECTION_REASONS[code].counted)} (<code>${code}</code>): not counted in the metrics, which are computed on the ${s.n} accepted images (listed at the end).</p>`,
    );
  }
  const forced = input.forcedByReason ?? (input.forcedRejected ? { not_a_chest_xray: input.forcedRejected } : {});
  for (const code of REJECTION_CODES) {
    const n = forced[code] ?? 0;
    if (n === 0) continue;
    out.push(
      `<p class="forced-${code}"><b>${n}</b> image(s) the input gate ${esc(REJECTION_REASONS[code].counted.replace(/ by the input gate$/, ''))} were analysed anyway (--force) and are counted.</p>`,
    );
  }

  out.push(`<h2>Summary</h2>`);
  const ci = esc(ciText(s.auc_ci95, 3, s.auc_ci95 ? `, ${s.auc_ci95.resamples} stratified bootstrap resamples` : ''));
  out.push(
    table(
      ['Metric', 'Value'],
      [
        ['Accuracy', pct(s.accuracy)],
        ['Sensitivity (recall)', pct(s.sensitivity)],
        ['Specificity', pct(s.specificity)],
        ['Precision (PPV)', pct(s.precision)],
        ['NPV', pct(s.npv)],
        ['F1', dec(s.f1)],
        ['ROC-AUC', dec(s.auc) + ci],
        ['PR-AUC (average precision)', dec(s.pr_auc)],
        ['Brier score', dec(s.brier, 4)],
        [
          'ECE (10 bins)',
          dec(s.ece, 4) +
            (s.ece_chance
              ? ` <span class="muted">(a perfectly calibrated model reads ${dec(s.ece_chance.mean, 3)} on ${s.n} films by chance alone; 90% of the time at most ${dec(s.ece_chance.p90, 3)})</span>`
              : ''),
        ],
        ['Youden threshold', s.youden ? `${dec(s.youden.threshold, 4)} (J ${dec(s.youden.youden)})` : 'n/a'],
      ],
    ),
  );

  out.push(`<h2>Confusion matrix at threshold ${thr(s.threshold)}</h2>`);
  out.push(`<table class="cm"><tr><th></th><th>predicted ${neg}</th><th>predicted ${pos}</th></tr>`);
  out.push(`<tr><th>true ${neg}</th><td class="ok">TN ${c.tn}</td><td class="bad">FP ${c.fp}</td></tr>`);
  out.push(`<tr><th>true ${pos}</th><td class="bad">FN ${c.fn}</td><td class="ok">TP ${c.tp}</td></tr></table>`);

  out.push(`<h2>Curves</h2><div class="plots">`);
  const op = s.sensitivity !== null && s.specificity !== null ? { fpr: 1 - s.specificity, tpr: s.sensitivity } : undefined;
  out.push(input.curves.roc ? rocPlot(input.curves.roc, s.auc, op) : `<p class="muted">ROC curve needs both classes.</p>`);
  out.push(
    input.curves.pr ? prPlot(input.curves.pr, s.pr_auc, s.n > 0 ? s.positives / s.n : 0) : `<p class="muted">PR curve needs positives.</p>`,
  );
  out.push(reliabilityPlot(s.reliability, s.ece));
  out.push(
    histogramPlot(
      [
        { label: labels[0], color: '#1f77b4', values: input.items.filter((i) => i.truth === 0).map((i) => i.probability) },
        { label: labels[1], color: '#d62728', values: input.items.filter((i) => i.truth === 1).map((i) => i.probability) },
      ],
      s.threshold,
    ),
  );
  out.push(`</div>`);

  out.push(`<h2>Threshold sweep</h2>`);
  const opIdx = s.sweep.reduce(
    (best, r, i) => (Math.abs(r.threshold - s.threshold) < Math.abs(s.sweep[best].threshold - s.threshold) ? i : best),
    0,
  );
  out.push(
    table(
      ['Threshold', 'TP', 'FP', 'TN', 'FN', 'Sensitivity', 'Specificity', 'Precision', 'NPV', 'F1', 'Accuracy', 'Youden J'],
      s.sweep.map((r) => [
        r.threshold.toFixed(2),
        String(r.confusion.tp),
        String(r.confusion.fp),
        String(r.confusion.tn),
        String(r.confusion.fn),
        pct(r.sensitivity),
        pct(r.specificity),
        pct(r.precision),
        pct(r.npv),
        dec(r.f1),
        pct(r.accuracy),
        dec(r.youden),
      ]),
      (i) => (i === opIdx ? 'op' : ''),
    ),
  );

  out.push(`<h2>Model card</h2>`);
  out.push(
    `<table>${describeCard(input.card)
      .map(([k, v]) => `<tr><th class="l">${esc(k)}</th><td class="l">${esc(v)}</td></tr>`)
      .join('\n')}</table>`,
  );

  out.push(`<h2>Most confident errors</h2>`);
  if (input.gallery.length === 0) out.push(`<p class="muted">No errors at this threshold.</p>`);
  for (const kind of ['false_positive', 'false_negative'] as const) {
    const items = input.gallery.filter((g) => g.kind === kind);
    if (items.length === 0) continue;
    out.push(
      `<h3>${kind === 'false_positive' ? `False positives (true ${neg}, highest probability)` : `False negatives (true ${pos}, lowest probability)`}</h3><div class="gallery">`,
    );
    for (const g of items) {
      const img = g.overlayPng
        ? `<img alt="Grad-CAM overlay of ${esc(g.file)}" src="${dataUrl(g.overlayPng)}">`
        : `<div class="muted">no overlay</div>`;
      out.push(`<figure>${img}<figcaption>${esc(g.file)}<br>p(${pos}) = ${g.probability.toFixed(4)}</figcaption></figure>`);
    }
    out.push(`</div>`);
  }

  if (input.failures.length > 0) {
    out.push(`<h2>Files not analysed</h2>`);
    out.push(
      table(
        ['File', 'Code', 'Message'],
        input.failures.map((f) => [esc(f.file), esc(f.code), esc(f.message)]),
      ),
    );
  }
  for (const code of REJECTION_CODES) {
    const these = rejected.filter((f) => rejectionCode(f.code) === code);
    if (these.length === 0) continue;
    out.push(
      `<h2 id="${code}">${esc(code === 'outside_intended_use' ? "Images declined as outside the model's intended use" : 'Images rejected as not chest X-rays')} (${these.length})</h2>`,
    );
    out.push(
      table(
        ['File', 'Code', 'Reasons'],
        these.map((f) => [esc(f.file), esc(f.code), esc(f.message)]),
      ),
    );
  }
  out.push(`<p class="disclaimer">${DISCLAIMER}</p></body></html>`);
  return out.join('\n');
}
