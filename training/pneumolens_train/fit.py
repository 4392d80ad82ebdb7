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
import torch

from . import calibrate as cal
from .checkpoint import Run
from .config import TrainConfig
from .data import Sample, assign_hospitals, load_images, scan_sources, source_name
from .gate import (NEGATIVE_KINDS, GateParams, collect, fit_outlier_head, make_negatives, uncertainty_block,
                   uncertainty_from_members)
from .models import Classifier, combine
from .preprocess import model_input
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
    checks: Dict = None               # gate acceptance of real films it was not fitted on, and the shift suite
    display_scale: Optional[float] = None  # Grad-CAM scale comparable across films (card gradcam.display_scale)
    cam_report: Optional[Dict] = None  # Grad-CAM on validation films: mass in the lung fields, peak spread
    extra_rows: List[Dict] = None     # metrics rows of the check sets (children of other hospitals, other sites)

    @property
    def config(self) -> Dict:
        return self.runs[0].config


def fit(runs: Sequence[Run], data: Optional[str] = None, gate_train_limit: int = 0,
        threshold_policy: Optional[str] = None, outlier_exposure: int = 1200, intended_use: bool = False,
        gate_extra: Sequence[str] = ()) -> Fit:
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
    assign_hospitals(all_s, c0.get("hospital_of") or {})
    kids = set(split.get("held_out_children") or [])
    kid_s = [x for x in all_s if os.path.basename(x.path) in kids]
    val_s = [x for x in all_s if os.path.basename(x.path) in vf]
    tr_s = [x for x in all_s if x.patient in tp and os.path.basename(x.path) not in vf]
    if gate_train_limit and len(tr_s) > gate_train_limit:
        tr_s = tr_s[::max(1, len(tr_s) // gate_train_limit)][:gate_train_limit]
    xva, yva, val_s = load_images(val_s, (size, size), spec)
    xtr, _, tr_s = load_images(tr_s, (size, size), spec)
    val_primary = np.array([x.source == primary for x in val_s])
    cache = _cache_path([r.path for r in runs], gate_train_limit)
    ftr, ttr, fva, tva, vl = _features(cache, model, spec, xtr, xva)

    calib, p_val = fit_calibration(vl, yva, val_primary, threshold_policy or c0.get("threshold_policy", "youden"),
                                   [x.source for x in val_s])
    calib["val_split"] = runs[0].calibration["val_split"]
    # the gate models "a real chest X-ray", any hospital, any device: training films of every source, real
    # films of other sites (gate_extra, never used by the classifier) and training films through the
    # acquisition-shift augmentation are all inside
    fin, tin = [ftr], [ttr]
    extra_s: List[Sample] = []
    if gate_extra:
        extra_s = scan_sources(list(gate_extra))
        xex, _, extra_s = load_images(extra_s, (size, size), spec)
        fex, tex, _ = collect(model, xex, spec)
        fin.append(fex)
        tin.append(tex)
    fsh, tsh = shifted_features(cache, model, spec, xtr, int(c0["seed"]))
    fin.append(fsh)
    tin.append(tsh)
    fin_all, tin_all = np.concatenate(fin), np.concatenate(tin)
    gate = GateParams(fin_all, tin_all)
    gate.calibrate(fva, tva)
    oe_info = None
    if outlier_exposure:
        oe_info = fit_outlier_exposure(gate, cache, model, spec, xtr, outlier_exposure, int(c0["seed"]),
                                       fin_all, tin_all, fva, tva)
    scope = scope_info = declined_val = None
    if intended_use and not val_primary.all():
        scope, scope_info, declined_val = fit_intended_use(tr_s, val_s, primary, ftr, ttr, fva, tva)
    gate_val = gate.report(fva, tva)
    print(f"gate: validation false rejections {gate_val['false_rejection_rate']:.2%}", file=sys.stderr)
    checks, extra_rows = gate_checks(gate, model, spec, size, xva, yva, val_primary, kid_s, extra_s, calib, scope)
    display_scale, cam_report = cam_scale_and_report(model, spec, xva, yva, val_s, runs[0].path)
    unc = None
    if members:
        ml = np.stack([fva[:, a:b] @ w.numpy() + bb for a, b, w, bb in members], axis=1)
        unc = choose_uncertainty(ml, yva, p_val, calib, [x.source for x in val_s])
    return Fit(list(runs), model, members, spec, size, primary, roots, val_s, xva, yva, p_val, calib, gate, gate_val,
               oe_info, scope, scope_info, declined_val, unc, checks, display_scale, cam_report, extra_rows)


def shifted_features(cache: str, model: Classifier, spec: Dict, xtr: np.ndarray, seed: int, n: int = 1500):
    """Features and thumbnails of `n` training films through the acquisition-shift augmentation (shift2)."""
    path = cache.replace(".npz", "_shift.npz")
    if os.path.exists(path):
        z = np.load(path)
        return z["f"], z["t"]
    from .augment import augment, preset
    g = torch.Generator().manual_seed(seed + 7)
    idx = torch.randperm(len(xtr), generator=g)[:n].numpy()
    acfg = preset("shift2")
    x = torch.from_numpy(xtr[idx]).float()[:, None] / 255.0
    xs = torch.cat([augment(x[i:i + 64], acfg, g) for i in range(0, len(x), 64)])
    u8 = (xs[:, 0] * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    f, t, _ = collect(model, u8, spec)
    np.savez(path, f=f, t=t)
    return f, t


def _gate_scores(gate: GateParams, model: Classifier, spec: Dict, x_u8: np.ndarray):
    f, t, lg = collect(model, x_u8, spec)
    return gate.score(f, t), lg, f, t


def gate_checks(gate: GateParams, model: Classifier, spec: Dict, size: int, xva: np.ndarray, yva: np.ndarray,
                val_primary: np.ndarray, kid_s: Sequence[Sample], extra_s: Sequence[Sample], calib: Dict,
                scope) -> Tuple[Dict, List[Dict]]:
    """What the gate accepts of real films it was not fitted on (children of other hospitals), of the other
    sites' films (in its fit), and of the primary source's validation films under each shift of the
    "other hospital" suite (probe.shift_suite, not the training augmentation); plus metrics rows of the
    check sets."""
    from .probe import shift_suite
    from .scope import metrics_row
    T, b, thr = calib["temperature"], calib.get("bias", 0.0), calib["threshold"]
    out: Dict = {"shift_suite_accepted": {}}
    rows: List[Dict] = []
    x01 = torch.from_numpy(xva[val_primary]).float()[:, None] / 255.0
    for name, xs in shift_suite(x01).items():
        u8 = (xs[:, 0] * 255).round().clamp(0, 255).to(torch.uint8).numpy()
        sc, lg, f, t = _gate_scores(gate, model, spec, u8)
        ok = sc <= 1
        if scope is not None:
            ok &= ~scope.declined(np.concatenate([f, t], 1))
        out["shift_suite_accepted"][name] = float(ok.mean())
    out["shift_suite_accepted_min"] = float(min(out["shift_suite_accepted"].values()))
    for label, ss, note in (("children_other_hospital", kid_s, "not used to fit anything"),
                            ("other_sites", extra_s, "in the gate's fit (as real chest X-rays), never in the classifier's")):
        if not ss:
            continue
        xs, ys, ss = load_images(list(ss), (size, size), spec, progress=False)
        sc, lg, f, t = _gate_scores(gate, model, spec, xs)
        ok = sc <= 1
        if scope is not None:
            ok &= ~scope.declined(np.concatenate([f, t], 1))
        out[label] = {"n": int(len(ys)), "accepted": float(ok.mean()), "note": note}
        p = cal.sigmoid(lg / T + b)
        if len(set(ys.tolist())) == 2:
            rows.append(metrics_row(label, ys, p, thr, ~ok, note))
        else:
            out[label]["sensitivity"] = float(np.mean(p[ys > 0.5] >= thr))
    print(f"gate checks: {json.dumps(out)}", file=sys.stderr)
    return out, rows


@torch.no_grad()
def cam_scale_and_report(model: Classifier, spec: Dict, xva: np.ndarray, yva: np.ndarray, val_s: Sequence[Sample],
                         run_path: str) -> Tuple[float, Dict]:
    """display_scale: the 95% quantile over pneumonia validation films of the largest Grad-CAM cell value
    acc(i,j) = sum_k (w_k / (h*w)) A_k(i,j) (the renderer's units), so a clear pneumonia film reaches the top
    of the colour scale and a normal film stays low. Report: per source, the share of positive Grad-CAM
    mass inside the lung fields (lungs.py) and the largest share of films whose peak is one cell."""
    from .lungs import lung_masks
    from .probe import cam_stats
    w = model.fc.weight[0]
    cams = []
    for i in range(0, len(xva), 64):
        _, f = model(model_input(xva[i:i + 64, None], spec))
        cams.append(torch.einsum("nchw,c->nhw", f, w) / (f.shape[2] * f.shape[3]))
    cams = torch.cat(cams)
    peak = cams.flatten(1).amax(1).numpy()
    pos = yva > 0.5
    scale = float(np.quantile(peak[pos], 0.95)) if pos.any() else float(np.quantile(peak, 0.95))
    scale = scale if scale > 0 else None  # a model with no positive evidence keeps the per-film scale
    prior_path = os.path.join(run_path, "lung_prior.pt")
    prior = torch.load(prior_path) if os.path.exists(prior_path) else None
    fields_u8, _, _ = lung_masks(xva, prior)
    fields = torch.from_numpy(fields_u8).float() / 255.0
    src = np.array([x.source for x in val_s])
    report = {}
    for s_ in sorted(set(src.tolist())):
        m = src == s_
        r = cam_stats(cams[m], fields[m], yva[m])
        r["normal_films_reaching_half_scale"] = float(np.mean(peak[m & ~pos] >= 0.5 * scale)) if (m & ~pos).any() else None
        report[s_] = r
    print(f"grad-cam: display_scale {scale}; {json.dumps(report)}", file=sys.stderr)
    return scale, report


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


def worst_source_threshold(y: np.ndarray, p: np.ndarray, sources: Sequence[str], policy: str) -> Tuple[float, str]:
    """`worst_source_youden[:E]`: the threshold that maximises the worst source's Youden J (sensitivity +
    specificity - 1, each source with both classes); the highest one within E of that best (models trained
    here over-call pneumonia on new patients). Judged by the worst source, like the models themselves."""
    eps = float(policy.split(":", 1)[1]) if ":" in policy else 0.0
    src = np.asarray(sources)
    groups = [src == s_ for s_ in sorted(set(src.tolist())) if len(set(y[src == s_].tolist())) == 2]
    z = np.log(np.clip(p, 1e-7, 1 - 1e-7) / np.clip(1 - p, 1e-7, 1))
    cuts = np.unique(z)
    cands = (np.concatenate([[cuts[0] - 4.0], cuts]) + np.concatenate([cuts, [cuts[-1] + 4.0]])) / 2
    def jmin(t: float) -> float:  # noqa: E306
        out = []
        for m in groups:
            pred, yy = z[m] >= t, y[m] > 0.5
            out.append(pred[yy].mean() + (~pred[~yy]).mean() - 1)
        return min(out)
    js = np.array([jmin(t) for t in cands])
    t = float(cands[js >= js.max() - eps - 1e-12].max())
    return float(cal.sigmoid(t)), policy


def fit_calibration(vl: np.ndarray, yva: np.ndarray, val_primary: np.ndarray, policy: str,
                    sources: Sequence[str] = ()) -> Tuple[Dict, np.ndarray]:
    """Temperature + bias on the pooled validation patients of every source (calibration that travels);
    the decision threshold and the headline metrics on the intended population (the primary source)."""
    worst = policy.startswith("worst_source_youden")
    calib = cal.calibrate_logits(vl, yva, "youden" if worst else policy)
    p_val = cal.sigmoid(vl / calib["temperature"] + calib["bias"])
    if not val_primary.all():
        yp, pp = yva[val_primary], p_val[val_primary]
        thr, pol = worst_source_threshold(yva, p_val, sources, policy) if worst else cal.choose_threshold(yp, pp, policy)
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
            "negatives_caught_in_sample": {k: float(np.mean([z > gate.oe_thr for z, kk in zip(lg, kinds) if kk == k]))
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
                                                                if x.folder == source_name(r)),
                                                "n_patients": len({x.patient for x in f.val if x.folder == source_name(r)})}
                               for r in f.roots}}, fh, indent=0)
