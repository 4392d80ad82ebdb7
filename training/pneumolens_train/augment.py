"""Batched augmentation on CPU tensors (affine via one grid_sample for the whole batch).

Chest anatomy is not left-right symmetric, so flips are off unless asked for.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    rotate_deg: float = 10.0
    shift: float = 0.08          # fraction of the image
    scale_min: float = 0.85      # zoom out / in
    scale_max: float = 1.20
    shear_deg: float = 8.0
    brightness: float = 0.12     # additive, on 0..1 values
    contrast: float = 0.25       # multiplicative around the image mean, 1 +- this
    gamma: float = 0.30          # gamma in [1-g, 1+g]
    noise: float = 0.02          # gaussian noise std, applied to half the batch
    blur_p: float = 0.2          # probability of a 3x3 blur
    erase_p: float = 0.25        # probability of one random-erasing box
    hflip_p: float = 0.0
    # acquisition shift (other hospitals, devices, digitisation): off unless asked for
    sharpen_p: float = 0.0       # probability of an unsharp mask
    downup_p: float = 0.0        # probability of down- then up-sampling (lost resolution)
    marker_p: float = 0.0        # probability of a burned-in marker (bright glyph-like block) near a border
    border_p: float = 0.0        # probability of a black or white frame of random width
    collimation_p: float = 0.0   # probability of a collimator edge: one or two sides shaded dark or bright
    grid_p: float = 0.0          # probability of anti-scatter grid lines (fine periodic stripes)
    downup_min: float = 0.25     # smallest down-sampling factor of downup
    zoom_out_p: float = 0.0      # probability of a zoom-out into a surround: the chest small on a large plate
    zoom_out_min: float = 0.5    # smallest side of the film inside the surround (fraction of the canvas)


def affine(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator, masks: Optional[torch.Tensor] = None):
    n = x.shape[0]
    u = lambda: torch.rand(n, generator=g) * 2 - 1  # noqa: E731
    ang = u() * math.radians(cfg.rotate_deg)
    sh = u() * math.radians(cfg.shear_deg)
    s = cfg.scale_min + torch.rand(n, generator=g) * (cfg.scale_max - cfg.scale_min)
    tx, ty = u() * cfg.shift * 2, u() * cfg.shift * 2
    cos, sin = torch.cos(ang), torch.sin(ang)
    # output->input sampling matrix: inverse zoom, rotation and shear
    a11 = cos / s
    a12 = (-sin + torch.tan(sh) * cos) / s
    a21 = sin / s
    a22 = (cos + torch.tan(sh) * sin) / s
    theta = torch.stack([torch.stack([a11, a12, tx], 1), torch.stack([a21, a22, ty], 1)], 1)
    if cfg.hflip_p > 0:
        flip = (torch.rand(n, generator=g) < cfg.hflip_p).float() * -2 + 1
        theta[:, 0, 0] *= flip
        theta[:, 1, 0] *= flip
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if masks is None:
        return out
    # the same geometric transform for the lung-field masks (normalised coordinates: any resolution)
    mgrid = F.affine_grid(theta, list(masks.shape), align_corners=False)
    return out, F.grid_sample(masks, mgrid, mode="bilinear", padding_mode="zeros", align_corners=False)


def zoom_out(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator, masks: Optional[torch.Tensor] = None):
    """A small child on a large plate: with probability zoom_out_p, the film shrinks to a side of
    zoom_out_min..0.85 of the canvas at a random place inside it, and the rest is a flat surround, dark
    (unexposed film read as black), bright (read as white) or mid gray, each as other hospitals' films
    carry it. Lung-field masks move with the film (zero in the surround)."""
    n = x.shape[0]
    pick = torch.rand(n, generator=g) < cfg.zoom_out_p
    idx = pick.nonzero().flatten()
    if len(idx) == 0:
        return x if masks is None else (x, masks)
    k = len(idx)
    s = cfg.zoom_out_min + torch.rand(k, generator=g) * (0.85 - cfg.zoom_out_min)
    room = 1 / s - 1  # the film stays whole inside the canvas
    tx = (torch.rand(k, generator=g) * 2 - 1) * room
    ty = (torch.rand(k, generator=g) * 2 - 1) * room
    zero = torch.zeros(k)
    theta = torch.stack([torch.stack([1 / s, zero, tx], 1), torch.stack([zero, 1 / s, ty], 1)], 1)
    sub = x[idx]
    grid = F.affine_grid(theta, list(sub.shape), align_corners=False)
    inside = F.grid_sample(torch.ones_like(sub), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    kind = torch.rand(k, generator=g)
    level = torch.where(kind < 0.4, 0.05 * torch.rand(k, generator=g),
                        torch.where(kind < 0.8, 0.85 + 0.15 * torch.rand(k, generator=g),
                                    0.3 + 0.4 * torch.rand(k, generator=g))).view(k, 1, 1, 1)
    out = x.clone()
    out[idx] = F.grid_sample(sub, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + (1 - inside) * level
    if masks is None:
        return out
    m = masks.clone()
    mgrid = F.affine_grid(theta, list(masks[idx].shape), align_corners=False)
    m[idx] = F.grid_sample(masks[idx], mgrid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out, m


def photometric(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    shape = (n, 1, 1, 1)
    gam = 1 + (torch.rand(shape, generator=g) * 2 - 1) * cfg.gamma
    x = x.clamp(0, 1) ** gam
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    c = 1 + (torch.rand(shape, generator=g) * 2 - 1) * cfg.contrast
    b = (torch.rand(shape, generator=g) * 2 - 1) * cfg.brightness
    x = (x - mean) * c + mean + b
    if cfg.blur_p > 0:
        k = torch.tensor([[1., 2., 1.], [2., 4., 2.], [1., 2., 1.]]).div(16).view(1, 1, 3, 3)
        blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)
        m = (torch.rand(shape, generator=g) < cfg.blur_p).float()
        x = m * blurred + (1 - m) * x
    if cfg.sharpen_p > 0:
        k = torch.tensor([[1., 2., 1.], [2., 4., 2.], [1., 2., 1.]]).div(16).view(1, 1, 3, 3)
        blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)
        amount = torch.rand(shape, generator=g) * 1.5
        m = (torch.rand(shape, generator=g) < cfg.sharpen_p).float()
        x = x + m * amount * (x - blurred)
    if cfg.downup_p > 0:
        h, w = x.shape[2], x.shape[3]
        f = cfg.downup_min + (0.75 - cfg.downup_min) * torch.rand(1, generator=g).item()
        small = F.interpolate(x, size=(max(8, int(h * f)), max(8, int(w * f))), mode="bilinear", align_corners=False)
        up = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        m = (torch.rand(shape, generator=g) < cfg.downup_p).float()
        x = m * up + (1 - m) * x
    if cfg.noise > 0:
        m = (torch.rand(shape, generator=g) < 0.5).float()
        x = x + m * torch.randn(x.shape, generator=g) * cfg.noise
    if cfg.erase_p > 0:
        h, w = x.shape[2], x.shape[3]
        for i in range(n):
            if torch.rand(1, generator=g).item() < cfg.erase_p:
                eh = int(h * (0.1 + 0.2 * torch.rand(1, generator=g).item()))
                ew = int(w * (0.1 + 0.2 * torch.rand(1, generator=g).item()))
                y0 = int(torch.randint(0, h - eh + 1, (1,), generator=g))
                x0 = int(torch.randint(0, w - ew + 1, (1,), generator=g))
                x[i, :, y0:y0 + eh, x0:x0 + ew] = torch.rand(1, generator=g).item()
    if cfg.marker_p > 0 or cfg.border_p > 0:
        x = markers_and_borders(x, cfg, g)
    if cfg.collimation_p > 0 or cfg.grid_p > 0:
        x = collimation_and_grid(x, cfg, g)
    return x.clamp(0, 1)


def markers_and_borders(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Burned-in markers (a bright block of random strokes, like an "R"/"L" or a text label, near a
    border) and black/white frames: things other hospitals' films carry that say nothing about the lungs."""
    n, _, h, w = x.shape
    r = lambda: torch.rand(1, generator=g).item()  # noqa: E731
    for i in range(n):
        if r() < cfg.marker_p:
            mh, mw = int(h * (0.04 + 0.08 * r())), int(w * (0.04 + 0.12 * r()))
            corner_y = int(r() * h * 0.15) if r() < 0.5 else h - mh - int(r() * h * 0.15)
            x0 = int(r() * (w - mw))
            strokes = (torch.rand(mh, mw, generator=g) < 0.45).float()
            x[i, 0, corner_y:corner_y + mh, x0:x0 + mw] = torch.maximum(
                x[i, 0, corner_y:corner_y + mh, x0:x0 + mw], strokes * (0.7 + 0.3 * r()))
        if r() < cfg.border_p:
            b = max(1, int(min(h, w) * 0.08 * r()))
            v = 0.0 if r() < 0.7 else 1.0
            x[i, :, :b, :] = v; x[i, :, -b:, :] = v
            x[i, :, :, :b] = v; x[i, :, :, -b:] = v
    return x


