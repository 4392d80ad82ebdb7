"""Metrics, temperature scaling and decision-threshold policies (numpy, no sklearn)."""
from __future__ import annotations

import math
from typing import Dict, Tuple

import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def roc_auc(y, s) -> float:
    """Exact ROC-AUC (Mann-Whitney U), ties count one half."""
    y = np.asarray(y).astype(int)
    s = np.asarray(s, dtype=np.float64)
    npos, nneg = int(y.sum()), int((1 - y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    ss = s[order]
    i = 0
    while i < len(ss):
        j = i
        while j + 1 < len(ss) and ss[j + 1] == ss[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    return float((ranks[y == 1].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def binary_metrics(y, p, threshold: float) -> Dict[str, float]:
    y = np.asarray(y).astype(int)
    pred = (np.asarray(p) >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum()); fp = int(((pred == 1) & (y == 0)).sum())
    tn = int(((pred == 0) & (y == 0)).sum()); fn = int(((pred == 0) & (y == 1)).sum())
    div = lambda a, b: float(a / b) if b else float("nan")  # noqa: E731
    sens, spec, prec = div(tp, tp + fn), div(tn, tn + fp), div(tp, tp + fp)
    f1 = div(2 * tp, 2 * tp + fp + fn)
    return {"n": int(len(y)), "accuracy": div(tp + tn, len(y)), "sensitivity": sens, "specificity": spec,
            "precision": prec, "npv": div(tn, tn + fn), "f1": f1, "auc": roc_auc(y, p),
            "tp": tp, "fp": fp, "tn": tn, "fn": fn, "threshold": float(threshold)}


def nll(logits, y, t: float) -> float:
    z = np.asarray(logits, dtype=np.float64) / t
    y = np.asarray(y, dtype=np.float64)
    # -[y log s(z) + (1-y) log s(-z)], stable
    return float(np.mean(np.logaddexp(0, -z) * y + np.logaddexp(0, z) * (1 - y)))


def fit_temperature(logits, y, lo: float = 0.05, hi: float = 20.0, iters: int = 200) -> float:
    """Temperature minimising validation NLL (golden-section search on log T; NLL is unimodal in T)."""
    a, b = math.log(lo), math.log(hi)
    gr = (math.sqrt(5) - 1) / 2
    c, d = b - gr * (b - a), a + gr * (b - a)
    for _ in range(iters):
        if nll(logits, y, math.exp(c)) < nll(logits, y, math.exp(d)):
            b = d
        else:
            a = c
        c, d = b - gr * (b - a), a + gr * (b - a)
    return float(math.exp((a + b) / 2))


def nll_tb(logits, y, t: float, b: float) -> float:
    z = np.asarray(logits, dtype=np.float64) / t + b
    y = np.asarray(y, dtype=np.float64)
    return float(np.mean(np.logaddexp(0, -z) * y + np.logaddexp(0, z) * (1 - y)))


def fit_temperature_bias(logits, y, iters: int = 100):
    """Platt scaling written as temperature + bias: p = sigmoid(logit / T + b), minimising validation
    NLL (Newton's method on a = 1/T and b; the NLL is convex in (a, b)). A bias is needed when the
    training prior differs from the validation prior (e.g. class-balanced sampling); temperature
    alone cannot move the probabilities' centre."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    a, b = 1.0 / fit_temperature(z, y), 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(a * z + b)))
        g = np.array([np.mean((p - y) * z), np.mean(p - y)])
        w = p * (1 - p)
        h = np.array([[np.mean(w * z * z), np.mean(w * z)], [np.mean(w * z), np.mean(w)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    if not (a > 0):
        raise ValueError("calibration failed: the fitted slope is not positive (validation scores are inverted)")
    return float(1.0 / a), float(b)


def ece(y, p, bins: int = 10) -> float:
    y = np.asarray(y, dtype=np.float64); p = np.asarray(p, dtype=np.float64)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for i in range(bins):
        m = (p >= edges[i]) & ((p < edges[i + 1]) if i < bins - 1 else (p <= 1))
        if m.any():
            total += m.sum() / len(p) * abs(p[m].mean() - y[m].mean())
    return float(total)


def choose_threshold(y, p, policy: str = "youden") -> Tuple[float, str]:
    """Decision threshold on validation probabilities.

    - `youden`: maximises sensitivity + specificity - 1. All thresholds between two adjacent
      distinct scores give the same J, and when validation is nearly separable the optimum is a
      wide interval; we take the midpoint *in logit space* of the widest optimal interval, so the
      choice does not hug one class's extreme score (a degenerate 0.05 threshold, say).
    - `youden_high:E`: the highest threshold whose J is within E of the best J. On this dataset the
      documented failure on new data is normal images called pneumonia (low specificity), so among
      the thresholds that are as good as the best on validation, this picks the most specific one.
    - `sensitivity:X`: the highest threshold whose validation sensitivity is >= X.
    - `fixed:X`: X.
    """
    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    if policy.startswith("fixed:"):
        return float(policy.split(":", 1)[1]), policy
    logit = np.log(p / (1 - p))
    cuts = np.unique(logit)
    # candidate intervals between consecutive distinct scores (plus the two open ends)
    lows = np.concatenate([[cuts[0] - 4.0], cuts])
    highs = np.concatenate([cuts, [cuts[-1] + 4.0]])
    npos, nneg = max(int(y.sum()), 1), max(int((1 - y).sum()), 1)
    if policy.startswith("youden_high:"):
        eps = float(policy.split(":", 1)[1])
        js = []
        for lo, hi in zip(lows, highs):
            t = (lo + hi) / 2
            pred = logit >= t
            js.append(((pred & (y == 1)).sum() / npos + (~pred & (y == 0)).sum() / nneg - 1, t))
        jmax = max(j for j, _ in js)
        t = max(t for j, t in js if j >= jmax - eps - 1e-12)
        return float(sigmoid(t)), policy
    best = None
    for lo, hi in zip(lows, highs):
        t = (lo + hi) / 2  # any threshold in (lo, hi] classifies identically
        pred = logit >= t
        sens = (pred & (y == 1)).sum() / npos
        spec = (~pred & (y == 0)).sum() / nneg
        if policy == "youden":
            key = (round(sens + spec - 1, 12), hi - lo)
        elif policy.startswith("sensitivity:"):
            target = float(policy.split(":", 1)[1])
            if sens < target:
                continue
            key = (t, 0.0)
        else:
            raise ValueError(f"unknown threshold policy {policy!r}")
        if best is None or key > best[0]:
            best = (key, t)
    if best is None:
        raise ValueError(f"no threshold satisfies {policy!r}")
    return float(sigmoid(best[1])), policy


def calibrate_logits(vl, yva, policy: str) -> Dict:
    """Temperature + bias, decision threshold (`policy`, see choose_threshold) and metrics of validation
    logits, with the NLL/ECE before and after (what training writes to calibration.json)."""
    t, b = fit_temperature_bias(vl, yva)
    p = sigmoid(np.asarray(vl) / t + b)
    thr, pol = choose_threshold(yva, p, policy)
    m = binary_metrics(yva, p, thr)
    t_only = fit_temperature(vl, yva)
    return {"temperature": t, "bias": b, "threshold": thr, "threshold_policy": pol, "metrics": m,
            "nll_before": nll(vl, yva, 1.0), "nll_after": nll_tb(vl, yva, t, b),
            "ece_before": ece(yva, sigmoid(vl)), "ece_after": ece(yva, p),
            "ece_temperature_only": ece(yva, sigmoid(np.asarray(vl) / t_only))}
