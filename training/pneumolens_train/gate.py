"""Input-validity gate and ensemble uncertainty, fitted on the training data and baked into the
ONNX graph (docs/model-contract.md: outputs `ood` and `members`).

Gate components, each divided by its own threshold so that `ood > 1` means "reject":
- feature_mahalanobis: squared Mahalanobis distance of the pooled CAM-layer features to the
  training chest X-rays (mean and shrunk covariance of the training images).
- pixel_pca_residual: mean squared residual of a 32x32 thumbnail of the model input after
  projection onto the top principal components of training thumbnails. Frontal chest X-rays are
  strongly aligned, so documents, photographs, other body parts and rotated images leave a large
  residual even when the CNN features happen to look familiar.
Thresholds: a high quantile of the *validation* (held-out patients) scores times a safety margin,
so that real chest X-rays are almost never refused.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .models import Classifier


def thumbnails(x: torch.Tensor, side: int = 32) -> torch.Tensor:
    k = int(x.shape[-1]) // side  # the input size is fixed per model, so a constant in the graph
    return F.avg_pool2d(x, k).flatten(1)


@torch.no_grad()
def collect(model: Classifier, images_u8: np.ndarray, normalize_fn, batch: int = 64, progress=None
            ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled features, thumbnails and logits of uint8 images [N,H,W]."""
    model.eval()
    feats, thumbs, logits = [], [], []
    for i in range(0, len(images_u8), batch):
        x = normalize_fn(torch.from_numpy(images_u8[i:i + batch]).float().div_(255).unsqueeze(1))
        logit, f = model(x)
        feats.append(f.mean(dim=(2, 3)).numpy())
        thumbs.append(thumbnails(x).numpy())
        logits.append(logit.numpy())
        if progress:
            progress.update(len(x))
    return np.concatenate(feats), np.concatenate(thumbs), np.concatenate(logits)


class GateParams:
    def __init__(self, feats: np.ndarray, thumbs: np.ndarray, shrink: float = 0.1, n_pcs: int = 64):
        f = feats.astype(np.float64)
        self.mu = f.mean(0)
        cov = np.cov(f, rowvar=False)
        # shrink towards a scaled identity (keeps the inverse stable with ~5k samples, ~500 dims)
        cov = (1 - shrink) * cov + shrink * np.eye(len(cov)) * np.trace(cov) / len(cov)
        evals, evecs = np.linalg.eigh(cov)
        self.whiten = evecs / np.sqrt(np.maximum(evals, 1e-12))  # ||(f-mu) @ W||^2 = Mahalanobis^2
        t = thumbs.astype(np.float64)
        self.pix_mu = t.mean(0)
        _, _, vt = np.linalg.svd(t - self.pix_mu, full_matrices=False)
        self.pcs = vt[:n_pcs].T  # [D, k] orthonormal columns
        self.feat_thr = 1.0
        self.pix_thr = 1.0

    def feature_score(self, feats: np.ndarray) -> np.ndarray:
        z = (feats - self.mu) @ self.whiten
        return (z * z).sum(1) / z.shape[1]

    def pixel_score(self, thumbs: np.ndarray) -> np.ndarray:
        r = thumbs - self.pix_mu
        proj = r @ self.pcs
        return np.maximum((r * r).sum(1) - (proj * proj).sum(1), 0) / r.shape[1]

    def calibrate(self, val_feats: np.ndarray, val_thumbs: np.ndarray, quantile: float = 0.995,
                  margin: float = 1.25) -> Dict:
        self.feat_thr = float(np.quantile(self.feature_score(val_feats), quantile) * margin)
        self.pix_thr = float(np.quantile(self.pixel_score(val_thumbs), quantile) * margin)
        s = self.score(val_feats, val_thumbs)
        return {"false_rejection_rate": float((s > 1).mean()), "n": int(len(s)),
                "quantile": quantile, "margin": margin}

    def score(self, feats: np.ndarray, thumbs: np.ndarray) -> np.ndarray:
        return np.maximum(self.feature_score(feats) / self.feat_thr, self.pixel_score(thumbs) / self.pix_thr)


class GatedModel(nn.Module):
    """The exported graph: logit, features, ood and (for ensembles) members."""

    def __init__(self, model: Classifier, gate: Optional[GateParams],
                 members: Sequence[Tuple[int, int, torch.Tensor, float]] = ()):
        super().__init__()
        self.model = model
        self.has_gate = gate is not None
        self.n_members = len(members)
        if gate is not None:
            f32 = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
            self.register_buffer("mu", f32(gate.mu))
            self.register_buffer("whiten", f32(gate.whiten / gate.feat_thr ** 0.5))
            self.register_buffer("pix_mu", f32(gate.pix_mu))
            self.register_buffer("pcs", f32(gate.pcs))
            self.pix_scale = 1.0 / gate.pix_thr
        if members:
            w = torch.zeros(model.out_channels, len(members))
            b = torch.zeros(len(members))
            for j, (s, e, wm, bm) in enumerate(members):
                w[s:e, j] = wm
                b[j] = bm
            self.register_buffer("member_w", w)
            self.register_buffer("member_b", b)

    def forward(self, x: torch.Tensor):
        f = self.model.features(x)
        pooled = f.mean(dim=(2, 3))
        logit = self.model.fc(pooled).squeeze(1)
        outs = [logit, f]
        if self.has_gate:
            z = (pooled - self.mu) @ self.whiten
            d_f = (z * z).sum(1) / z.shape[1]
            r = thumbnails(x) - self.pix_mu
            p = r @ self.pcs
            d_p = torch.clamp((r * r).sum(1) - (p * p).sum(1), min=0) / r.shape[1] * self.pix_scale
            outs.append(torch.maximum(d_f, d_p))
        if self.n_members:
            outs.append(pooled @ self.member_w + self.member_b)
        return tuple(outs)


def uncertainty_from_members(member_logits: np.ndarray, temperature: float) -> np.ndarray:
    p = 1 / (1 + np.exp(-member_logits / temperature))
    return p.std(axis=1)


def uncertainty_block(member_logits: np.ndarray, y: np.ndarray, p: np.ndarray, threshold: float,
                      temperature: float, flag_fraction: float = 0.05) -> Dict:
    u = uncertainty_from_members(member_logits, temperature)
    cutoff = float(np.quantile(u, 1 - flag_fraction))
    flagged = u > cutoff
    err = ((p >= threshold).astype(int) != y.astype(int))
    rate = lambda m: float(err[m].mean()) if m.any() else None  # noqa: E731
    return {"output": "members", "method": "ensemble_disagreement",
            "measure": "population std of the members' calibrated probabilities sigmoid(member_logit / temperature)",
            "cutoff": cutoff,
            "validation": {"n": int(len(u)), "flagged_fraction": float(flagged.mean()),
                           "error_rate_flagged": rate(flagged), "error_rate_unflagged": rate(~flagged),
                           "errors_flagged": int(err[flagged].sum()), "errors_total": int(err.sum()),
                           "cutoff_rule": f"{1 - flag_fraction:.0%} quantile of validation uncertainty"}}
