"""Train a pneumolens model.

    /usr/bin/python3 -m pneumolens_train.train --config configs/cbam_cnn.json --out runs/cbam
    /usr/bin/python3 -m pneumolens_train.train --config configs/cbam_cnn.json --out runs/cbam --resume

Writes to OUT: last.pt (every epoch, for --resume), best.pt (best validation AUC of the EMA
weights), history.csv/json, curves.png, split.json (which patients went where) and
calibration.json (temperature, threshold, validation metrics of the best checkpoint).
"""
from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import math
import os
import random
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import torch

from . import calibrate as cal
from .augment import AugmentConfig, augment, preset
from .checkpoint import load_checkpoint, machine
from .config import TrainConfig
from .data import (Sample, add_digests, assign_hospitals, load_images, patient_split_by_source, scan_sources,
                   source_name, split_off_children)
from .lungs import lung_masks
from .losses import focal_loss, mixup, smooth, weighted_bce
from .models import build_model, count_params, gflops
from .preprocess import model_input
from .progress import Progress


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_augment(a: Optional[AugmentConfig], cfg: TrainConfig, epoch: int) -> Optional[AugmentConfig]:
    """The augmentation of one epoch: the zoom-out starts after `zoom_out_warmup` epochs without it (in probes
    a first epoch with it could fail to start: the loss stayed at chance)."""
    if a is None or epoch >= cfg.zoom_out_warmup:
        return a
    return dataclasses.replace(a, zoom_out_p=0.0)


