import { describe, expect, it } from 'vitest';
import { kermanyPatient, parseCsv, takeBalanced } from '../../bench/xsource/items.ts';
import { frame, centralCrop, contrast, gamma, noise, window, type Gray } from '../../bench/xsource/shifts.ts';
import { mulberry32, rocAuc } from '../../src/eval/metrics.ts';
import {
  areaShare,
  borderMask,
  bottomMask,
  crossValidatedProbe,
  decisionValues,
  fitLogistic,
  fitStandardizer,
  groupKFold,
  markerMask,
  massShare,
  standardize,
} from '../../src/eval/shortcut.ts';

/** n points in d dimensions; label 1 shifts dimension 0 by `gap`. Two rows per group. */
function blobs(n: number, d: number, gap: number, seed = 1) {
  const rand = mulberry32(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(Math.max(rand(), 1e-12))) * Math.cos(2 * Math.PI * rand());
  const x: number[][] = [];
  const y: number[] = [];
  const g: string[] = [];
  for (let i = 0; i < n; i++) {
    const label = i % 2;
    x.push(Array.from({ length: d }, (_, j) => gauss() * (j + 1) + (j === 0 ? label * gap : 0) + 10));
    y.push(label);
    g.push(`p${Math.floor(i / 4)}`); // each patient has two of each class
  }
  return { x, y, g };
}

describe('linear probe', () => {
  it('standardises columns to mean 0, std 1 (constant columns stay finite)', () => {
    const rows = [
      [1, 5, 2],
      [3, 5, 4],
      [5, 5, 9],
    ];
    const s = fitStandardizer(rows);
    const z = standardize(rows, s);
    for (const j of [0, 2]) {
      const col = z.map((r) => r[j]);
      expect(col.reduce((a, b) => a + b, 0)).toBeCloseTo(0, 12);
      expect(col.reduce((a, b) => a + b * b, 0) / 3).toBeCloseTo(1, 12);
    }
    expect(z.map((r) => r[1])).toEqual([0, 0, 0]);
  });

  it('fits the stationary point of the L2 logistic loss', () => {
    const { x, y } = blobs(80, 3, 2);
    const l2 = 0.5;
    const m = fitLogistic(x, y, l2);
    // gradient of sum logloss + l2/2 |w|^2 vanishes (intercept unpenalised)
    const grad = new Array(4).fill(0);
    x.forEach((r, i) => {
      const z = m.intercept + r.reduce((a, v, j) => a + v * m.weights[j], 0);
      const p = 1 / (1 + Math.exp(-z));
      r.forEach((v, j) => (grad[j] += (p - y[i]) * v));
      grad[3] += p - y[i];
    });
    for (let j = 0; j < 3; j++) grad[j] += l2 * m.weights[j];
    for (const v of grad) expect(Math.abs(v)).toBeLessThan(1e-6);
    expect(rocAuc(y, decisionValues(m, x))).toBeGreaterThan(0.8);
  });

  it('stays finite on separable data (the penalty bounds the weights)', () => {
    const m = fitLogistic([[0], [1], [2], [3]], [0, 0, 1, 1], 1);
    expect(Number.isFinite(m.weights[0]) && m.weights[0] > 0).toBe(true);
  });

  it('groupKFold keeps each group in one fold and balances fold sizes', () => {
    const groups = Array.from({ length: 103 }, (_, i) => `g${i % 37}`);
    const fold = groupKFold(groups, 5, 3);
    const of = new Map<string, number>();
    groups.forEach((g, i) => {
      if (of.has(g)) expect(fold[i]).toBe(of.get(g));
      of.set(g, fold[i]);
    });
    const sizes = [0, 1, 2, 3, 4].map((f) => fold.filter((v) => v === f).length);
    expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(3);
    expect(groupKFold(groups, 5, 3)).toEqual(fold); // deterministic
    expect(() => groupKFold(groups, 1)).toThrow(RangeError);
  });

  it('cross-validated AUC is high for a real signal and near 0.5 for none', () => {
    const strong = blobs(200, 5, 4);
    const r = crossValidatedProbe(strong.x, strong.y, strong.g, { folds: 5 });
    expect(r.auc!).toBeGreaterThan(0.95);
    expect(r.foldAucs).toHaveLength(5);
    expect(r.groups).toBe(50);
    const none = blobs(200, 5, 0, 7);
    const r0 = crossValidatedProbe(none.x, none.y, none.g, { folds: 5 });
    expect(Math.abs(r0.auc! - 0.5)).toBeLessThan(0.15);
  });
});

