/**
 * Tiny inline-SVG plot helpers for the HTML report: no external assets, no scripts. Every plot is a
 * unit-square data space ([0,1] x [0,1] unless told otherwise) mapped into a fixed pixel frame.
 */

export function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);
}

const W = 360;
const H = 300;
const M = { left: 50, right: 14, top: 40, bottom: 44 };
const PW = W - M.left - M.right;
const PH = H - M.top - M.bottom;

export interface Frame {
  xMax: number;
  yMax: number;
  /** Data x -> pixel x. */
  x(v: number): number;
  /** Data y -> pixel y. */
  y(v: number): number;
}

function frame(xMax = 1, yMax = 1): Frame {
  return {
    xMax,
    yMax,
    x: (v) => M.left + (v / xMax) * PW,
    y: (v) => M.top + PH - (v / yMax) * PH,
  };
}

const f2 = (v: number): string => (Math.round(v * 100) / 100).toString();

function niceTicks(max: number, count = 5): number[] {
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const ticks: number[] = [];
  for (let v = 0; v <= max + 1e-9; v += step) ticks.push(Number(v.toFixed(10)));
  return ticks;
}

/** Axes, grid, tick labels, title and axis titles around a plot drawn by `body`. */
export function plot(opts: {
  title: string;
  xLabel: string;
  yLabel: string;
  xMax?: number;
  yMax?: number;
  body: (f: Frame) => string;
  legend?: Array<{ label: string; color: string }>;
}): string {
  const f = frame(opts.xMax, opts.yMax);
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(opts.title)}">`,
  );
  parts.push(`<title>${esc(opts.title)}</title>`);
  parts.push(`<rect x="${M.left}" y="${M.top}" width="${PW}" height="${PH}" fill="#fff" stroke="#999"/>`);
  for (const t of niceTicks(f.xMax)) {
    const px = f2(f.x(t));
    parts.push(`<line x1="${px}" y1="${M.top}" x2="${px}" y2="${M.top + PH}" stroke="#eee"/>`);
    parts.push(`<text x="${px}" y="${M.top + PH + 14}" font-size="10" text-anchor="middle">${f2(t)}</text>`);
  }
  for (const t of niceTicks(f.yMax)) {
    const py = f2(f.y(t));
    parts.push(`<line x1="${M.left}" y1="${py}" x2="${M.left + PW}" y2="${py}" stroke="#eee"/>`);
    parts.push(`<text x="${M.left - 5}" y="${py}" font-size="10" text-anchor="end" dominant-baseline="middle">${f2(t)}</text>`);
  }
  parts.push(opts.body(f));
  parts.push(`<text x="${W / 2}" y="16" font-size="13" font-weight="bold" text-anchor="middle">${esc(opts.title)}</text>`);
  parts.push(`<text x="${M.left + PW / 2}" y="${H - 8}" font-size="11" text-anchor="middle">${esc(opts.xLabel)}</text>`);
  parts.push(
    `<text x="12" y="${M.top + PH / 2}" font-size="11" text-anchor="middle" transform="rotate(-90 12 ${M.top + PH / 2})">${esc(opts.yLabel)}</text>`,
  );
  // legend in one row between the title and the frame, so it never hides data
  let lx = M.left;
  for (const l of opts.legend ?? []) {
    parts.push(`<rect x="${lx}" y="${M.top - 15}" width="10" height="10" fill="${l.color}" fill-opacity="0.7"/>`);
    parts.push(`<text x="${lx + 14}" y="${M.top - 10}" font-size="10" dominant-baseline="middle">${esc(l.label)}</text>`);
    lx += 24 + l.label.length * 6;
  }
  parts.push('</svg>');
  return parts.join('\n');
}

export function polyline(f: Frame, pts: Array<[number, number]>, color: string, extra = ''): string {
  const d = pts.map(([x, y]) => `${f2(f.x(x))},${f2(f.y(y))}`).join(' ');
  return `<polyline points="${d}" fill="none" stroke="${color}" stroke-width="2" ${extra}/>`;
}

export function diagonal(f: Frame): string {
  return `<line x1="${f.x(0)}" y1="${f.y(0)}" x2="${f.x(f.xMax)}" y2="${f.y(f.yMax)}" stroke="#aaa" stroke-dasharray="4 3"/>`;
}

export function marker(f: Frame, x: number, y: number, color: string, label: string): string {
  return `<circle cx="${f2(f.x(x))}" cy="${f2(f.y(y))}" r="4" fill="${color}"><title>${esc(label)}</title></circle>`;
}

/** Thin a long curve to at most `max` points, keeping the first and last. */
export function thin<T>(pts: T[], max = 400): T[] {
  if (pts.length <= max) return pts;
  const step = (pts.length - 1) / (max - 1);
  return Array.from({ length: max }, (_, i) => pts[Math.round(i * step)]);
}

