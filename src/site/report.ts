/**
 * The HTML report of `pneumolens site`: self-contained like `evaluate`'s (inline CSS and SVG, no
 * scripts): the profile's numbers, ROC, reliability before and after the site's calibration, and
 * score histograms per class, all from the out-of-fold films.
 */
import { reliabilityBins } from '../eval/calibration.ts';
import { rocCurve } from '../eval/metrics.ts';
import { DISCLAIMER } from '../eval/report.ts';
import { esc, histogramPlot, reliabilityPlot, rocPlot } from '../eval/svg.ts';
import type { SiteFit } from './fit.ts';
import type { SiteProfile } from './profile.ts';

const dec = (v: number | null | undefined, d = 3) => (v === null || v === undefined ? 'n/a' : v.toFixed(d));
const pct = (v: number | null | undefined) => (v === null || v === undefined ? 'n/a' : `${(v * 100).toFixed(1)}%`);

export function renderSiteReport(profile: SiteProfile, fit: SiteFit, labels: readonly string[], dataset: string): string {
  const v = profile.validation;
  const { truth, before, after } = fit.oof;
  const roc = rocCurve(truth, after);
  const cls = (k: number, probs: number[]) => probs.filter((_, i) => truth[i] === k);
  const rows: Array<[string, string]> = [
    ['Site', esc(profile.site.name)],
    ['Status', profile.validated ? 'validated' : `<b>NOT validated</b>: ${esc(profile.not_validated_reason ?? '')}`],
    ['Model', `${esc(profile.model.name)} ${esc(profile.model.version)} (sha256 ${esc(profile.model.sha256.slice(0, 16))}...)`],
    [
      'Films',
      `${profile.data.n} found; ${Object.entries(profile.data.n_per_class)
        .map(([k, n]) => `${n} ${esc(k)}`)
        .join(', ')} used; ${profile.data.not_chest_xray} refused as not chest X-rays`,
    ],
    ['Folds', `${esc(v.method)}; ${v.folds} folds over ${profile.data.groups} groups (${esc(profile.data.grouping)})`],
    [
      'AUC',
      `${dec(v.auc)}${v.auc_ci95 ? ` (95% CI ${dec(v.auc_ci95[0])}-${dec(v.auc_ci95[1])}, ${v.bootstrap} bootstrap resamples of the groups, stratified by class)` : ''}`,
    ],
    [
      'Sensitivity / specificity',
      `${pct(v.sensitivity)} / ${pct(v.specificity)} (in-sample, optimistic: ${pct(profile.in_sample.sensitivity)} / ${pct(profile.in_sample.specificity)})`,
    ],
    ['PPV / NPV', `${pct(v.ppv)} / ${pct(v.npv)}`],
    [
      'ECE before / after',
      `${dec(v.ece_before)} / ${dec(v.ece_after)}${v.ece_after_chance ? ` (by chance alone a perfectly calibrated model reads ${dec(v.ece_after_chance.mean)} on ${v.n} films, 90% of the time at most ${dec(v.ece_after_chance.p90)})` : ''}`,
    ],
    ['Declined', `${pct(v.declined)} of the site's films`],
    [
      'Calibration',
      `p = sigmoid(logit / ${dec(profile.calibration.temperature, 4)} ${profile.calibration.bias < 0 ? '-' : '+'} ${dec(Math.abs(profile.calibration.bias), 4)}), threshold ${dec(profile.calibration.threshold, 4)} (${esc(profile.calibration.policy)})`,
    ],
    [
      'Scope',
      profile.scope.rule === 'none'
        ? esc(profile.scope.note)
        : `intended-use score "${esc(profile.scope.output)}" at most ${profile.scope.threshold.toPrecision(4)} (the ${profile.scope.quantile} quantile of the site's films, never below the card's ${profile.scope.card_threshold})`,
    ],
  ];
  return [
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">`,
    `<title>pneumolens site profile: ${esc(profile.site.name)}</title>`,
    `<style>body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1180px;padding:16px 24px;color:#222}h2{font-size:17px;border-bottom:1px solid #ddd}`,
    `.disclaimer{background:#fff4e5;border:1px solid #f0b35b;padding:8px 12px;border-radius:4px;font-weight:600}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}table{border-collapse:collapse}.plots{display:flex;flex-wrap:wrap;gap:12px}</style></head><body>`,
    `<h1>Site profile: ${esc(profile.site.name)}</h1>`,
    `<p class="disclaimer">${DISCLAIMER} A site profile is evidence about one site's films, not a certification.</p>`,
    `<p>Data: <code>${esc(dataset)}</code>. Created ${esc(profile.site.created)}. Every number below comes from films judged with what was fitted on the other folds.</p>`,
    `<table>${rows.map(([k, val]) => `<tr><th>${k}</th><td>${val}</td></tr>`).join('\n')}</table>`,
    `<h2>Plots (out-of-fold films, n=${truth.length})</h2><div class="plots">`,
    roc ? rocPlot(roc, v.auc) : '',
    reliabilityPlot(reliabilityBins(truth, before), v.ece_before).replaceAll('Reliability diagram', "Before: the card's calibration"),
    reliabilityPlot(reliabilityBins(truth, after), v.ece_after).replaceAll('Reliability diagram', "After: the site's calibration"),
    histogramPlot(
      [
        { label: labels[0], color: '#1f77b4', values: cls(0, after) },
        { label: labels[1], color: '#d62728', values: cls(1, after) },
      ],
      profile.calibration.threshold,
    ),
    `</div></body></html>`,
  ].join('\n');
}
