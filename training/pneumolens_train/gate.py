"""Input-validity gate and ensemble uncertainty, fitted on the training data and baked into the
ONNX graph (docs/model-contract.md: outputs `ood` and `members`).

Gate components, each divided by its own threshold so that `ood > 1` means "reject":
- feature_mahalanobis: squared Mahalanobis distance of the pooled CAM-layer features to the
  training chest X-rays (mean and shrunk covariance of the training images).
- pixel_pca_residual: mean squared residual of a 32x32 thumbnail of the model input after
  projection onto the top principal components of training thumbnails. Frontal chest X-rays are
  strongly aligned, so documents, photographs, other body parts and rotated images leave a large
  residual even when the CNN features happen to look familiar.
- pixel_pca_mahalanobis: mean squared whitened coefficient of the thumbnail *inside* that
  principal subspace; catches inverted, upside-down or cropped X-rays, which are well explained by
  the components but with coefficients far outside the training range.
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
from .preprocess import model_input


def thumbnails(x: torch.Tensor, side: int = 32) -> torch.Tensor:
    k = int(x.shape[-1]) // side  # the input size is fixed per model, so a constant in the graph
    return F.avg_pool2d(x, k).flatten(1)


@torch.no_grad()
def collect(model: Classifier, images_u8: np.ndarray, spec: Dict, batch: int = 64, progress=None
            ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled features, thumbnails and logits of stored 0..255 images [N,H,W] (`spec`: the card's
    preprocessing block, applied by preprocess.model_input)."""
    model.eval()
    feats, thumbs, logits = [], [], []
    for i in range(0, len(images_u8), batch):
        x = model_input(images_u8[i:i + batch, None], spec)
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
        coef = (t - self.pix_mu) @ self.pcs
        self.coef_scale = 1.0 / np.sqrt(np.maximum(coef.var(0), 1e-12))  # whitening of the coefficients
        self.feat_thr = 1.0
        self.pix_thr = 1.0
        self.coef_thr = 1.0

    def feature_score(self, feats: np.ndarray) -> np.ndarray:
        z = (feats - self.mu) @ self.whiten
        return (z * z).sum(1) / z.shape[1]

    def pixel_score(self, thumbs: np.ndarray) -> np.ndarray:
        r = thumbs - self.pix_mu
        proj = r @ self.pcs
        return np.maximum((r * r).sum(1) - (proj * proj).sum(1), 0) / r.shape[1]

    def coef_score(self, thumbs: np.ndarray) -> np.ndarray:
        z = ((thumbs - self.pix_mu) @ self.pcs) * self.coef_scale
        return (z * z).mean(1)

    def calibrate(self, val_feats: np.ndarray, val_thumbs: np.ndarray, quantile: float = 0.995,
                  margin: float = 1.5) -> Dict:
        self.feat_thr = float(np.quantile(self.feature_score(val_feats), quantile) * margin)
        self.pix_thr = float(np.quantile(self.pixel_score(val_thumbs), quantile) * margin)
        self.coef_thr = float(np.quantile(self.coef_score(val_thumbs), quantile) * margin)
        s = self.score(val_feats, val_thumbs)
        return {"false_rejection_rate": float((s > 1).mean()), "n": int(len(s)),
                "quantile": quantile, "margin": margin}

    def report(self, val_feats, val_thumbs) -> Dict:
        comps = self.components(val_feats, val_thumbs)
        s = np.maximum.reduce(list(comps.values()))
        return {"false_rejection_rate": float((s > 1).mean()), "n": int(len(s)),
                "per_component_false_rejection_rate": {k: float((v > 1).mean()) for k, v in comps.items()}}

    def set_outlier_head(self, w: np.ndarray, b: float, mu: np.ndarray, sc: np.ndarray) -> None:
        self.oe = (w, b, mu, sc)
        self.oe_thr = 0.0

    def outlier_logit(self, feats: np.ndarray, thumbs: np.ndarray) -> np.ndarray:
        w, b, mu, sc = self.oe
        return ((np.concatenate([feats, thumbs], 1) - mu) * sc) @ w + b

    def calibrate_outlier_head(self, val_feats: np.ndarray, val_thumbs: np.ndarray, quantile: float = 0.995,
                               margin: float = 2.0) -> None:
        """Threshold (logit units) = validation quantile + margin; the component is exp(logit - thr)."""
        self.oe_thr = float(np.quantile(self.outlier_logit(val_feats, val_thumbs), quantile) + margin)

    def components(self, feats: np.ndarray, thumbs: np.ndarray) -> Dict[str, np.ndarray]:
        c = {"feature_mahalanobis": self.feature_score(feats) / self.feat_thr,
             "pixel_pca_residual": self.pixel_score(thumbs) / self.pix_thr,
             "pixel_pca_mahalanobis": self.coef_score(thumbs) / self.coef_thr}
        if getattr(self, "oe", None) is not None:
            c["outlier_exposure"] = np.exp(np.minimum(self.outlier_logit(feats, thumbs) - self.oe_thr, 50))
        return c

    def score(self, feats: np.ndarray, thumbs: np.ndarray) -> np.ndarray:
        return np.maximum.reduce(list(self.components(feats, thumbs).values()))


