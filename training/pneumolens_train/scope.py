"""Intended use, enforced, and numbers per source.

- The intended-use head: a logistic head on the pooled CAM-layer features and the 32x32 thumbnail
  (the same inputs as the outlier-exposure head) that separates the population the model is
  validated for (the primary source: children aged 1-5 at one hospital) from real films of other
  populations in the training data (adults from another hospital, NIH). Its threshold is set on the
  primary source's *validation* patients so that at most `max_false_decline` of them are declined;
  the decline rate on the other sources' validation patients is what it is measured to be.
- Per-source metrics: AUC with a patient-agnostic bootstrap CI, sensitivity, specificity, ECE, and
  within-view rows where the source records the view.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from . import calibrate as cal
from .gate import fit_outlier_head


class ScopeHead:
    """score = exp(logit - threshold): above 1 = outside the intended use (contract: gate.intended_use)."""

    def __init__(self, inside: np.ndarray, outside: np.ndarray):
        self.w, self.b, self.mu, self.sc = fit_outlier_head(inside, outside)
        self.thr = 0.0

    def logit(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mu) * self.sc) @ self.w + self.b

    def calibrate(self, inside_val: np.ndarray, max_false_decline: float = 0.01, margin: float = 0.0) -> None:
        """Threshold = the (1 - max_false_decline / 2) quantile of the intended population's validation
        logits, plus a margin: half the allowed rate is kept in reserve for the shift to new patients."""
        self.thr = float(np.quantile(self.logit(inside_val), 1 - max_false_decline / 2) + margin)

    def declined(self, x: np.ndarray) -> np.ndarray:
        return self.logit(x) > self.thr


def bootstrap_auc_ci(y: np.ndarray, p: np.ndarray, n: int = 1000, seed: int = 0) -> List[float]:
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    p = np.asarray(p)
    aucs = []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        if 0 < y[i].sum() < len(i):
            aucs.append(cal.binary_metrics(y[i], p[i], 0.5)["auc"])
    return [float(np.quantile(aucs, 0.025)), float(np.quantile(aucs, 0.975))] if aucs else [float("nan")] * 2


def metrics_row(name: str, y: np.ndarray, p: np.ndarray, threshold: float, declined: Optional[np.ndarray] = None,
                note: str = "") -> Dict:
    y = np.asarray(y).astype(int)
    m = cal.binary_metrics(y, p, threshold)
    row = {"source": name, "n": int(len(y)), "n_normal": int((y == 0).sum()), "n_pneumonia": int((y == 1).sum()),
           "auc": m["auc"], "auc_ci": bootstrap_auc_ci(y, p), "accuracy": m["accuracy"],
           "sensitivity": m["sensitivity"], "specificity": m["specificity"], "ece": cal.ece(y, p)}
    if declined is not None:
        row["declined_outside_intended_use"] = float(np.mean(declined))
    if note:
        row["note"] = note
    return row


def rows_by_source(sources: Sequence[str], views: Sequence[str], y: np.ndarray, p: np.ndarray, threshold: float,
                   declined: Optional[np.ndarray], names: Dict[str, str]) -> List[Dict]:
    """One row per source, then one per (source, view) where views are recorded; plus the NORMAL-AP
    false-positive rate of sources with views."""
    sources = np.asarray(sources)
    views = np.asarray(views)
    rows = []
    for src in dict.fromkeys(sources.tolist()):
        m = sources == src
        d = declined[m] if declined is not None else None
        row = metrics_row(names.get(src, src), y[m], p[m], threshold, d)
        vs = sorted(v for v in set(views[m].tolist()) if v)
        if vs:
            na = m & (views == "AP") & (y == 0)
            if na.any():
                row["normal_ap_false_positive_rate"] = float(np.mean(p[na] >= threshold))
        rows.append(row)
        for v in vs:
            mv = m & (views == v)
            if len(set(y[mv].tolist())) == 2:
                rows.append(metrics_row(f"{names.get(src, src)}, {v} view", y[mv], p[mv], threshold,
                                        declined[mv] if declined is not None else None))
    return rows
