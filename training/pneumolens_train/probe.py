"""Measure a trained run the way models are selected here: by the worst source, on hospitals it never saw.

    /usr/bin/python3 -m pneumolens_train.probe --run runs/x [--eval DIR ...] [--check-children]

For the run's best checkpoint (calibrated with its own calibration.json):
- its validation patients, per source: AUC, and the same under an "other hospital" shift suite applied
  to the primary source's validation films (exposure, contrast, resolution, noise, blur, sharpening,
  grid lines, markers, collimation, black frame, crops): the worst shifted AUC;
- every --eval folder in full (a source the run was NOT trained on = leave-one-source-out; a folder of
  one class, e.g. other_sites' pneumonia films, gives the sensitivity at the run's threshold);
- the held-out children of other hospitals (split.json `held_out_children`): AUC and probabilities;
- Grad-CAM on validation films, per source: share of positive CAM mass inside the lung fields
  (lungs.py says how they are found) on pneumonia films, and the largest share of films whose CAM peak
  falls in one single cell of the feature grid.
Writes OUT/probe.json and prints a one-line summary.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import calibrate as cal
from .augment import AugmentConfig, collimation_and_grid, markers_and_borders
from .checkpoint import load_checkpoint
from .config import TrainConfig
from .data import assign_hospitals, load_images, scan_sources, source_name
from .lungs import cam_mass_inside, lung_masks
from .preprocess import model_input


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    return cal.binary_metrics(y, p, 0.5)["auc"] if len(set(np.asarray(y).tolist())) == 2 else float("nan")


def shift_suite(x01: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Deterministic acquisition shifts of 0..1 images [N,1,H,W]: what another hospital's films may look like."""
    g = torch.Generator().manual_seed(0)
    n, _, h, w = x01.shape
    k = torch.tensor([[1., 2., 1.], [2., 4., 2.], [1., 2., 1.]]).div(16).view(1, 1, 3, 3)
    blur = F.conv2d(F.pad(x01, (1, 1, 1, 1), mode="replicate"), k)
    out = {
        "gamma_0.6": x01.clamp(0, 1) ** 0.6,
        "gamma_1.6": x01.clamp(0, 1) ** 1.6,
        "contrast_0.6": (x01 - x01.mean(dim=(2, 3), keepdim=True)) * 0.6 + x01.mean(dim=(2, 3), keepdim=True),
        "downup_0.3": F.interpolate(F.interpolate(x01, scale_factor=0.3, mode="bilinear", align_corners=False),
                                    size=(h, w), mode="bilinear", align_corners=False),
        "noise_0.05": x01 + torch.randn(x01.shape, generator=g) * 0.05,
        "blur": blur,
        "sharpen": x01 + 1.0 * (x01 - blur),
        "crop_80": F.interpolate(x01[..., int(h * .1):int(h * .9), int(w * .1):int(w * .9)], size=(h, w),
                                 mode="bilinear", align_corners=False),
        "border_10": F.pad(F.interpolate(x01, size=(int(h * .8), int(w * .8)), mode="bilinear", align_corners=False),
                           (w // 10, w - int(w * .8) - w // 10, h // 10, h - int(h * .8) - h // 10)),
        "markers": markers_and_borders(x01.clone(), AugmentConfig(marker_p=1.0), g),
        "collimation_grid": collimation_and_grid(x01.clone(), AugmentConfig(collimation_p=1.0, grid_p=1.0), g),
    }
    return {k: v.clamp(0, 1) for k, v in out.items()}


def surround_suite(x01: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The film inside a flat frame of 25% of its side on every side (so it fills 2/3 of the side), black or
    near white (240/255): a small child on a large plate. The same shifts as bench/xsource/shifts.ts's
    black_border_25 and white_border_25; kept apart from shift_suite so that `shift_worst` compares with
    the probes made before them."""
    n, _, h, w = x01.shape
    ih, iw = round(h / 1.5), round(w / 1.5)
    small = F.interpolate(x01, size=(ih, iw), mode="bilinear", align_corners=False, antialias=True)
    pad = ((w - iw) // 2, w - iw - (w - iw) // 2, (h - ih) // 2, h - ih - (h - ih) // 2)
    return {"black_frame_25": F.pad(small, pad, value=0.0).clamp(0, 1),
            "white_frame_25": F.pad(small, pad, value=240 / 255).clamp(0, 1)}


@torch.no_grad()
def run_model(model, x01: torch.Tensor, spec: Dict, batch: int = 64):
    """(logits [N], CAM [N,h,w]) of 0..1 images."""
    logits, cams = [], []
    w = model.fc.weight[0]
    for i in range(0, len(x01), batch):
        logit, f = model(model_input(x01[i:i + batch] * 255.0, spec))
        logits.append(logit)
        cams.append(torch.einsum("nchw,c->nhw", f, w))
    return torch.cat(logits).numpy(), torch.cat(cams)


def cam_stats(cams: torch.Tensor, fields: torch.Tensor, y: np.ndarray) -> Dict:
    inside = cam_mass_inside(cams, fields).numpy()
    flat = cams.flatten(1)
    peak = flat.argmax(1).numpy()
    counts = np.bincount(peak, minlength=flat.shape[1])
    h, w = cams.shape[-2:]
    top = int(counts.argmax())
    pos = y > 0.5
    cp = np.bincount(peak[pos], minlength=flat.shape[1]) if pos.any() else counts
    # the measure is on the image's 7x7 cells: a finer CAM layer is pooled to them first
    p7 = F.adaptive_avg_pool2d(cams[:, None].float(), 7)[:, 0].flatten(1).argmax(1).numpy() if (h, w) != (7, 7) else peak
    c7 = np.bincount(p7[pos], minlength=49) if pos.any() else np.bincount(p7, minlength=49)
    return {"peak_top_cell_share_pneumonia_7x7": float(c7.max() / max(1, int(pos.sum()) if pos.any() else len(p7))),
            "cam_in_lungs_pneumonia": float(inside[pos].mean()) if pos.any() else float("nan"),
            "peak_top_cell_share_pneumonia": float(cp.max() / max(1, int(pos.sum()))),
            "peak_cells_used": int((counts > 0).sum()),
            "cam_in_lungs_all": float(inside.mean()),
            "peak_top_cell_share": float(counts.max() / max(1, len(peak))),
            "peak_top_cell": [top // w, top % w], "grid": [int(h), int(w)]}


def probe(run: str, eval_dirs: Sequence[str] = (), out: str = "") -> Dict:
    with open(os.path.join(run, "config.json")) as fh:
        cfg = TrainConfig(**json.load(fh))
    with open(os.path.join(run, "split.json")) as fh:
        split = json.load(fh)
    with open(os.path.join(run, "calibration.json")) as fh:
        calib = json.load(fh)
    model = load_checkpoint(os.path.join(run, "best.pt")).eval()
    spec = cfg.preprocessing_spec()
    size = (cfg.size, cfg.size)
    T, b, thr = calib["temperature"], calib.get("bias", 0.0), calib["threshold"]
    prob = lambda lg: cal.sigmoid(np.asarray(lg) / T + b)  # noqa: E731
    primary = source_name(cfg.data)
    roots = [cfg.data] + list(cfg.extra_data)
    samples = scan_sources(roots)
    assign_hospitals(samples, cfg.hospital_of)
    vf = set(split["val_files"])
    val_s = [s for s in samples if os.path.basename(s.path) in vf]
    xva, yva, val_s = load_images(val_s, size, spec, progress=False)
    prior_path = os.path.join(run, "lung_prior.pt")
    prior = torch.load(prior_path) if os.path.exists(prior_path) else None
    fields_u8, prior, _ = lung_masks(xva, prior)
    fields = torch.from_numpy(fields_u8).float() / 255.0
    x01 = torch.from_numpy(xva).float()[:, None] / 255.0
    lg, cams = run_model(model, x01, spec)
    p = prob(lg)
    src = np.array([s.source for s in val_s])
    res: Dict = {"run": run, "sources": {}, "shift": {}, "eval": {}}
    for s in sorted(set(src.tolist())):
        m = src == s
        res["sources"][s] = dict(n=int(m.sum()), auc=_auc(yva[m], p[m]),
                                 **{k: v for k, v in cal.binary_metrics(yva[m], p[m], thr).items()
                                    if k in ("sensitivity", "specificity", "accuracy")},
                                 ece=cal.ece(yva[m], p[m]), **cam_stats(cams[m], fields[m], yva[m]))
    mp = src == primary
    for name, xs in shift_suite(x01[mp]).items():
        res["shift"][name] = _auc(yva[mp], prob(run_model(model, xs, spec)[0]))
    res["shift_worst"] = float(np.nanmin(list(res["shift"].values())))
    res["surround"] = {name: _auc(yva[mp], prob(run_model(model, xs, spec)[0]))
                       for name, xs in surround_suite(x01[mp]).items()}
    trained = {source_name(r) for r in roots}
    for d in eval_dirs:
        ex, ey, _ = load_images(scan_sources([d]), size, spec, progress=False)
        ep = prob(run_model(model, torch.from_numpy(ex).float()[:, None] / 255.0, spec)[0])
        row = {"n": int(len(ey)), "trained_on": source_name(d) in trained, "auc": _auc(ey, ep),
               "sensitivity": float(np.mean(ep[ey > 0.5] >= thr)) if (ey > 0.5).any() else float("nan"),
               "specificity": float(np.mean(ep[ey < 0.5] < thr)) if (ey < 0.5).any() else float("nan")}
        res["eval"][source_name(d)] = row
    kids = split.get("held_out_children") or []
    if kids:
        ks = [s for s in samples if os.path.basename(s.path) in set(kids)]
        kx, ky, ks = load_images(ks, size, spec, progress=False)
        kp = prob(run_model(model, torch.from_numpy(kx).float()[:, None] / 255.0, spec)[0])
        res["children_other_hospital"] = {"n": int(len(ky)), "auc": _auc(ky, kp),
                                          "p": [round(float(v), 4) for v in kp], "y": ky.astype(int).tolist()}
    aucs = [v["auc"] for v in res["sources"].values() if not math.isnan(v["auc"])]
    aucs += [v["auc"] for v in res["eval"].values() if not v["trained_on"] and not math.isnan(v["auc"])]
    res["worst_auc"] = float(min(aucs + [res["shift_worst"]]))
    path = out or os.path.join(run, "probe.json")
    with open(path, "w") as fh:
        json.dump(res, fh, indent=1)
    print(summary(res))
    return res


def summary(res: Dict) -> str:
    parts = [f"{os.path.basename(res['run'])}: worst {res['worst_auc']:.3f}"]
    for s, v in res["sources"].items():
        parts.append(f"{s} AUC {v['auc']:.3f} (CAM in lungs {v['cam_in_lungs_pneumonia']:.2f}, "
                     f"top cell {v['peak_top_cell_share']:.2f})")
    parts.append(f"shift worst {res['shift_worst']:.3f}")
    for s, v in res.get("surround", {}).items():
        parts.append(f"{s} AUC {v:.3f}")
    for s, v in res["eval"].items():
        parts.append(f"{s}{'' if v['trained_on'] else ' (unseen)'} AUC {v['auc']:.3f} sens {v['sensitivity']:.2f}")
    if "children_other_hospital" in res:
        parts.append(f"children AUC {res['children_other_hospital']['auc']:.3f}")
    return " | ".join(parts)


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", nargs="+", required=True)
    ap.add_argument("--eval", nargs="*", default=[], help="folders to evaluate in full (unseen = leave-one-out)")
    ap.add_argument("--table", help="write the levers table of the runs' probe.json files to this JSON file")
    a = ap.parse_args(argv)
    if a.table:
        t = levers_table([os.path.join(r, "probe.json") for r in a.run])
        with open(a.table, "w") as fh:
            json.dump(t, fh, indent=1)
        print(t["markdown"])
        return 0
    for r in a.run:
        probe(r, a.eval)
    return 0


LEVERS_NOTE = ("leave-one-source-out probes: each lever trained at 128 px for 4 epochs (one CBAM CNN unless the lever "
               "names another network, seed 0 unless it names another) on the "
               "Kermany training patients only, then measured on every NIH film (nih_dev + nih_extra: a hospital it "
               "never saw, adults and 9 children), on the other sites' pneumonia films (sensitivity at the run's own "
               "threshold), on its Kermany validation patients and under the 'other hospital' shift suite; "
               "surround_auc (rows since 2026-12-04): the Kermany validation films inside black and near-white "
               "frames of 25% a side")


def levers_table(probe_paths: Sequence[str]) -> Dict:
    """The card's metrics.leave_one_source_out block and a markdown table, from probe.json files."""
    rows = []
    for pth in probe_paths:
        with open(pth) as fh:
            r = json.load(fh)
        ev = r["eval"]
        nih = [v for k, v in ev.items() if k.startswith("nih") and not v["trained_on"]]
        n_nih = sum(v["n"] for v in nih)
        row = {"lever": os.path.basename(r["run"]).replace("probe_", ""),
               "kermany_val_auc": r["sources"].get("chest_xray_train", {}).get("auc"),
               "shift_worst_auc": r["shift_worst"],
               "unseen_nih_auc": {k: v["auc"] for k, v in ev.items() if k.startswith("nih") and not v["trained_on"]},
               "unseen_nih_n": n_nih,
               "other_sites_sensitivity": {k: v["sensitivity"] for k, v in ev.items() if not k.startswith("nih")},
               "cam_in_lungs_pneumonia": r["sources"].get("chest_xray_train", {}).get("cam_in_lungs_pneumonia"),
               "peak_top_cell_share": r["sources"].get("chest_xray_train", {}).get("peak_top_cell_share"),
               "worst_auc": r["worst_auc"]}
        if r.get("surround"):  # probes since the surround shifts (frames of 25%, black and near white)
            row["surround_auc"] = r["surround"]
        rows.append(row)
    md = ["| lever | Kermany val AUC | worst shifted AUC | unseen NIH AUC (nih_dev / nih_extra) | other sites sens "
          "(hannover / cohen) | CAM in lungs (pneumonia) | top peak cell | worst |", "|---|---|---|---|---|---|---|---|"]
    f3 = lambda v: "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"  # noqa: E731
    for r in rows:
        md.append(f"| {r['lever']} | {f3(r['kermany_val_auc'])} | {f3(r['shift_worst_auc'])} | "
                  + " / ".join(f3(v) for v in r["unseen_nih_auc"].values()) + " | "
                  + " / ".join(f3(v) for v in r["other_sites_sensitivity"].values())
                  + f" | {f3(r['cam_in_lungs_pneumonia'])} | {f3(r['peak_top_cell_share'])} | {f3(r['worst_auc'])} |")
    return {"method": LEVERS_NOTE, "rows": rows, "markdown": "\n".join(md)}


if __name__ == "__main__":
    sys.exit(main())