class GatedModel(nn.Module):
    """The exported graph: logit, features, ood, (with an intended-use head) scope and (for ensembles)
    members."""

    def __init__(self, model: Classifier, gate: Optional[GateParams],
                 members: Sequence[Tuple[int, int, torch.Tensor, float]] = (), scope=None):
        super().__init__()
        self.model = model
        self.has_scope = scope is not None
        if scope is not None:
            nf = model.out_channels
            wsc = scope.w * scope.sc
            self.register_buffer("scope_wf", torch.tensor(wsc[:nf], dtype=torch.float32))
            self.register_buffer("scope_wt", torch.tensor(wsc[nf:], dtype=torch.float32))
            self.scope_b = float(scope.b - (scope.mu * scope.sc) @ scope.w - scope.thr)
        self.has_gate = gate is not None
        self.n_members = len(members)
        if gate is not None:
            f32 = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
            self.register_buffer("mu", f32(gate.mu))
            self.register_buffer("whiten", f32(gate.whiten / gate.feat_thr ** 0.5))
            self.register_buffer("pix_mu", f32(gate.pix_mu))
            self.register_buffer("pcs", f32(gate.pcs))
            self.pix_scale = 1.0 / gate.pix_thr
            self.register_buffer("coef_w", f32(gate.coef_scale / gate.coef_thr ** 0.5))
            self.has_oe = getattr(gate, "oe", None) is not None
            if self.has_oe:
                w, b, mu, sc = gate.oe
                nf = len(gate.mu)
                self.register_buffer("oe_wf", f32((w * sc)[:nf]))
                self.register_buffer("oe_wt", f32((w * sc)[nf:]))
                self.oe_b = float(b - (mu * sc) @ w - gate.oe_thr)
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
            zc = p * self.coef_w
            d_c = (zc * zc).mean(1)
            ood = torch.maximum(torch.maximum(d_f, d_p), d_c)
            if self.has_oe:
                t = thumbnails(x)
                z_oe = pooled @ self.oe_wf + t @ self.oe_wt + self.oe_b
                ood = torch.maximum(ood, torch.exp(torch.clamp(z_oe, max=50.0)))
            outs.append(ood)
        if self.has_scope:
            z_sc = pooled @ self.scope_wf + thumbnails(x) @ self.scope_wt + self.scope_b
            outs.append(torch.exp(torch.clamp(z_sc, max=50.0)))
        if self.n_members:
            outs.append(pooled @ self.member_w + self.member_b)
        return tuple(outs)


def uncertainty_from_members(member_logits: np.ndarray, temperature: float, bias: float = 0.0) -> np.ndarray:
    p = 1 / (1 + np.exp(-(member_logits / temperature + bias)))
    return p.std(axis=1)