describe('Grad-CAM mass', () => {
  it('border and bottom masks cover the expected areas', () => {
    expect(areaShare(borderMask(100, 100, 0.1))).toBeCloseTo(1 - 0.8 * 0.8, 12);
    expect(areaShare(bottomMask(50, 40, 0.25))).toBeCloseTo(0.25, 12);
    const b = bottomMask(4, 4, 0.25);
    expect(Array.from(b)).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1]);
  });

  it('massShare is the share of positive mass inside the mask', () => {
    expect(massShare([1, 3, 0, -5], [1, 0, 1, 1])).toBeCloseTo(0.25, 12);
    expect(massShare([0, 0], [1, 0])).toBeNull();
    expect(() => massShare([1], [1, 0])).toThrow(RangeError);
  });

  it('markerMask finds a small bright blob near the edge, not one in the centre or a large bright field', () => {
    const W = 100;
    const img = new Float32Array(W * W).fill(100);
    const paint = (x0: number, y0: number, w: number, h: number) => {
      for (let y = y0; y < y0 + h; y++) for (let x = x0; x < x0 + w; x++) img[y * W + x] = 255;
    };
    paint(5, 5, 4, 6); // a marker in the corner (24 px < 0.5% of 10,000 = 50)
    paint(48, 48, 4, 4); // centre: outside the 25% band
    paint(90, 30, 10, 40); // a large bright field on the right edge (400 px)
    const m = markerMask(img, W, W, { dilate: 0 });
    expect(m[7 * W + 6]).toBe(1);
    expect(m[50 * W + 50]).toBe(0);
    expect(m[50 * W + 95]).toBe(0);
    expect(areaShare(m)).toBeCloseTo(24 / (W * W), 12);
    expect(areaShare(markerMask(img, W, W, { dilate: 1 }))).toBeCloseTo(48 / (W * W), 12); // 6x8 box
  });
});

describe('acquisition shifts (pixel-wise)', () => {
  const g: Gray = { data: Float32Array.from({ length: 20 * 10 }, (_, i) => (i * 7) % 256), width: 20, height: 10 };

  it('contrast keeps the mean (before clipping) and scales the spread', () => {
    const flat: Gray = { data: Float32Array.from([100, 120, 140, 160]), width: 2, height: 2 };
    expect(Array.from(contrast(flat, 0.5).data)).toEqual([115, 125, 135, 145]);
    expect(Math.max(...contrast(g, 3).data)).toBe(255);
  });

  it('gamma and window map to 0..255', () => {
    expect(gamma({ data: Float32Array.from([0, 255, 63.75]), width: 3, height: 1 }, 2).data[2]).toBeCloseTo(255 / 16, 4);
    const w = window(g);
    expect(Math.min(...w.data)).toBe(0);
    expect(Math.max(...w.data)).toBe(255);
  });

  it('noise is seeded and has about the requested sigma', () => {
    const mid: Gray = { data: new Float32Array(20000).fill(128), width: 200, height: 100 };
    const a = noise(mid, 8, 1);
    expect(noise(mid, 8, 1).data).toEqual(a.data);
    const sd = Math.sqrt(a.data.reduce((s, v) => s + (v - 128) ** 2, 0) / a.data.length);
    expect(sd).toBeGreaterThan(7.6);
    expect(sd).toBeLessThan(8.4);
  });

  it('black border pads and central crop cuts', () => {
    const b = frame(g, 0.1);
    expect([b.width, b.height]).toEqual([24, 12]);
    expect(b.data[0]).toBe(0);
    expect(b.data[1 * 24 + 2]).toBe(g.data[0]);
    const w = frame(g, 0.1, 240); // a bright surround
    expect([w.data[0], w.data[w.data.length - 1], w.data[1 * 24 + 2]]).toEqual([240, 240, g.data[0]]);
    const c = centralCrop(g, 0.8);
    expect([c.width, c.height]).toEqual([16, 8]);
    expect(c.data[0]).toBe(g.data[1 * 20 + 2]);
  });
});

describe('development split helpers', () => {
  it('reads the patient from Kermany file names', () => {
    expect(kermanyPatient('PNEUMONIA/person1000_bacteria_2931.jpeg')).toBe('person1000');
    expect(kermanyPatient('NORMAL/IM-0115-0001.jpeg')).toBe('IM-0115');
    expect(kermanyPatient('NORMAL/NORMAL2-IM-1427-0001.jpeg')).toBe('NORMAL2-IM-1427');
    expect(() => kermanyPatient('NORMAL/x.jpeg')).toThrow();
  });

  it('parses the labels CSV and takes balanced subsets', () => {
    expect(parseCsv('file,view\nA.jpeg,AP\nB.jpeg,PA\n')).toEqual([
      { file: 'A.jpeg', view: 'AP' },
      { file: 'B.jpeg', view: 'PA' },
    ]);
    const items = Array.from({ length: 30 }, (_, i) => ({ label: i < 10 ? 0 : 1, i }));
    const t = takeBalanced(items, 8);
    expect(t.filter((x) => x.label === 0)).toHaveLength(4);
    expect(t.filter((x) => x.label === 1)).toHaveLength(4);
    expect(takeBalanced(items, 100)).toBe(items);
  });
});
