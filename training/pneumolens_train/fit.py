"""Export step 1, fit: everything the exported graph and card need that is learnt after training, on the
same patient-level split as training.

    training images   -> the input gate (distances, outlier-exposure head) and the intended-use head
    validation images -> temperature + bias, decision threshold, gate and intended-use thresholds,
                         the uncertainty rule, and the numbers the card reports

Features of the stored images are cached next to the first run (export_cache_*.npz), keyed by the runs'
paths, checkpoint times and the gate's training limit, so a re-export takes seconds.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import calibrate as cal
from .checkpoint import Run
from .config import TrainConfig
from .data import Sample, load_images, scan_sources, source_name
from .gate import (NEGATIVE_KINDS, GateParams, collect, fit_outlier_head, make_negatives, uncertainty_block,
                   uncertainty_from_members)
from .models import Classifier, combine
from .progress import Progress
from .scope import ScopeHead


@dataclass
class Fit:
    runs: List[Run]
    model: Classifier                 # the (ensembled) classifier
    members: list                     # per ensemble member: (first channel, end channel, head w, head b)
    spec: Dict                        # the card's preprocessing block
    size: int
    primary: str                      # the intended population's source name
    roots: List[str]                  # dataset folders, primary first
    val: List[Sample]                 # validation images, in the order of the arrays below
    xva: np.ndarray                   # their stored 0..255 images (uint8 [N,H,W])
    yva: np.ndarray
    p_val: np.ndarray                 # calibrated validation probabilities
    calib: Dict                       # temperature, bias, threshold, policy, metrics, ECE
    gate: GateParams
    gate_val: Dict                    # the gate's validation report
    outlier_exposure: Optional[Dict]  # its outlier-exposure head's training record
    scope: Optional[ScopeHead]        # the intended-use head (several sources only)
    scope_val: Optional[Dict]
    declined_val: Optional[np.ndarray]
    uncertainty: Optional[Dict]       # the card's uncertainty block (ensembles only)

    @property
    def config(self) -> Dict:
        return self.runs[0].config


def fit(runs: Sequence[Run], data: Optional[str] = None, gate_train_limit: int = 0,
        threshold_policy: Optional[str] = None, outlier_exposure: int = 1200) -> Fit:
    c0 = runs[0].config
    model, members = combine([r.model for r in runs])
    size = int(c0["size"])
    spec = TrainConfig(**{k: v for k, v in c0.items()}).preprocessing_spec()

    data = data or c0["data"]
    with open(os.path.join(runs[0].path, "split.json")) as fh:
        split = json.load(fh)
    vf, tp = set(split["val_files"]), set(split["train_patients"])
    roots = [data] + list(c0.get("extra_data") or [])
    primary = source_name(data)
    all_s = scan_sources(roots)
    val_s = [x for x in all_s if os.path.basename(x.path) in vf]
    tr_s = [x for x in all_s if x.patient in tp and os.path.basename(x.path) not in vf]
    if gate_train_limit and len(tr_s) > gate_train_limit:
        tr_s = tr_s[::max(1, len(tr_s) // gate_train_limit)][:gate_train_limit]
    xva, yva, val_s = load_images(val_s, (size, size), spec)
    xtr, _, tr_s = load_images(tr_s, (size, size), spec)
    val_primary = np.array([x.source == primary for x in val_s])
    cache = _cache_path([r.path for r in runs], gate_train_limit)
    ftr, ttr, fva, tva, vl = _features(cache, model, spec, xtr, xva)

    calib, p_val = fit_calibration(vl, yva, val_primary, threshold_policy or c0.get("threshold_policy", "youden"))
    calib["val_split"] = runs[0].calibration["val_split"]
    gate = GateParams(ftr, ttr)
    gate.calibrate(fva, tva)
    oe_info = None
    if outlier_exposure:
        oe_info = fit_outlier_exposure(gate, cache, model, spec, xtr, outlier_exposure, int(c0["seed"]),
                                       ftr, ttr, fva, tva)
    scope = scope_info = declined_val = None
    if not val_primary.all():
        scope, scope_info, declined_val = fit_intended_use(tr_s, val_s, primary, ftr, ttr, fva, tva)
    gate_val = gate.report(fva, tva)
    print(f"gate: validation false rejections {gate_val['false_rejection_rate']:.2%}", file=sys.stderr)
    unc = None
    if members:
        ml = np.stack([fva[:, a:b] @ w.numpy() + bb for a, b, w, bb in members], axis=1)
        unc = choose_uncertainty(ml, yva, p_val, calib, [x.source for x in val_s])
    return Fit(list(runs), model, members, spec, size, primary, roots, val_s, xva, yva, p_val, calib, gate, gate_val,
               oe_info, scope, scope_info, declined_val, unc)


def _cache_path(run_paths: Sequence[str], gate_train_limit: int) -> str:
    key = ("|".join(os.path.abspath(r) + str(os.path.getmtime(os.path.join(r, "best.pt"))) for r in run_paths).encode()
           + str(gate_train_limit).encode())
    return os.path.join(run_paths[0], "export_cache_" + hashlib.sha1(key).hexdigest()[:12] + ".npz")


def _features(cache: str, model: Classifier, spec: Dict, xtr: np.ndarray, xva: np.ndarray):
    """(training features, training thumbnails, validation features, validation thumbnails, validation logits)."""
    if os.path.exists(cache):
        z = np.load(cache)
        return tuple(z[k] for k in ("ftr", "ttr", "fva", "tva", "vl"))
    bar = Progress(len(xtr) + len(xva), "features")
    ftr, ttr, _ = collect(model, xtr, spec, progress=bar)
    fva, tva, vl = collect(model, xva, spec, progress=bar)
    bar.close()
    np.savez(cache, ftr=ftr, ttr=ttr, fva=fva, tva=tva, vl=vl)
    return ftr, ttr, fva, tva, vl


def fit_calibration(vl: np.ndarray, yva: np.ndarray, val_primary: np.ndarray, policy: str) -> Tuple[Dict, np.ndarray]:
    """Temperature + bias on the pooled validation patients of every source (calibration that travels);
    the decision threshold and the headline metrics on the intended population (the primary source)."""
    calib = cal.calibrate_logits(vl, yva, policy)
    p_val = cal.sigmoid(vl / calib["temperature"] + calib["bias"])
    if not val_primary.all():
        yp, pp = yva[val_primary], p_val[val_primary]
        thr, pol = cal.choose_threshold(yp, pp, policy)
        calib.update(threshold=thr, threshold_policy=pol, metrics=cal.binary_metrics(yp, pp, thr))
        calib["ece_after"] = cal.ece(yp, pp)
        calib["ece_before"] = cal.ece(yp, cal.sigmoid(vl[val_primary]))
    return calib, p_val


def fit_outlier_exposure(gate: GateParams, cache: str, model: Classifier, spec: Dict, xtr: np.ndarray, n: int,
                         seed: int, ftr, ttr, fva, tva) -> Dict:
    """The gate's outlier-exposure head: synthetic outliers made from training images (gate.make_negatives)
    against the training images; its threshold on validation. Returns its training record."""
    neg_cache = cache.replace(".npz", "_neg.npz")
    if os.path.exists(neg_cache):
        zn = np.load(neg_cache)
        fneg, tneg, kinds = zn["fneg"], zn["tneg"], [str(k) for k in zn["kinds"]]
    else:
        xneg, kinds = make_negatives(xtr, n, seed=seed)
        bar = Progress(len(xneg), "outliers")
        fneg, tneg, _ = collect(model, xneg, spec, progress=bar)
        bar.close()
        np.savez(neg_cache, fneg=fneg, tneg=tneg, kinds=np.array(kinds))
    gate.set_outlier_head(*fit_outlier_head(np.concatenate([ftr, ttr], 1), np.concatenate([fneg, tneg], 1)))
    gate.calibrate_outlier_head(fva, tva)
    lg = gate.outlier_logit(fneg, tneg)
    return {"n_negatives": int(len(fneg)), "kinds": list(NEGATIVE_KINDS),
            "negatives_caught_in_sample": {k: float(np.mean([l > gate.oe_thr for l, kk in zip(lg, kinds) if kk == k]))
                                           for k in NEGATIVE_KINDS},
            "threshold_logit": gate.oe_thr}


def fit_intended_use(tr_s: Sequence[Sample], val_s: Sequence[Sample], primary: str, ftr, ttr, fva, tva
                     ) -> Tuple[ScopeHead, Dict, np.ndarray]:
    """The intended-use head: the primary source's training images against the other sources'; its
    threshold declines at most 1% of the primary source's validation images."""
    tr_primary = np.array([x.source == primary for x in tr_s])
    val_primary = np.array([x.source == primary for x in val_s])
    xin_tr = np.concatenate([ftr, ttr], 1)
    scope = ScopeHead(xin_tr[tr_primary], xin_tr[~tr_primary])
    xin_va = np.concatenate([fva, tva], 1)
    scope.calibrate(xin_va[val_primary], max_false_decline=0.01)
    declined = scope.declined(xin_va)
    info = {"false_decline_rate_intended_population": float(declined[val_primary].mean()),
            "decline_rate_other_sources": {src: float(declined[np.array([x.source == src for x in val_s])].mean())
                                           for src in sorted({x.source for x in val_s}) if src != primary},
            "n_validation": int(len(val_s))}
    print(f"intended-use head: declines {info['false_decline_rate_intended_population']:.2%} of {primary} "
          f"validation, {info['decline_rate_other_sources']} of the others", file=sys.stderr)
    return scope, info, declined