def uncertainty_block(member_logits: np.ndarray, y: np.ndarray, p: np.ndarray, threshold: float,
                      temperature: float, bias: float = 0.0, flag_fraction: float = 0.05) -> Dict:
    u = uncertainty_from_members(member_logits, temperature, bias)
    cutoff = float(np.quantile(u, 1 - flag_fraction))
    flagged = u > cutoff
    err = ((p >= threshold).astype(int) != y.astype(int))
    rate = lambda m: float(err[m].mean()) if m.any() else None  # noqa: E731
    return {"output": "members", "method": "ensemble_disagreement",
            "measure": "population std of the members' calibrated probabilities "
                       "sigmoid(member_logit / temperature + bias)",
            "cutoff": cutoff,
            "validation": {"n": int(len(u)), "flagged_fraction": float(flagged.mean()),
                           "error_rate_flagged": rate(flagged), "error_rate_unflagged": rate(~flagged),
                           "errors_flagged": int(err[flagged].sum()), "errors_total": int(err.sum()),
                           "cutoff_rule": f"{1 - flag_fraction:.0%} quantile of validation uncertainty"}}


# --------------------------------------------------------------------------- outlier exposure
NEGATIVE_KINDS = ("upside_down", "rotated_90", "inverted", "zoomed_crop", "smooth_field", "mirror_tiles")


def make_negatives(images_u8: np.ndarray, n: int, seed: int = 0) -> Tuple[np.ndarray, List[str]]:
    """Synthetic outliers for outlier exposure (Hendrycks et al. 2019), made from training X-rays by
    transformations that a chest X-ray reader must not accept (upside down, rotated, inverted,
    zoomed-in crops, mirror-tiled mosaics) and from smooth random fields. Documents, photographs,
    CT slices and other body parts are *not* among them, so those stay a fair test of the gate."""
    rng = np.random.default_rng(seed)
    N, H, W = images_u8.shape
    out = np.zeros((n, H, W), dtype=np.uint8)
    kinds = []
    for i in range(n):
        kind = NEGATIVE_KINDS[i % len(NEGATIVE_KINDS)]
        x = images_u8[rng.integers(N)].astype(np.float32)
        if kind == "upside_down":
            y = x[::-1]
        elif kind == "rotated_90":
            y = np.rot90(x, 1 if rng.random() < 0.5 else 3)
        elif kind == "inverted":
            y = 255 - x
        elif kind == "zoomed_crop":
            s = int(H * rng.uniform(0.25, 0.5))
            r0, c0 = rng.integers(0, H - s), rng.integers(0, W - s)
            crop = torch.from_numpy(np.ascontiguousarray(x[r0:r0 + s, c0:c0 + s]))[None, None]
            y = F.interpolate(crop, size=(H, W), mode="bilinear", align_corners=False)[0, 0].numpy()
        elif kind == "mirror_tiles":
            h2, w2 = H // 2, W // 2
            q = x[rng.integers(0, H - h2):, :][:h2, rng.integers(0, W - w2):][:, :w2]
            y = np.block([[q, q[:, ::-1]], [q[::-1], q[::-1, ::-1]]])
        else:  # smooth random field with a random intensity range
            g = torch.from_numpy(rng.normal(size=(1, 1, 8, 8)).astype(np.float32))
            f = F.interpolate(g, size=(H, W), mode="bicubic", align_corners=False)[0, 0].numpy()
            f = (f - f.min()) / max(float(f.max() - f.min()), 1e-6)
            lo = rng.uniform(0, 120)
            y = lo + f * rng.uniform(60, 255 - lo)
        out[i] = np.clip(np.rint(np.asarray(y)[:H, :W]), 0, 255).astype(np.uint8)
        kinds.append(kind)
    return out, kinds


def fit_outlier_head(pos: np.ndarray, neg: np.ndarray, l2: float = 1e-3, iters: int = 300
                     ) -> Tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Class-balanced L2-regularised logistic regression on standardised inputs (pooled features and
    thumbnail pixels, concatenated).
    Returns (weights, bias, feature mean, feature scale); score = ((f - mean) * scale) @ w + b."""
    mu = pos.mean(0)
    sc = 1.0 / np.maximum(np.concatenate([pos, neg]).std(0), 1e-6)
    X = torch.from_numpy(np.concatenate([(pos - mu) * sc, (neg - mu) * sc]).astype(np.float32))
    y = torch.cat([torch.zeros(len(pos)), torch.ones(len(neg))])
    wts = torch.where(y > 0, 0.5 / len(neg), 0.5 / len(pos))
    w = torch.zeros(X.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=0.5, max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        z = X @ w + b
        loss = (wts * F.binary_cross_entropy_with_logits(z, y, reduction="none")).sum() + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy().astype(np.float64), float(b.detach()), mu, sc