export function rocPlot(roc: Array<{ fpr: number; tpr: number }>, auc: number | null, op?: { fpr: number; tpr: number }): string {
  return plot({
    title: `ROC curve${auc === null ? '' : ` (AUC ${auc.toFixed(3)})`}`,
    xLabel: 'False positive rate (1 - specificity)',
    yLabel: 'True positive rate (sensitivity)',
    body: (f) =>
      diagonal(f) +
      polyline(
        f,
        thin(roc).map((r) => [r.fpr, r.tpr]),
        '#1f77b4',
      ) +
      (op ? marker(f, op.fpr, op.tpr, '#d62728', 'operating point') : ''),
  });
}

export function prPlot(pr: Array<{ recall: number; precision: number }>, ap: number | null, prevalence: number): string {
  // start at recall 0 with the first precision, so the step curve begins on the y axis
  const pts: Array<[number, number]> = pr.length > 0 ? [[0, pr[0].precision]] : [];
  for (const p of thin(pr)) pts.push([p.recall, p.precision]);
  return plot({
    title: `Precision-recall${ap === null ? '' : ` (AP ${ap.toFixed(3)})`}`,
    xLabel: 'Recall (sensitivity)',
    yLabel: 'Precision (PPV)',
    body: (f) =>
      `<line x1="${f.x(0)}" y1="${f2(f.y(prevalence))}" x2="${f.x(1)}" y2="${f2(f.y(prevalence))}" stroke="#aaa" stroke-dasharray="4 3"><title>prevalence</title></line>` +
      polyline(f, pts, '#2ca02c'),
  });
}

export function reliabilityPlot(
  bins: Array<{ lower: number; upper: number; count: number; meanPredicted: number | null; fractionPositive: number | null }>,
  ece: number | null,
): string {
  return plot({
    title: `Reliability diagram${ece === null ? '' : ` (ECE ${ece.toFixed(3)})`}`,
    xLabel: 'Predicted probability',
    yLabel: 'Observed fraction positive',
    body: (f) => {
      const bars = bins
        .filter((b) => b.count > 0)
        .map((b) => {
          const x0 = f.x(b.lower) + 1;
          const w = f.x(b.upper) - f.x(b.lower) - 2;
          const y = f.y(b.fractionPositive as number);
          return `<rect x="${f2(x0)}" y="${f2(y)}" width="${f2(w)}" height="${f2(f.y(0) - y)}" fill="#1f77b4" fill-opacity="0.6"><title>${b.lower.toFixed(1)}-${b.upper.toFixed(1)}: n=${b.count}, observed ${(b.fractionPositive as number).toFixed(3)}, mean predicted ${(b.meanPredicted as number).toFixed(3)}</title></rect>`;
        })
        .join('\n');
      const dots = bins
        .filter((b) => b.count > 0)
        .map((b) => marker(f, b.meanPredicted as number, b.fractionPositive as number, '#d62728', `n=${b.count}`))
        .join('\n');
      return diagonal(f) + bars + dots;
    },
  });
}

/** Overlaid histograms of scores in [0,1], one series per class. */
export function histogramPlot(series: Array<{ label: string; color: string; values: number[] }>, threshold?: number, bins = 20): string {
  const counts = series.map((s) => {
    const c = new Array<number>(bins).fill(0);
    for (const v of s.values) c[Math.min(bins - 1, Math.max(0, Math.floor(v * bins)))]++;
    return c;
  });
  const yMax = Math.max(1, ...counts.flat()) * 1.08;
  return plot({
    title: 'Score histogram by true class',
    xLabel: 'Predicted probability of PNEUMONIA',
    yLabel: 'Images',
    yMax,
    legend: series.map((s) => ({ label: `${s.label} (n=${s.values.length})`, color: s.color })),
    body: (f) =>
      counts
        .map((c, si) =>
          c
            .map((n, b) => {
              if (n === 0) return '';
              const x0 = f.x(b / bins);
              const w = f.x((b + 1) / bins) - x0;
              return `<rect x="${f2(x0)}" y="${f2(f.y(n))}" width="${f2(w)}" height="${f2(f.y(0) - f.y(n))}" fill="${series[si].color}" fill-opacity="0.5"><title>${esc(series[si].label)} ${(b / bins).toFixed(2)}-${((b + 1) / bins).toFixed(2)}: ${n}</title></rect>`;
            })
            .join(''),
        )
        .join('\n') +
      (threshold === undefined
        ? ''
        : `<line x1="${f2(f.x(threshold))}" y1="${f.y(yMax)}" x2="${f2(f.x(threshold))}" y2="${f.y(0)}" stroke="#d62728" stroke-dasharray="4 3"><title>threshold ${threshold}</title></line>`),
  });
}