def aug_config(cfg: TrainConfig) -> Optional[AugmentConfig]:
    a = preset(cfg.augment, cfg.hflip)
    if a is not None and cfg.zoom_out > 0:
        a = dataclasses.replace(a, zoom_out_p=cfg.zoom_out)
    return a


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: np.ndarray, spec: Dict, batch: int = 64) -> np.ndarray:
    """Logits of stored 0..255 images [N,H,W] (`spec`: the preprocessing block of the card)."""
    model.eval()
    out = []
    for i in range(0, len(images), batch):
        out.append(model(model_input(images[i:i + batch, None], spec))[0].float().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def lung_focus_loss(model: torch.nn.Module, feats: torch.Tensor, fields: torch.Tensor, y: torch.Tensor
                    ) -> torch.Tensor:
    """Share of the positive Grad-CAM mass (of the pneumonia logit) that lies outside the lung fields,
    weighted by the (soft) pneumonia target: evidence for pneumonia belongs in the lungs. The head is
    GAP + Linear, so Grad-CAM is the weighted channel sum of the features (docs/model-contract.md)."""
    w = model.fc.weight[0]
    cam = torch.relu(torch.einsum("nchw,c->nhw", feats, w))
    m = torch.nn.functional.interpolate(fields, size=cam.shape[-2:], mode="area")[:, 0]
    total = cam.flatten(1).sum(1) + 1e-6
    outside = (cam * (1 - m)).flatten(1).sum(1) / total
    return (outside * y).sum() / y.sum().clamp(min=1.0)


class EMA:
    """Exponential moving average of the weights (and a copy of the buffers)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.mul_(d).add_(p.detach(), alpha=1 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)


def plot_history(history: List[Dict], path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are a convenience; the CSV/JSON carry the numbers
        print("matplotlib not installed: skipping curves.png", file=sys.stderr)
        return
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(ep, [h["train_loss"] for h in history], label="train loss")
    ax[0].plot(ep, [h["val_loss"] for h in history], label="val loss")
    ax[0].set_xlabel("epoch"); ax[0].legend(); ax[0].grid(alpha=.3)
    ax[1].plot(ep, [h["val_auc"] for h in history], label="val ROC-AUC")
    ax[1].plot(ep, [h["val_accuracy"] for h in history], label="val accuracy @0.5")
    ax[1].set_xlabel("epoch"); ax[1].legend(); ax[1].grid(alpha=.3)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def prepare_data(cfg: TrainConfig, log=sys.stderr):
    samples = scan_sources([cfg.data] + list(cfg.extra_data))
    assign_hospitals(samples, cfg.hospital_of)
    children: List[Sample] = []
    if cfg.holdout_children:
        samples, children = split_off_children(samples, source_name(cfg.data))
        if children:
            print(f"holding out {len(children)} films of children from other hospitals (never trained on)", file=log)
    held_out = [s for s in samples if s.subset == "test"]
    if held_out:
        # a DIR/{train,val,test} layout: the test images stay untouched for final evaluation
        print(f"ignoring {len(held_out)} images under {cfg.data}/test (held out)", file=log)
        samples = [s for s in samples if s.subset != "test"]
    if cfg.limit and len(samples) > cfg.limit:
        rng = random.Random(cfg.seed)
        samples = sorted(rng.sample(samples, cfg.limit), key=lambda s: s.path)
    add_digests(samples)
    train_s, val_s = patient_split_by_source(samples, cfg.val_fraction, cfg.seed)
    spec = cfg.preprocessing_spec()
    xtr, ytr, train_s = load_images(train_s, (cfg.size, cfg.size), spec, log)
    xva, yva, val_s = load_images(val_s, (cfg.size, cfg.size), spec, log)
    return xtr, ytr, train_s, xva, yva, val_s, children


def sampling_weights(samples: List[Sample], y: np.ndarray, cfg: TrainConfig) -> np.ndarray:
    """Per-image draw probabilities. `sampler`: the two classes equally. `source_class`: the primary
    source gets 1 - source_mix of the draws and the extra sources share source_mix; within a source,
    every (view, class) cell is drawn equally often, so neither the class mix nor the view (confounded
    with the label in NIH) can be learnt as a shortcut."""
    if cfg.balance != "source_class":
        n_pos = float(y.sum())
        return np.where(y > 0.5, 0.5 / n_pos, 0.5 / (len(y) - n_pos))
    sources = sorted({s.source for s in samples})
    primary = os.path.basename(os.path.normpath(cfg.data))
    extra = [s for s in sources if s != primary]
    src_mass = {s: (1.0 - cfg.source_mix if extra else 1.0) if s == primary else cfg.source_mix / len(extra)
                for s in sources}
    cells: Dict[tuple, List[int]] = {}
    for i, s in enumerate(samples):
        cells.setdefault((s.source, s.view, int(y[i] > 0.5)), []).append(i)
    w = np.zeros(len(samples))
    for (src, _, _), idx in cells.items():
        n_cells = sum(1 for k in cells if k[0] == src)
        w[idx] = src_mass[src] / n_cells / len(idx)
    return w / w.sum()


def source_aucs(y: np.ndarray, p: np.ndarray, samples: List[Sample]) -> Dict[str, float]:
    """ROC-AUC per source (NaN where a source lacks a class)."""
    out = {}
    for src in sorted({s.source for s in samples}):
        m = np.array([s.source == src for s in samples])
        out[src] = cal.binary_metrics(y[m], p[m], 0.5)["auc"] if len(set(y[m].tolist())) == 2 else float("nan")
    return out


def train(cfg: TrainConfig, resume: bool = False) -> Dict:
    os.makedirs(cfg.out, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    t_start = time.time()
    xtr, ytr, train_s, xva, yva, val_s, children = prepare_data(cfg)
    masks = None
    if cfg.lung_focus > 0:
        m, prior, fallback = lung_masks(xtr)
        masks = torch.from_numpy(m)
        torch.save(prior, os.path.join(cfg.out, "lung_prior.pt"))
        print(f"lung fields: {fallback:.1%} of training films fell back to the population prior", file=sys.stderr)
    if len(set(ytr.tolist())) < 2 or len(set(yva.tolist())) < 2:
        raise ValueError("both classes are needed in the training and the validation split")
    with open(os.path.join(cfg.out, "split.json"), "w") as fh:
        json.dump({"train_patients": sorted({s.patient for s in train_s}),
                   "val_patients": sorted({s.patient for s in val_s}),
                   "val_files": [os.path.basename(s.path) for s in val_s],
                   "held_out_children": [os.path.basename(s.path) for s in children]}, fh)
    with open(os.path.join(cfg.out, "config.json"), "w") as fh:
        json.dump(cfg.to_dict(), fh, indent=2)
    n_pos, n_neg = float(ytr.sum()), float(len(ytr) - ytr.sum())
    for src in sorted({s.source for s in train_s}):
        print(f"  {src}: train {sum(s.source == src for s in train_s)}, val {sum(s.source == src for s in val_s)} images",
              file=sys.stderr)
    print(f"train {len(ytr)} images ({int(n_neg)} NORMAL / {int(n_pos)} PNEUMONIA, {len({s.patient for s in train_s})} "
          f"patients), val {len(yva)} images ({len({s.patient for s in val_s})} patients)", file=sys.stderr)

    model = build_model(cfg.arch, cfg.members, cfg.pretrained, cfg.dropout, cfg.width, cfg.cam_stride)
    ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(ytr) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    if cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15,
                                                    div_factor=20, final_div_factor=200)
    elif cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / max(1, steps_per_epoch)) * 0.5 * (1 + math.cos(math.pi * s / total)))
    else:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.3, patience=2)
    history: List[Dict] = []
    start_epoch, best_auc, best_epoch, step = 0, -1.0, -1, 0
    last_path, best_path = os.path.join(cfg.out, "last.pt"), os.path.join(cfg.out, "best.pt")
    if resume and os.path.exists(last_path):
        ck = torch.load(last_path, map_location="cpu")
        model.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"]); sched.load_state_dict(ck["sched"])
        if ema and ck.get("ema"):
            ema.model.load_state_dict(ck["ema"])
        start_epoch, best_auc, best_epoch, step = ck["epoch"] + 1, ck["best_auc"], ck["best_epoch"], ck["step"]
        history = ck["history"]
        torch.set_rng_state(ck["torch_rng"]); np.random.set_state(ck["np_rng"])
        t_start -= ck.get("elapsed", 0.0)
        print(f"resumed from {last_path} at epoch {start_epoch}", file=sys.stderr)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + start_epoch)
    acfg_full = aug_config(cfg)
    spec = cfg.preprocessing_spec()
    pos_w = n_neg / n_pos if cfg.balance == "weighted" else None
    stopped = ""
    for epoch in range(start_epoch, cfg.epochs):
        acfg = epoch_augment(acfg_full, cfg, epoch)
        if cfg.freeze_epochs and cfg.pretrained:
            for b in model.backbones:
                for p in b.parameters():
                    p.requires_grad_(epoch >= cfg.freeze_epochs)
        model.train()
        if cfg.balance in ("sampler", "source_class"):
            w = sampling_weights(train_s, ytr, cfg)
            order = torch.multinomial(torch.from_numpy(w), len(ytr), replacement=True, generator=gen).numpy()
        else:
            order = torch.randperm(len(ytr), generator=gen).numpy()
        bar = Progress(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}")
        t_ep, run_loss = time.time(), 0.0
        for i in range(steps_per_epoch):
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            mb = masks[idx][:, None].float() / 255.0 if masks is not None else None
            held: Dict[str, torch.Tensor] = {}

            def aug(x01: torch.Tensor) -> torch.Tensor:
                if mb is None:
                    return augment(x01, acfg, gen)
                out, held["m"] = augment(x01, acfg, gen, mb)
                return out

            x = model_input(xtr[idx, None], spec, aug if acfg else None)
            if mb is not None and "m" not in held:
                held["m"] = mb
            y = torch.from_numpy(ytr[idx])
            y = smooth(y, cfg.label_smoothing)
            if mb is not None:
                x, y, mmix = mixup(x, y, cfg.mixup, gen, held["m"])
            else:
                x, y = mixup(x, y, cfg.mixup, gen)
            logit, feats = model(x)
            loss = focal_loss(logit, y, cfg.focal_gamma) if cfg.loss == "focal" else weighted_bce(logit, y, pos_w)
            if mb is not None:
                loss = loss + cfg.lung_focus * lung_focus_loss(model, feats, mmix, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            if cfg.schedule != "plateau":
                sched.step()
            if ema:
                ema.update(model, step)
            step += 1
            run_loss += float(loss)
            bar.update(postfix=f"loss {run_loss / (i + 1):.4f}")
        bar.close()
        evaluated = ema.model if ema else model
        vl = predict_logits(evaluated, xva, spec)
        vp = cal.sigmoid(vl)
        m = cal.binary_metrics(yva, vp, 0.5)
        val_loss = cal.nll(vl, yva, 1.0)
        if cfg.schedule == "plateau":
            sched.step(m["auc"])
        rec = {"epoch": epoch + 1, "train_loss": run_loss / steps_per_epoch, "val_loss": val_loss,
               "val_auc": m["auc"], "val_accuracy": m["accuracy"], "val_sensitivity": m["sensitivity"],
               "val_specificity": m["specificity"], "lr": opt.param_groups[0]["lr"],
               "epoch_s": time.time() - t_ep}
        per_source = source_aucs(yva, vp, val_s)
        if len(per_source) > 1:
            rec.update({f"val_auc_{k}": v for k, v in per_source.items()})
            rec["val_auc_worst_source"] = float(np.nanmin(list(per_source.values())))
        history.append(rec)
        print(json.dumps(rec), file=sys.stderr)
        score = rec.get("val_auc_worst_source", m["auc"]) if cfg.select == "worst_source_auc" else m["auc"]
        if score > best_auc:
            best_auc, best_epoch = score, epoch + 1
            torch.save({"model": evaluated.state_dict(), "config": cfg.to_dict(), "epoch": epoch + 1}, best_path)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "ema": ema.model.state_dict() if ema else None, "epoch": epoch, "best_auc": best_auc,
                    "best_epoch": best_epoch, "step": step, "history": history,
                    "torch_rng": torch.get_rng_state(), "np_rng": np.random.get_state(),
                    "elapsed": time.time() - t_start}, last_path + ".tmp")
        os.replace(last_path + ".tmp", last_path)
        write_history(cfg.out, history)
        if epoch + 1 - best_epoch >= cfg.patience:
            stopped = f"early stop: no AUC gain for {cfg.patience} epochs"
            break
        if cfg.max_minutes and (time.time() - t_start) / 60 > cfg.max_minutes:
            stopped = f"wall-clock budget of {cfg.max_minutes} min reached"
            break
    if stopped:
        print(stopped, file=sys.stderr)
    result = finish(cfg, xva, yva, val_s, time.time() - t_start, len(history), best_epoch, stopped)
    return result


def write_history(out: str, history: List[Dict]) -> None:
    with open(os.path.join(out, "history.json"), "w") as fh:
        json.dump(history, fh, indent=1)
    with open(os.path.join(out, "history.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(history[0].keys()))
        w.writeheader(); w.writerows(history)
    plot_history(history, os.path.join(out, "curves.png"))


def finish(cfg: TrainConfig, xva, yva, val_s, wall: float, epochs_run: int, best_epoch: int, stopped: str) -> Dict:
    """Calibrate the best checkpoint on validation: temperature, threshold, metrics."""
    model = load_checkpoint(os.path.join(cfg.out, "best.pt"))
    vl = predict_logits(model, xva, cfg.preprocessing_spec())
    result = cal.calibrate_logits(vl, yva, cfg.threshold_policy)
    result.update({
        "arch": cfg.arch, "members": cfg.members, "best_epoch": best_epoch, "epochs_run": epochs_run,
        "wall_time_s": round(wall, 1), "machine": machine(), "stopped": stopped,
        "parameters": count_params(model), "gflops_per_image": round(gflops(model, cfg.size), 3),
        "val_split": {"n_images": int(len(yva)), "n_patients": len({s.patient for s in val_s}),
                      "n_normal": int((yva == 0).sum()), "n_pneumonia": int((yva == 1).sum()),
                      "method": f"by patient, stratified by class, seed {cfg.seed}, {cfg.val_fraction:.0%} of images; "
                                "exact duplicate files kept on one side"},
    })
    if len({s.source for s in val_s}) > 1:
        p = cal.sigmoid(np.asarray(vl) / result["temperature"] + result["bias"])
        result["per_source"] = {}
        for src in sorted({s.source for s in val_s}):
            m = np.array([s.source == src for s in val_s])
            mm = cal.binary_metrics(yva[m], p[m], result["threshold"])
            result["per_source"][src] = dict(mm, ece=cal.ece(yva[m], p[m]))
    np.save(os.path.join(cfg.out, "val_logits.npy"), vl)
    np.save(os.path.join(cfg.out, "val_labels.npy"), yva)
    with open(os.path.join(cfg.out, "calibration.json"), "w") as fh:
        json.dump(result, fh, indent=2)
    print(json.dumps({k: result[k] for k in ("temperature", "threshold", "metrics")}, indent=1), file=sys.stderr)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Train a pneumolens chest X-ray model")
    ap.add_argument("--config", help="JSON config (see pneumolens_train/config.py for keys)")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    for f in TrainConfig.__dataclass_fields__.values():
        if f.name in ("members", "extra_data"):
            ap.add_argument("--" + f.name.replace("_", "-"), dest=f.name, nargs="+")
        else:
            ap.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None)
    a = vars(ap.parse_args(argv))
    resume = a.pop("resume")
    if a.get("hospital_of"):
        a["hospital_of"] = json.loads(a["hospital_of"])
    path = a.pop("config")
    try:
        cfg = TrainConfig.from_sources(path, a)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    train(cfg, resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
