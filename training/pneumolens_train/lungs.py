"""Weak lung-field masks, learnt from nothing but the images (no annotations exist here).

How the lung fields are found (stated in the card and the README):
1. the stored image is shrunk to 64x64 and smoothed (3x3 mean);
2. "dark" = below the image's own 45th percentile inside the central window (rows 8-88%, columns
   6-94%): aerated lung is the darkest tissue inside the body;
3. dark regions connected to the image border are air outside the body (or outside the collimation),
   found by a flood fill from the border (repeated 3x3 max-pooling restricted to dark pixels), and removed;
4. what remains inside the central window, opened (3x3 min then max) to drop specks, is the mask;
5. the population prior is the mean of these masks over the training films; places where it is below
   0.25 (shoulders, neck, flanks) are dropped from every mask;
6. where that leaves less than 6% or more than 60% of the image (an unusual film), the prior itself
   (soft) is the mask;
7. the lung *field* is that mask dilated by two cells (of 64) joined with the places where the prior is at
   least 0.5, so that an opacity inside the lung (bright, the finding itself) is inside the field.
Used for the lung-focus training loss (Grad-CAM mass outside the mask is penalised) and to measure
how much of a Grad-CAM lies inside the lung fields.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

SIDE = 64
BG_FRACTION = 0.5
PRIOR_MIN = 0.4
WINDOW = (0.08, 0.88, 0.06, 0.94)  # rows from, to; columns from, to (fractions)


def _window(side: int = SIDE) -> torch.Tensor:
    r0, r1, c0, c1 = WINDOW
    w = torch.zeros(1, 1, side, side)
    w[..., int(r0 * side):int(r1 * side), int(c0 * side):int(c1 * side)] = 1
    return w


@torch.no_grad()
def raw_masks(images_u8: np.ndarray, batch: int = 512) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-image masks [N,1,64,64] in {0,1} and whether each one is plausible [N] (bool)."""
    win = _window()
    out, ok = [], []
    for i in range(0, len(images_u8), batch):
        x = torch.from_numpy(images_u8[i:i + batch]).float()[:, None] / 255.0
        x = F.interpolate(x, size=(SIDE, SIDE), mode="area")
        x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
        n = x.shape[0]
        inside = x.flatten(1)[:, win.flatten() > 0]
        thr = torch.quantile(inside, 0.45, dim=1).view(n, 1, 1, 1)
        dark = (x < thr).float()
        # air outside the body is darker than aerated lung: the flood runs only through pixels below
        # BG_FRACTION of the lung threshold (relative to the image's own 1st percentile)
        lo = torch.quantile(x.flatten(1), 0.01, dim=1).view(n, 1, 1, 1)
        air = (x < lo + BG_FRACTION * (thr - lo)).float()
        border = torch.ones_like(dark)
        border[..., 2:-2, 2:-2] = 0
        reach = air * border
        for _ in range(2 * SIDE):
            nxt = F.max_pool2d(reach, 3, 1, 1) * air
            if torch.equal(nxt, reach):
                break
            reach = nxt
        reach = F.max_pool2d(reach, 3, 1, 1)
        m = dark * (1 - reach) * win
        m = -F.max_pool2d(-m, 3, 1, 1)       # erode
        m = F.max_pool2d(m, 3, 1, 1)         # dilate
        area = m.mean(dim=(1, 2, 3))
        out.append(m)
        ok.append((area >= 0.06) & (area <= 0.60))
    return torch.cat(out), torch.cat(ok)


def lung_masks(images_u8: np.ndarray, prior: Optional[torch.Tensor] = None
               ) -> Tuple[np.ndarray, torch.Tensor, float]:
    """(masks uint8 [N,64,64] in 0..255 (soft where the prior stands in), prior [1,1,64,64], share of
    images that needed the prior). `prior`: the population prior (default: from these images)."""
    m, ok = raw_masks(images_u8)
    if prior is None:
        prior = m[ok].mean(0, keepdim=True) if ok.any() else _window()
    m = m * (prior >= PRIOR_MIN).float()   # drop what is rarely lung at that place (shoulders, neck, flanks)
    area = m.mean(dim=(1, 2, 3))
    ok = ok & (area >= 0.06)
    m[~ok] = prior[0]
    # the lung *field* includes what is not dark: an opacity (consolidation) inside the lung is the finding
    m = torch.maximum(F.max_pool2d(m, 5, 1, 2), (prior >= 0.5).float().expand_as(m)) * _window()
    return (m[:, 0] * 255).round().to(torch.uint8).numpy(), prior, float((~ok).float().mean())


def cam_mass_inside(cam: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of positive CAM mass inside the mask, per image. cam [N,h,w] (any sign), masks [N,H,W] in 0..1."""
    pos = cam.clamp(min=0)
    m = F.interpolate(masks[:, None].float(), size=pos.shape[-2:], mode="area")[:, 0]
    total = pos.flatten(1).sum(1)
    return torch.where(total > 0, (pos * m).flatten(1).sum(1) / total.clamp(min=1e-12), torch.zeros_like(total))
