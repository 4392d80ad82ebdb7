import { describe, expect, it } from 'vitest';
import sharp from 'sharp';
import { renderReport, worstErrors, DISCLAIMER, type ReportItem } from '../../src/eval/report.ts';
import { summarize, curves } from '../../src/eval/summary.ts';
import { describeCard, type CardInfo } from '../../src/eval/card.ts';

const card: CardInfo = {
  name: 'pneumolens-test',
  version: '0.0.1',
  architecture: 'tiny CNN',
  parameters: 1_234_567,
  gflops_per_image: 0.61,
  labels: ['NORMAL', 'PNEUMONIA'],
  input: { name: 'input', channels: 1, height: 224, width: 224 },
  preprocessing: {
    color: 'gray_bt601',
    resize: { mode: 'stretch', filter: 'bilinear_antialias' },
    scale: 1 / 255,
    normalize: { mode: 'fixed', mean: 0.5, std: 0.25 },
  },
  postprocessing: { temperature: 1.3, threshold: 0.5, threshold_policy: 'youden' },
  metrics: { validation: { n: 100, accuracy: 0.9, auc: 0.95, split: 'val', caveat: 'Same hospital.' } },
  training: { data: 'Kermany 2018', runs: [{ epochs_run: 2 }, { epochs_run: 3 }], wall_time_s: 436.8, machine: '2 cores' },
  intended_use: 'Teaching.',
  limitations: ['Trained on pediatric images.', 'Not validated.'],
};

const items: ReportItem[] = [
  { file: 'n1.png', truth: 0, probability: 0.1 },
  { file: 'n2.png', truth: 0, probability: 0.7 },
  { file: 'n3.png', truth: 0, probability: 0.9 },
  { file: 'n4.png', truth: 0, probability: 0.2 },
  { file: 'p1.png', truth: 1, probability: 0.95 },
  { file: 'p2.png', truth: 1, probability: 0.3 },
  { file: 'p3.png', truth: 1, probability: 0.05 },
  { file: 'p4.png', truth: 1, probability: 0.8 },
];

describe('worstErrors', () => {
  it('orders false positives by highest and false negatives by lowest probability', () => {
    const w = worstErrors(items, 0.5, 1);
    expect(w.map((g) => [g.kind, g.file])).toEqual([
      ['false_positive', 'n3.png'],
      ['false_negative', 'p3.png'],
    ]);
    expect(worstErrors(items, 0.5, 5).filter((g) => g.kind === 'false_positive')).toHaveLength(2);
  });
});

describe('renderReport', () => {
  it('is one self-contained HTML file with the plots, tables, overlays and the disclaimer', async () => {
    const y = items.map((i) => i.truth);
    const p = items.map((i) => i.probability);
    const summary = summarize(y, p, 0.5, { bootstrap: { resamples: 50 } });
    const png = await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 200, g: 10, b: 10 } } })
      .png()
      .toBuffer();
    const gallery = worstErrors(items, 0.5, 2).map((g) => ({ ...g, overlayPng: png }));
    const html = renderReport({
      dataset: '/data/test',
      generatedAt: new Date('2024-01-02T03:04:05Z'),
      card,
      summary,
      curves: curves(y, p),
      items,
      failures: [{ file: 'broken<script>.jpg', code: 'undecodable_image', message: 'not an image' }],
      gallery,
    });
    expect(html.startsWith('<!doctype html>')).toBe(true);
    expect(html).toContain(DISCLAIMER);
    expect(html).toContain('Research and education tool, not a medical device.');
    // four inline SVG plots: ROC, PR, reliability, histogram
    expect(html.match(/<svg /g)).toHaveLength(4);
    for (const t of ['ROC curve (AUC', 'Precision-recall (AP', 'Reliability diagram (ECE', 'Score histogram by true class'])
      expect(html).toContain(t);
    expect(html).toContain('<polyline');
    // confusion matrix at 0.5: tp 2, fp 2, tn 2, fn 2
    expect(html).toContain('TN 2');
    expect(html).toContain('FP 2');
    // sweep table has 21 rows plus its header; operating point highlighted
    expect(html).toContain('<tr class="op"><td class="l">0.50</td>');
    // gallery: 4 overlays embedded as data URLs, the worst FP first
    expect(html.match(/src="data:image\/png;base64,/g)).toHaveLength(4);
    expect(html.indexOf('n3.png')).toBeLessThan(html.indexOf('n2.png'));
    expect(html).toContain(png.toString('base64'));
    // failures listed, card summarised, user strings escaped, nothing external or scripted
    expect(html).toContain('broken&lt;script&gt;.jpg');
    expect(html).toContain('undecodable_image');
    expect(html).toContain('tiny CNN');
    expect(html).toContain('Trained on pediatric images.');
    expect(html).not.toContain('broken<script>');
    expect(html).not.toMatch(/<script|<link|src="http|href="http/i);
  });

  it('renders a one-class data set without crashing and says why curves are missing', () => {
    const y = [0, 0, 0];
    const p = [0.1, 0.2, 0.6];
    const html = renderReport({
      dataset: 'x',
      card,
      summary: summarize(y, p, 0.5, { bootstrap: { resamples: 10 } }),
      curves: curves(y, p),
      items: p.map((probability, i) => ({ file: `f${i}`, truth: 0 as const, probability })),
      failures: [],
      gallery: [],
    });
    expect(html).toContain('ROC curve needs both classes.');
    expect(html).toContain('PR curve needs positives.');
    expect(html).not.toMatch(/NaN|Infinity/);
  });
});

describe('describeCard', () => {
  it('puts every contract field into words', () => {
    const rows = new Map(describeCard(card));
    expect(rows.get('Model')).toBe('pneumolens-test 0.0.1');
    expect(rows.get('Parameters')).toBe('1.23 M (1234567)');
    expect(rows.get('Compute')).toBe('0.61 GFLOPs per image');
    expect(rows.get('Input')).toBe('1 channel, 224 x 224');
    expect(rows.get('Preprocessing')).toBe(
      'grayscale (BT.601); resize stretch (bilinear_antialias); scale 1/255; normalize (x - 0.5) / 0.25',
    );
    expect(rows.get('Threshold')).toBe('0.5 (chosen by youden on validation)');
    expect(rows.get('Calibration')).toContain('temperature 1.3');
    expect(rows.get('Validation')).toBe('n 100, accuracy 0.9, auc 0.95; split: val');
    expect(rows.get('Training')).toBe('Kermany 2018, 5 epochs, 437 s of training, on 2 cores');
    expect(describeCard(card).find(([, v]) => v.startsWith('Caveat'))?.[1]).toBe('Caveat: Same hospital.');
    expect(rows.get('Limitations')).toBe('- Trained on pediatric images.');
  });
});