def choose_uncertainty(member_logits: np.ndarray, y: np.ndarray, p: np.ndarray, calib: Dict, sources: List[str]) -> Dict:
    """Uncertain = the members disagree (std above the q-quantile of pooled validation) or the calibrated
    logit lies within `margin_logit` of the threshold's logit. Of the rules (q, margin) whose flagged images
    have at least 3x the error rate of unflagged ones on every source, the one that flags the fewest pooled
    validation images; the best worst-source ratio if none reaches 3x."""
    src = np.asarray(sources)
    t, b, thr = calib["temperature"], calib["bias"], calib["threshold"]
    z = np.log(np.clip(p, 1e-12, 1 - 1e-12) / np.clip(1 - p, 1e-12, 1))
    z_thr = float(np.log(thr / (1 - thr)))
    err = (p >= thr).astype(int) != y.astype(int)
    best, found = None, []
    for frac, margin in itertools.product((0.05, 0.10, 0.15, 0.20), (0.0, 0.5, 1.0, 1.5)):
        u = uncertainty_block(member_logits, y, p, thr, t, b, frac)
        flagged = (uncertainty_from_members(member_logits, t, b) > u["cutoff"]) | (np.abs(z - z_thr) < margin)
        if margin > 0:
            u["margin_logit"] = margin
            u["measure"] += (f"; also uncertain when the calibrated logit logit(p) is within {margin} of "
                             "logit(threshold)")
        u["validation"].update(flagged_fraction=float(flagged.mean()),
                               error_rate_flagged=float(err[flagged].mean()) if flagged.any() else None,
                               error_rate_unflagged=float(err[~flagged].mean()) if (~flagged).any() else None,
                               errors_flagged=int(err[flagged].sum()),
                               cutoff_rule=f"{1 - frac:.0%} quantile of pooled validation uncertainty"
                                           + (f", or |logit(p) - logit(threshold)| < {margin}" if margin else ""))
        per = {}
        for s_ in sorted(set(sources)):
            m = src == s_
            ef = float(err[m & flagged].mean()) if (m & flagged).any() else None
            eu = float(err[m & ~flagged].mean()) if (m & ~flagged).any() else None
            per[s_] = {"n": int(m.sum()), "flagged_fraction": float(flagged[m].mean()), "error_rate_flagged": ef,
                       "error_rate_unflagged": eu,
                       "ratio": (ef / eu) if ef is not None and eu else (float("inf") if ef else 0.0)}
        u["validation"]["per_source"] = per
        worst = min(v["ratio"] for v in per.values())
        u["validation"]["worst_source_error_ratio"] = worst
        if best is None or worst > best[0]:
            best = (worst, u)
        if worst >= 3:
            found.append(u)
    return min(found, key=lambda u: u["validation"]["flagged_fraction"]) if found else best[1]


def write_split_records(f: Fit, out_dir: str) -> None:
    """val_files.json and dev_split.json next to the model: which images were validation (held-out patients)."""
    c0 = f.config
    with open(os.path.join(out_dir, "val_files.json"), "w") as fh:
        json.dump({"data": f.primary, "files": sorted(os.path.basename(x.path) for x in f.val if x.source == f.primary),
                   "note": "validation images (held-out patients) of the shipped model, primary source"}, fh)
    with open(os.path.join(out_dir, "dev_split.json"), "w") as fh:
        json.dump({"note": "validation images (held-out patients) of the development split: per source, by patient, "
                           f"stratified by class, seed {c0['seed']}, {c0['val_fraction']:.0%} of images; the images stay "
                           "in ../shared/data and are never committed",
                   "sources": {source_name(r): {"files": sorted(os.path.relpath(x.path, r) for x in f.val
                                                                if x.source == source_name(r)),
                                                "n_patients": len({x.patient for x in f.val if x.source == source_name(r)})}
                               for r in f.roots}}, fh, indent=0)
