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
from .data import load_images, scan
from .models import Classifier, count_params, gflops
from .preprocess import load_gray, preprocess_gray
from .gate import (NEGATIVE_KINDS, GatedModel, GateParams, collect, fit_outlier_head, make_negatives,
                   uncertainty_block)
from .progress import Progress
from .train import calibrate_logits, load_checkpoint, machine, normalize_batch
from .calibrate import sigmoid as cal_sigmoid

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ORT_CHECK = os.path.join(REPO, "training", "ort_check.mjs")


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
        r = subprocess.run(["node", ORT_CHECK, onnx_path, tmp, *map(str, x.shape)], capture_output=True,
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
        for key in ("size", "normalize", "resize_mode", "seed", "val_fraction", "data"):
            if c[key] != c0[key]:
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
    all_s = scan(data)
    val_s = [x for x in all_s if os.path.basename(x.path) in vf]
    tr_s = [x for x in all_s if x.patient in tp and os.path.basename(x.path) not in vf]
    if gate_train_limit and len(tr_s) > gate_train_limit:
        tr_s = tr_s[::max(1, len(tr_s) // gate_train_limit)][:gate_train_limit]
    xva, yva, val_s = load_images(val_s, (size, size), spec)
    xtr, _, _ = load_images(tr_s, (size, size), spec)
    norm = lambda t: normalize_batch(t, c0["normalize"])  # noqa: E731
    cache = os.path.join(runs[0], "export_cache_" + hashlib.sha1(
        "|".join(os.path.abspath(r) + str(os.path.getmtime(os.path.join(r, "best.pt"))) for r in runs).encode()
        + str(gate_train_limit).encode()
    ).hexdigest()[:12] + ".npz")
    if os.path.exists(cache):
        z = np.load(cache)
        ftr, ttr, fva, tva, vl = (z[k] for k in ("ftr", "ttr", "fva", "tva", "vl"))
    else:
        bar = Progress(len(xtr) + len(xva), "features")
        ftr, ttr, _ = collect(model, xtr, norm, progress=bar)
        fva, tva, vl = collect(model, xva, norm, progress=bar)
        bar.close()
        np.savez(cache, ftr=ftr, ttr=ttr, fva=fva, tva=tva, vl=vl)
    calib = calibrate_logits(vl, yva, threshold_policy or c0.get("threshold_policy", "youden"))
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
            fneg, tneg, _ = collect(model, xneg, norm, progress=bar)
            bar.close()
            np.savez(neg_cache, fneg=fneg, tneg=tneg, kinds=np.array(kinds))
        gate.set_outlier_head(*fit_outlier_head(np.concatenate([ftr, ttr], 1), np.concatenate([fneg, tneg], 1)))
        gate.calibrate_outlier_head(fva, tva)
        lg = gate.outlier_logit(fneg, tneg)
        oe_info = {"n_negatives": int(len(fneg)), "kinds": list(NEGATIVE_KINDS),
                   "negatives_caught_in_sample": {k: float(np.mean([l > gate.oe_thr for l, kk in zip(lg, kinds) if kk == k]))
                                                  for k in NEGATIVE_KINDS},
                   "threshold_logit": gate.oe_thr}
    gate_val = gate.report(fva, tva)
    gate_val["rule"] = ("thresholds set on validation images (held-out patients): 99.5% quantile x 1.5 for the "
                        "distances, 99.5% quantile + 2 logits for the outlier-exposure head")
    print(f"gate: validation false rejections {gate_val['false_rejection_rate']:.2%}", file=sys.stderr)
    unc = None
    if members:
        ml = np.stack([fva[:, a:b] @ w.numpy() + bb for a, b, w, bb in members], axis=1)
        unc = uncertainty_block(ml, yva, cal_sigmoid(vl / calib["temperature"] + calib["bias"]), calib["threshold"],
                                calib["temperature"], calib["bias"])
    graph = GatedModel(model, gate, members).eval()
    out_names = ["logit", "features", "ood"] + (["members"] if members else [])

    os.makedirs(out_dir, exist_ok=True)
    onnx_path = os.path.join(out_dir, f"{name}.onnx")
    dummy = torch.randn(2, 1, size, size)
    torch.onnx.export(graph, dummy, onnx_path, input_names=["input"], output_names=out_names,
                      dynamic_axes={n: {0: "batch"} for n in ["input"] + out_names},
                      opset_version=13, do_constant_folding=True)
    # verify ONNX Runtime == PyTorch on real validation images and on noise
    g = torch.Generator().manual_seed(0)
    sample = torch.cat([norm(torch.from_numpy(xva[:3]).float().div(255).unsqueeze(1)),
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
        json.dump({"data": "chest_xray_train", "files": sorted(vf),
                   "note": "validation images (held-out patients) of the shipped model"}, fh)

    sha = hashlib.sha256(open(onnx_path, "rb").read()).hexdigest()
    m = calib["metrics"]
    archs = [c["arch"] for c in cfgs]
    arch_text = (" + ".join(archs) + " feature-level ensemble (feature maps concatenated, one GAP+linear head)"
                 if len(models) > 1 else archs[0])
    wall = sum(cal.get("wall_time_s", 0) for cal in cals)
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
            "validation": gate_val},
        **({"uncertainty": unc} if unc else {}),
        "metrics": {"validation": {
            "n": m["n"], "accuracy": m["accuracy"], "sensitivity": m["sensitivity"],
            "specificity": m["specificity"], "precision": m["precision"], "npv": m["npv"], "f1": m["f1"],
            "auc": m["auc"], "confusion": {k: m[k] for k in ("tp", "fp", "tn", "fn")},
            "threshold": m["threshold"], "ece_before_calibration": calib.get("ece_before"),
            "ece_after_calibration": calib.get("ece_after"),
            "ece_temperature_only": calib.get("ece_temperature_only"),
            "split": calib["val_split"]["method"] + f" ({calib['val_split']['n_patients']} patients, "
                     f"{calib['val_split']['n_normal']} NORMAL / {calib['val_split']['n_pneumonia']} PNEUMONIA images)",
            "caveat": "Validation images come from the same hospital and period as the training images; "
                      "performance on the official held-out test split is lower (see README)."}},
        "training": {
            "data": "Kermany et al. 2018 pediatric chest X-rays (Guangzhou Women and Children's Medical Center), "
                    "official training split, 5,216 images resized to 224x224, CC BY 4.0",
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
                        "and benchmarking. Not a medical device; not for diagnosis or treatment decisions.",
        "limitations": [
            "Trained only on frontal (AP) pediatric chest X-rays (ages 1-5) from one hospital; adults, lateral views "
            "and other hospitals' images are out of distribution.",
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
        x = preprocess_gray(load_gray(dst), size, spec)
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
