"""Losses for the class imbalance: class-weighted BCE, focal loss, label smoothing, mixup."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def smooth(y: torch.Tensor, eps: float) -> torch.Tensor:
    return y * (1 - eps) + 0.5 * eps


def weighted_bce(logit: torch.Tensor, y: torch.Tensor, pos_weight: Optional[float] = None,
                 neg_weight: Optional[float] = None) -> torch.Tensor:
    """Binary cross-entropy with per-class weights (soft targets allowed)."""
    pw = 1.0 if pos_weight is None else pos_weight
    nw = 1.0 if neg_weight is None else neg_weight
    loss = -(pw * y * F.logsigmoid(logit) + nw * (1 - y) * F.logsigmoid(-logit))
    return loss.mean()


def focal_loss(logit: torch.Tensor, y: torch.Tensor, gamma: float = 2.0, alpha: Optional[float] = 0.25
               ) -> torch.Tensor:
    """Lin et al. 2017: FL = -alpha_t (1-p_t)^gamma log(p_t), mean over the batch (soft targets ok)."""
    p = torch.sigmoid(logit)
    ce = F.binary_cross_entropy_with_logits(logit, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss.mean()


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, g: torch.Generator, extra: Optional[torch.Tensor] = None):
    """Zhang et al. 2018: convex combinations of pairs of inputs and of their targets (and of `extra`,
    e.g. the lung-field masks, which are then returned third)."""
    if alpha <= 0:
        return (x, y) if extra is None else (x, y, extra)
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0], generator=g)
    out = (lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm])
    if extra is None:
        return out
    return out + (lam * extra + (1 - lam) * extra[perm],)
