"""Export trained checkpoint(s) to ONNX with a model card and golden parity fixtures.

    /usr/bin/python3 -m pneumolens_train.export --run runs/cbam --name pneumolens --out ../models
    # feature-level ensemble of several trained runs (one concatenated head, logits averaged):
    /usr/bin/python3 -m pneumolens_train.export --run runs/a runs/b --name pneumolens --out ../models

The ONNX graph outputs `logit` [N] and `features` [N,C,h,w]; the head is GAP + Linear, so the
Grad-CAM of the logit is exact in closed form (docs/model-contract.md). The export runs the ONNX
file in ONNX Runtime (onnxruntime-node, the product's runtime) and fails if any output differs
from PyTorch by 1e-4 or more.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from . import __version__
from .data import load_images, scan_sources, source_name
from .models import Classifier, count_params, gflops
from .preprocess import model_input, preprocess_file
from .scope import ScopeHead, rows_by_source
from .gate import (NEGATIVE_KINDS, GatedModel, GateParams, collect, fit_outlier_head, make_negatives,
                   uncertainty_block, uncertainty_from_members)
from .progress import Progress
from .checkpoint import load_checkpoint, machine
from .calibrate import binary_metrics, calibrate_logits, choose_threshold, ece
from .calibrate import sigmoid as cal_sigmoid

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ORT_CHECK = os.path.join(REPO, "training", "ort_check.mjs")


SOURCE_NAMES = {
    "chest_xray_train": "Kermany validation patients (Guangzhou, children 1-5)",
    "nih_dev": "NIH validation patients (adults, forced past the intended-use gate)",
}

# Independent grading of model 1.0.0 on hidden sets (issue 8); shown until the shipped version is graded.
INDEPENDENT_1_0_0 = {
    "model_version": "1.0.0",
    "note": "Graded independently on hidden sets that no one working on the model has seen. These are the numbers of "
            "model 1.0.0, the previous model: the shipped model has not been graded independently yet.",
    "rows": [
        {"set": "Same hospital, later patients (official Kermany test split)", "n": "624",
         "result": "accuracy 0.912, AUC 0.969, sensitivity 0.982, specificity 0.794, ECE 0.150"},
        {"set": "Another hospital: NIH Clinical Center, adults", "n": "279",
         "result": "AUC 0.31 (worse than chance); the gate accepted 92%; 340 of 342 AP-view normals called PNEUMONIA"},
        {"set": "NIH patients under 18 (ages 4-17)", "n": "95", "result": "AUC 0.41; the gate declined 41%"},
        {"set": "Public COVID/pneumonia collections (Spain and elsewhere)", "n": "44-434",
         "result": "AUC 0.55-0.89, confounded by view and device"},
    ],
}


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


def combine(models: Sequence[Classifier]):
    """Feature-level ensemble of trained models: their feature maps concatenated, one linear head
    whose weights are the members' heads divided by the member count (= the mean of their logits).
    Returns the model and, per member, (first channel, end channel, head weights, head bias)."""
    if len(models) == 1:
        return models[0], []
    k = len(models)
    combo = Classifier([b for m in models for b in m.backbones], dropout=0.0)
    members, start = [], 0
    with torch.no_grad():
        combo.fc.weight.copy_(torch.cat([m.fc.weight for m in models], dim=1) / k)
        combo.fc.bias.copy_(sum(m.fc.bias for m in models) / k)
        for m in models:
            members.append((start, start + m.out_channels, m.fc.weight.detach().view(-1).clone(),
                            float(m.fc.bias.detach().view(-1)[0])))
            start += m.out_channels
    return combo.eval(), members


def run_ort(onnx_path: str, x: np.ndarray) -> Dict[str, np.ndarray]:
    with tempfile.NamedTemporaryFile(suffix=".f32", delete=False) as fh:
        fh.write(np.ascontiguousarray(x, dtype="<f4").tobytes())
        tmp = fh.name
    try:
        r = subprocess.run(["node", ORT_CHECK, os.path.abspath(onnx_path), tmp, *map(str, x.shape)], capture_output=True,
                           text=True, cwd=REPO, timeout=300)
    finally:
        os.unlink(tmp)
    if r.returncode != 0:
        raise RuntimeError(f"ONNX Runtime check failed to run: {r.stderr.strip()[-2000:]}")
    out = json.loads(r.stdout)
    return {k: np.asarray(v["data"], dtype=np.float32).reshape(v["dims"]) for k, v in out.items()}


def gradcam_autograd(model: Classifier, x: torch.Tensor) -> np.ndarray:
    """Grad-CAM of the logit at the features layer with PyTorch autograd (reference for parity)."""
    model.eval()
    x = x.clone().requires_grad_(False)
    f = model.features(x)
    f.retain_grad()
    logit = model.fc(f.mean(dim=(2, 3))).squeeze(1)
    logit.sum().backward()
    alpha = f.grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((alpha * f).sum(dim=1)).detach().numpy()
    mx = cam.reshape(len(cam), -1).max(axis=1).reshape(-1, 1, 1)
    return np.where(mx > 0, cam / np.where(mx > 0, mx, 1), 0).astype(np.float32)


def export(runs: List[str], name: str, out_dir: str, version: str, fixtures_dir: Optional[str],
           fixture_images: Sequence[str], data: Optional[str], gate_train_limit: int = 0,
           threshold_policy: Optional[str] = None, outlier_exposure: int = 1200) -> Dict:
    cfgs, models, cals = [], [], []
    for r in runs:
        with open(os.path.join(r, "config.json")) as fh:
            cfgs.append(json.load(fh))
        with open(os.path.join(r, "calibration.json")) as fh:
            cals.append(json.load(fh))
        models.append(load_checkpoint(os.path.join(r, "best.pt")))
    c0 = cfgs[0]
    for c in cfgs[1:]:
        for key in ("size", "normalize", "resize_mode", "seed", "val_fraction", "data", "extra_data"):
            if c.get(key) != c0.get(key):
                raise ValueError(f"runs disagree on {key}: {c[key]!r} vs {c0[key]!r}")
    model, members = combine(models)
    size = int(c0["size"])
    from .config import TrainConfig
    tcfg = TrainConfig(**{k: v for k, v in c0.items()})
    spec = tcfg.preprocessing_spec()

    # the same patient-level split as training: fit the gate on training images, set thresholds,
    # temperature, decision threshold and the uncertainty cut-off on validation images
    data = data or c0["data"]
    split = json.load(open(os.path.join(runs[0], "split.json")))
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
    cache = os.path.join(runs[0], "export_cache_" + hashlib.sha1(
        "|".join(os.path.abspath(r) + str(os.path.getmtime(os.path.join(r, "best.pt"))) for r in runs).encode()
        + str(gate_train_limit).encode()
    ).hexdigest()[:12] + ".npz")
    if os.path.exists(cache):
        z = np.load(cache)
        ftr, ttr, fva, tva, vl = (z[k] for k in ("ftr", "ttr", "fva", "tva", "vl"))
    else:
        bar = Progress(len(xtr) + len(xva), "features")
        ftr, ttr, _ = collect(model, xtr, spec, progress=bar)
        fva, tva, vl = collect(model, xva, spec, progress=bar)
        bar.close()
        np.savez(cache, ftr=ftr, ttr=ttr, fva=fva, tva=tva, vl=vl)
    # temperature + bias on the pooled validation patients of every source (calibration that travels);
    # the decision threshold and the headline metrics on the intended population (the primary source)
    policy = threshold_policy or c0.get("threshold_policy", "youden")
    calib = calibrate_logits(vl, yva, policy)
    p_val = cal_sigmoid(vl / calib["temperature"] + calib["bias"])
    if not val_primary.all():
        thr, pol = choose_threshold(yva[val_primary], p_val[val_primary], policy)
        calib.update(threshold=thr, threshold_policy=pol, metrics=binary_metrics(yva[val_primary], p_val[val_primary], thr))
        calib["ece_after"] = ece(yva[val_primary], p_val[val_primary])
        calib["ece_before"] = ece(yva[val_primary], cal_sigmoid(vl[val_primary]))
    calib["val_split"] = cals[0]["val_split"]
    gate = GateParams(ftr, ttr)
    gate.calibrate(fva, tva)
    oe_info = None
    if outlier_exposure:
        neg_cache = cache.replace(".npz", "_neg.npz")
        if os.path.exists(neg_cache):
            zn = np.load(neg_cache)
            fneg, tneg, kinds = zn["fneg"], zn["tneg"], [str(k) for k in zn["kinds"]]
        else:
            xneg, kinds = make_negatives(xtr, outlier_exposure, seed=int(c0["seed"]))
            bar = Progress(len(xneg), "outliers")
            fneg, tneg, _ = collect(model, xneg, spec, progress=bar)
            bar.close()
            np.savez(neg_cache, fneg=fneg, tneg=tneg, kinds=np.array(kinds))
        gate.set_outlier_head(*fit_outlier_head(np.concatenate([ftr, ttr], 1), np.concatenate([fneg, tneg], 1)))
        gate.calibrate_outlier_head(fva, tva)
        lg = gate.outlier_logit(fneg, tneg)
        oe_info = {"n_negatives": int(len(fneg)), "kinds": list(NEGATIVE_KINDS),
                   "negatives_caught_in_sample": {k: float(np.mean([l > gate.oe_thr for l, kk in zip(lg, kinds) if kk == k]))
                                                  for k in NEGATIVE_KINDS},
                   "threshold_logit": gate.oe_thr}
    scope = scope_info = None
    declined_val = None
    if not val_primary.all():
        tr_primary = np.array([x.source == primary for x in tr_s])
        xin_tr = np.concatenate([ftr, ttr], 1)
        scope = ScopeHead(xin_tr[tr_primary], xin_tr[~tr_primary])
        xin_va = np.concatenate([fva, tva], 1)
        scope.calibrate(xin_va[val_primary], max_false_decline=0.01)
        declined_val = scope.declined(xin_va)
        scope_info = {"false_decline_rate_intended_population": float(declined_val[val_primary].mean()),
                      "decline_rate_other_sources": {src: float(declined_val[np.array([x.source == src for x in val_s])].mean())
                                                     for src in sorted({x.source for x in val_s}) if src != primary},
                      "n_validation": int(len(val_s))}
        print(f"intended-use head: declines {scope_info['false_decline_rate_intended_population']:.2%} of {primary} "
              f"validation, {scope_info['decline_rate_other_sources']} of the others", file=sys.stderr)
    gate_val = gate.report(fva, tva)
    gate_val["rule"] = ("thresholds set on validation images (held-out patients): 99.5% quantile x 1.5 for the "
                        "distances, 99.5% quantile + 2 logits for the outlier-exposure head")
    print(f"gate: validation false rejections {gate_val['false_rejection_rate']:.2%}", file=sys.stderr)
    unc = None
    if members:
        ml = np.stack([fva[:, a:b] @ w.numpy() + bb for a, b, w, bb in members], axis=1)
        unc = choose_uncertainty(ml, yva, p_val, calib, [x.source for x in val_s])
    graph = GatedModel(model, gate, members, scope).eval()
    out_names = ["logit", "features", "ood"] + (["scope"] if scope else []) + (["members"] if members else [])

    os.makedirs(out_dir, exist_ok=True)
    onnx_path = os.path.join(out_dir, f"{name}.onnx")
    dummy = torch.randn(2, 1, size, size)
    torch.onnx.export(graph, dummy, onnx_path, input_names=["input"], output_names=out_names,
                      dynamic_axes={n: {0: "batch"} for n in ["input"] + out_names},
                      opset_version=13, do_constant_folding=True)
    # verify ONNX Runtime == PyTorch on real validation images and on noise
    g = torch.Generator().manual_seed(0)
    sample = torch.cat([model_input(xva[:3, None], spec),
                        torch.randn(1, 1, size, size, generator=g)])
    graph.eval()  # torch.onnx.export restores the wrapper's mode; make sure the reference runs in eval
    with torch.no_grad():
        ref = dict(zip(out_names, (t.numpy() for t in graph(sample))))
    got = run_ort(onnx_path, sample.numpy())
    diffs = {k: float(np.abs(got[k] - ref[k]).max() / max(1.0, float(np.abs(ref[k]).max()))) for k in out_names}
    print("ONNX Runtime vs PyTorch, max |diff| (relative to max(1, |ref|)): "
          + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()), file=sys.stderr)
    if not all(v < 1e-4 for v in diffs.values()):
        os.unlink(onnx_path)
        raise RuntimeError(f"ONNX export differs from PyTorch ({diffs}); removed")
    with open(os.path.join(out_dir, "val_files.json"), "w") as fh:
        json.dump({"data": primary, "files": sorted(os.path.basename(x.path) for x in val_s if x.source == primary),
                   "note": "validation images (held-out patients) of the shipped model, primary source"}, fh)
    with open(os.path.join(out_dir, "dev_split.json"), "w") as fh:
        json.dump({"note": "validation images (held-out patients) of the development split: per source, by patient, "
                           f"stratified by class, seed {c0['seed']}, {c0['val_fraction']:.0%} of images; the images stay "
                           "in ../shared/data and are never committed",
                   "sources": {source_name(r): {"files": sorted(os.path.relpath(x.path, r) for x in val_s
                                                                if x.source == source_name(r)),
                                                "n_patients": len({x.patient for x in val_s if x.source == source_name(r)})}
                               for r in roots}}, fh, indent=0)
    by_source = rows_by_source([x.source for x in val_s], [x.view for x in val_s], yva, p_val, calib["threshold"],
                               declined_val, SOURCE_NAMES)

    sha = hashlib.sha256(open(onnx_path, "rb").read()).hexdigest()
    m = calib["metrics"]
    archs = [c["arch"] for c in cfgs]
    arch_text = (" + ".join(archs) + " feature-level ensemble (feature maps concatenated, one GAP+linear head)"
                 if len(models) > 1 else archs[0])
    wall = sum(cal.get("wall_time_s", 0) for cal in cals)
    m_note = ("Kermany validation patients (the intended population)" if scope else None)
    card = {
        "schema_version": 1,
        "name": name,
        "version": version,
        "file": os.path.basename(onnx_path),
        "sha256": sha,
        "architecture": arch_text,
        "parameters": count_params(model),
        "gflops_per_image": round(gflops(model, size), 3),
        "labels": ["NORMAL", "PNEUMONIA"],
        "input": {"name": "input", "channels": 1, "height": size, "width": size},
        "outputs": dict({"logit": "logit", "features": "features", "ood": "ood"},
                        **({"members": "members"} if members else {})),
        "preprocessing": spec,
        "postprocessing": {"temperature": calib["temperature"], "bias": calib.get("bias", 0.0),
                           "threshold": calib["threshold"],
                           "threshold_policy": calib["threshold_policy"]},
        "gradcam": {"layer": "last convolutional block (features output)", "output": "features",
                    "weights": [float(v) for v in model.fc.weight.detach().view(-1)],
                    "bias": float(model.fc.bias.detach().view(-1)[0])},
        "gate": {"output": "ood", "threshold": 1.0, "components": [
            {"name": "feature_mahalanobis", "raw_threshold": gate.feat_thr,
             "description": "mean squared Mahalanobis distance (per feature) of the pooled CAM-layer features to the "
                            "training chest X-rays (shrunk covariance)"},
            {"name": "pixel_pca_residual", "raw_threshold": gate.pix_thr,
             "description": "mean squared residual of the 32x32 thumbnail of the model input outside the top 64 "
                            "principal components of training thumbnails"},
            {"name": "pixel_pca_mahalanobis", "raw_threshold": gate.coef_thr,
             "description": "mean squared whitened coefficient of the thumbnail on those 64 principal components "
                            "(inverted, upside-down, cropped images)"}]
            + ([{"name": "outlier_exposure", "raw_threshold": gate.oe_thr,
                 "description": "logistic head on the pooled features and the 32x32 thumbnail, trained against "
                                "synthetic outliers made from "
                                "training X-rays (upside down, rotated, inverted, zoomed crops, mirror tiles) and "
                                "smooth random fields; component = exp(logit - threshold)",
                 "training": oe_info}] if oe_info else []),
            "validation": gate_val,
            **({"intended_use": {
                "output": "scope", "threshold": 1.0, "reason": "outside_intended_use",
                "population": "frontal chest X-rays of children aged 1-5 from the training hospital (Guangzhou)",
                "description": "logistic head on the pooled features and the 32x32 thumbnail, trained to tell the "
                               "training hospital's pediatric films from real adult films of another hospital (NIH "
                               "training patients); component = exp(logit - threshold), above 1 = declined",
                "raw_threshold": scope.thr,
                "validation": scope_info}} if scope else {})},
        **({"uncertainty": unc} if unc else {}),
        "metrics": {**({"by_source": by_source} if scope else {}),
                    **({"independent": INDEPENDENT_1_0_0} if version != "1.0.0" else {}),
                    "validation": {
            "n": m["n"], "accuracy": m["accuracy"], "sensitivity": m["sensitivity"],
            "specificity": m["specificity"], "precision": m["precision"], "npv": m["npv"], "f1": m["f1"],
            "auc": m["auc"], "confusion": {k: m[k] for k in ("tp", "fp", "tn", "fn")},
            "threshold": m["threshold"], "ece_before_calibration": calib.get("ece_before"),
            "ece_after_calibration": calib.get("ece_after"),
            "ece_temperature_only": calib.get("ece_temperature_only"),
            "split": calib["val_split"]["method"] + f" ({calib['val_split']['n_patients']} patients, "
                     f"{calib['val_split']['n_normal']} NORMAL / {calib['val_split']['n_pneumonia']} PNEUMONIA images)",
            **({"population": m_note} if m_note else {}),
            "caveat": "Validation images come from the same hospital and period as the training images; "
                      "performance on the official held-out test split and on other hospitals is lower (see by_source "
                      "and independent)."}},
        "training": {
            "data": "Kermany et al. 2018 pediatric chest X-rays (Guangzhou Women and Children's Medical Center), "
                    "official training split, 5,216 images resized to 224x224, CC BY 4.0"
                    + ("; NIH ChestX-ray14 adults (nih_dev, 624 images of 431 patients, AP/PA, NLP labels) drawn "
                       f"{c0.get('source_mix', 0):.0%} of the time, every (view, class) cell equally"
                       if c0.get("extra_data") else ""),
            "runs": [{"arch": c["arch"], "epochs_run": cal.get("epochs_run"), "best_epoch": cal.get("best_epoch"),
                      "wall_time_s": cal.get("wall_time_s"), "val_auc": cal["metrics"]["auc"],
                      "config": {k: c[k] for k in ("size", "epochs", "batch_size", "lr", "schedule", "loss",
                                                     "balance", "label_smoothing", "mixup", "augment", "ema")}}
                     for c, cal in zip(cfgs, cals)],
            "wall_time_s": wall,
            "machine": cals[0].get("machine", machine()),
            "command": "see README 'Retraining'",
            "exported": datetime.datetime.utcnow().replace(microsecond=0).isoformat() + "Z",
            "exporter": f"pneumolens_train {__version__}, torch {torch.__version__}",
        },
        "intended_use": "Research and education: triage experiments, teaching how CNNs read chest X-rays, "
                        "and benchmarking. Not a medical device; not for diagnosis or treatment decisions."
                        + (" Validated population: frontal chest X-rays of children aged 1-5 from one hospital. Adults' "
                           "films are not supported (their development AUC is far below the pediatric one, see "
                           "metrics.by_source): the intended-use gate declines films that look outside the validated "
                           "population (reason outside_intended_use) unless the caller forces the analysis."
                           if scope else ""),
        "limitations": ([
            "Validated only for frontal pediatric chest X-rays (ages 1-5) from one hospital. Adult films from a second "
            "hospital (NIH) were part of training so that the network learns pneumonia rather than the hospital, but "
            "adults are not supported: their development AUC stays well below the pediatric one, so the "
            "intended-use gate declines them. Lateral views, other ages and other hospitals are unvalidated.",
            "NIH labels were mined from radiology reports by NLP and are noisy; the NIH validation set is small "
            "(see the confidence intervals in metrics.by_source).",
        ] if scope else [
            "Trained only on frontal (AP) pediatric chest X-rays (ages 1-5) from one hospital; adults, lateral views "
            "and other hospitals' images are out of distribution.",
        ]) + [
            "Binary NORMAL vs PNEUMONIA only; other findings (effusion, nodules, tubes, COVID-19) are not modelled.",
            "Validation numbers are measured on a patient-level split of the same source and overstate real-world "
            "performance.",
            "Grad-CAM shows where the last convolutional block's evidence lies at 7x7 resolution; it is not a "
            "segmentation of the pathology.",
        ],
    }
    card_path = os.path.join(out_dir, f"{name}.json")
    with open(card_path, "w") as fh:
        json.dump(card, fh, indent=2)
    with open(os.path.join(out_dir, "MODEL"), "w") as fh:
        fh.write(os.path.basename(card_path) + "\n")
    print(f"wrote {onnx_path} ({os.path.getsize(onnx_path) / 1e6:.1f} MB) and {card_path}", file=sys.stderr)
    if fixtures_dir:
        write_fixtures(model, card, card_path, fixtures_dir, fixture_images)
    return card


def write_fixtures(model: Classifier, card: Dict, card_path: str, fixtures_dir: str, images: Sequence[str]) -> None:
    """Golden fixtures for the TypeScript parity test: preprocessed tensor, logit, probability, Grad-CAM."""
    os.makedirs(fixtures_dir, exist_ok=True)
    spec = card["preprocessing"]
    size = (card["input"]["height"], card["input"]["width"])
    t = card["postprocessing"]["temperature"]
    bias = card["postprocessing"].get("bias", 0.0)
    cases = []
    for src in images:
        base = os.path.splitext(os.path.basename(src))[0]
        dst = os.path.join(fixtures_dir, base + ".png")
        if os.path.abspath(src) != os.path.abspath(dst):
            shutil.copyfile(src, dst)
        x = preprocess_file(dst, size, spec)
        xt = torch.from_numpy(x).unsqueeze(0)
        with torch.no_grad():
            logit = float(model(xt)[0][0])
        cam = gradcam_autograd(model, xt)[0]
        x.astype("<f4").tofile(os.path.join(fixtures_dir, base + ".f32"))
        cases.append({"image": base + ".png", "tensor": base + ".f32", "logit": logit,
                      "probability": float(1 / (1 + np.exp(-(logit / t + bias)))),
                      "cam": [round(float(v), 7) for v in cam.reshape(-1)], "cam_shape": list(cam.shape)})
    manifest = {"card": os.path.relpath(card_path, REPO), "cases": cases,
                "written_by": "training/pneumolens_train/export.py"}
    with open(os.path.join(fixtures_dir, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=1)
    print(f"wrote {len(cases)} golden fixtures to {fixtures_dir}", file=sys.stderr)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Export pneumolens run(s) to ONNX + model card + fixtures")
    ap.add_argument("--run", nargs="+", required=True, help="training output folder(s); several = ensemble")
    ap.add_argument("--name", default="pneumolens")
    ap.add_argument("--version", default="1.0.0")
    ap.add_argument("--out", default=os.path.join(REPO, "models"))
    ap.add_argument("--fixtures", default=os.path.join(REPO, "test", "fixtures", "golden"))
    ap.add_argument("--fixture-images", nargs="*", default=None,
                    help="PNG images for the golden fixtures (default: the ones already in --fixtures)")
    ap.add_argument("--data", default=None, help="dataset folder (default: the one the run was trained on)")
    ap.add_argument("--threshold-policy", default=None,
                    help="youden | youden_high:E | sensitivity:X | fixed:X (default: the run's config)")
    ap.add_argument("--outlier-exposure", type=int, default=1200,
                    help="synthetic outliers for the gate's outlier-exposure head (0 disables it)")
    ap.add_argument("--gate-train-limit", type=int, default=0,
                    help="fit the input gate on at most N training images (default: all)")
    a = ap.parse_args(argv)
    imgs = a.fixture_images
    if imgs is None:
        imgs = sorted(os.path.join(a.fixtures, f) for f in os.listdir(a.fixtures) if f.endswith(".png")) \
            if os.path.isdir(a.fixtures) else []
    export(a.run, a.name, a.out, a.version, a.fixtures, imgs, a.data, a.gate_train_limit, a.threshold_policy,
           a.outlier_exposure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