def collimation_and_grid(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Collimator edges (a side of the film shaded, with a soft or hard edge, as when the field is
    narrowed) and anti-scatter grid lines (faint periodic stripes): other devices, same lungs."""
    n, _, h, w = x.shape
    r = lambda: torch.rand(1, generator=g).item()  # noqa: E731
    for i in range(n):
        if r() < cfg.collimation_p:
            for _ in range(1 + int(r() < 0.4)):
                depth = 0.03 + 0.12 * r()
                side = int(r() * 4)
                v = 0.0 if r() < 0.6 else 0.85 + 0.15 * r()
                k = max(1, int(depth * (h if side < 2 else w)))
                if side == 0:
                    x[i, :, :k, :] = v
                elif side == 1:
                    x[i, :, -k:, :] = v
                elif side == 2:
                    x[i, :, :, :k] = v
                else:
                    x[i, :, :, -k:] = v
        if r() < cfg.grid_p:
            period = 2 + int(r() * 4)
            amp = 0.02 + 0.05 * r()
            idx = torch.arange(w if r() < 0.5 else h, dtype=torch.float32)
            stripes = amp * torch.sin(2 * math.pi * idx / period)
            x[i, 0] = x[i, 0] + (stripes[None, :] if len(idx) == w else stripes[:, None])
    return x


def augment(x01: torch.Tensor, cfg: AugmentConfig, g: torch.Generator, masks: Optional[torch.Tensor] = None):
    """x01: [N,1,H,W] float in 0..1 -> augmented, same range. With `masks` [N,1,h,w] (lung fields):
    (image, masks moved by the same geometric transform)."""
    if masks is None:
        x = affine(x01, cfg, g)
        if cfg.zoom_out_p > 0:
            x = zoom_out(x, cfg, g)
        return photometric(x, cfg, g)
    x, m = affine(x01, cfg, g, masks)
    if cfg.zoom_out_p > 0:
        x, m = zoom_out(x, cfg, g, m)
    return photometric(x, cfg, g), m


def preset(name: str, hflip: float = 0.0) -> Optional[AugmentConfig]:
    """The named augmentation of a training config (`augment`: none | light | strong | shift | shift2); the
    config's `zoom_out` adds the zoom-out into a surround (zoom_out) to any of them."""
    if name == "none":
        return None
    a = AugmentConfig(hflip_p=hflip)
    if name == "light":
        a = AugmentConfig(rotate_deg=5, shift=0.04, scale_min=0.95, scale_max=1.08, shear_deg=3,
                          brightness=0.05, contrast=0.1, gamma=0.1, noise=0.0, blur_p=0.0, erase_p=0.0,
                          hflip_p=hflip)
    if name == "shift":
        a = AugmentConfig(hflip_p=hflip, gamma=0.4, contrast=0.35, sharpen_p=0.15, downup_p=0.2, marker_p=0.3,
                          border_p=0.15)
    if name == "shift2":
        # another hospital, imitated harder: exposure, resolution, noise, grids, markers, collimation, crops
        a = AugmentConfig(hflip_p=hflip, rotate_deg=12, shift=0.10, scale_min=0.80, scale_max=1.30,
                          gamma=0.5, contrast=0.45, brightness=0.15, noise=0.04, blur_p=0.3, sharpen_p=0.2,
                          downup_p=0.3, downup_min=0.2, marker_p=0.4, border_p=0.2, collimation_p=0.25, grid_p=0.15)
    return a
