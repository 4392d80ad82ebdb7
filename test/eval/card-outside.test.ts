/** The model card's results outside the training hospital: loose validation and `pneumolens info` rows. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { describeCard, outsideRows } from '../../src/eval/card.ts';
import { defaultCardPath, validateCard } from '../../src/model/card.ts';

const shipped = JSON.parse(readFileSync(defaultCardPath(), 'utf8'));
const bySource = [
  { source: 'Kermany validation patients', n: 786, auc: 0.9962, auc_ci: [0.992, 0.999], sensitivity: 0.95, specificity: 0.99, ece: 0.014 },
  { source: 'NIH AP view', n: 600, auc: 0.79, sensitivity: 0.66, specificity: 0.8, ece: 0.14, note: 'adults' },
];
const independent = { model_version: '0.9.0', note: 'Graded on hidden sets.', rows: [{ set: 'Hidden A', n: '624', result: 'AUC 0.93' }] };

describe('model card: results outside the training hospital', () => {
  it('without them, says in one line that validation overstates performance elsewhere', () => {
    const card = { name: 'm', version: '1.0.0', metrics: { validation: { n: 10, auc: 0.99 } } };
    expect(outsideRows(card)).toEqual([
      [
        'Other hospitals',
        'no results in this model card: validation comes from the training hospital and overstates performance elsewhere',
      ],
    ]);
    // right after validation, before training details
    const keys = describeCard(card).map(([k]) => k);
    expect(keys.indexOf('Other hospitals')).toBe(keys.indexOf('Validation') + 1);
  });

  it('lists metrics.by_source and metrics.independent, warning when the graded version is not this one', () => {
    const rows = outsideRows({ name: 'm', version: '1.0.0', metrics: { by_source: bySource, independent } });
    expect(rows).toEqual([
      ['By source', 'Kermany validation patients: n 786, auc 0.996 (95% CI 0.992-0.999), sensitivity 0.95, specificity 0.99, ECE 0.014'],
      ['', 'NIH AP view: n 600, auc 0.79, sensitivity 0.66, specificity 0.8, ECE 0.14 (adults)'],
      ['Independent', 'Hidden sets graded independently (model version 0.9.0): Graded on hidden sets.'],
      ['', 'WARNING: these results are for version 0.9.0, not for this model (1.0.0).'],
      ['', 'Hidden A (n 624): AUC 0.93'],
    ]);
    const same = outsideRows({ name: 'm', version: '0.9.0', metrics: { independent } });
    expect(same.some(([, v]) => v.startsWith('WARNING'))).toBe(false);
  });

  it('lists the leave-one-source-out levers, with their surround AUCs where the probe measured them', () => {
    const row = { lever: 'L0', unseen_nih_auc: { nih_dev: 0.5 }, other_sites_sensitivity: { hannover: 0.6 }, kermany_val_auc: 0.99 };
    const rows = outsideRows({
      name: 'm',
      version: '1.0.0',
      metrics: {
        leave_one_source_out: {
          method: 'probes',
          rows: [
            { ...row, shift_worst_auc: 0.98, cam_in_lungs_pneumonia: 0.9 },
            { ...row, lever: 'L1', shift_worst_auc: 0.97, cam_in_lungs_pneumonia: 0.95, surround_auc: { white_frame_25: 0.95 } },
          ],
        },
      },
    });
    const levers = rows.filter(([, v]) => v.startsWith('L'));
    expect(levers.map(([, v]) => v)).toEqual([
      "L0: unseen NIH AUC nih_dev 0.5; other sites' sensitivity hannover 0.6; own validation AUC 0.99, worst under the shift suite 0.98; Grad-CAM in the lungs 0.9",
      "L1: unseen NIH AUC nih_dev 0.5; other sites' sensitivity hannover 0.6; own validation AUC 0.99, worst under the shift suite 0.97, inside a surround white_frame_25 0.95; Grad-CAM in the lungs 0.95",
    ]);
  });

  it('the card loader accepts the new fields and refuses malformed ones by name', () => {
    expect(() => validateCard({ ...shipped, metrics: { ...shipped.metrics, by_source: bySource, independent } })).not.toThrow();
    expect(() => validateCard({ ...shipped, metrics: { by_source: { source: 'x' } } })).toThrow(/"metrics.by_source" must be an array/);
    expect(() => validateCard({ ...shipped, metrics: { by_source: [{ n: 3 }] } })).toThrow(/"metrics.by_source.0.source"/);
    expect(() => validateCard({ ...shipped, metrics: { independent: { model_version: '1' } } })).toThrow(/"metrics.independent.rows"/);
    expect(() => validateCard({ ...shipped, limitations: 'one string' })).toThrow(/"limitations" must be an array of strings/);
  });
});
