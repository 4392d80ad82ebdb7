"""The preprocessing spec of docs/model-contract.md, implemented once for Python.

    load_gray (decode + colour) -> resize -> model_input (scale + normalise)

`model_input` is the only normalisation: training batches, the export (features, parity sample) and
the golden fixtures all go through it, with the card's `preprocessing` block as `spec`. The same
algorithm lives in src/model/preprocess.ts; the golden fixtures written by the exporter pin both
(training/tests/test_preprocess.py here, the TypeScript parity test there).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
from PIL import Image

DEFAULT_SPEC: Dict[str, Any] = {
    "color": "gray_bt601",
    "resize": {"mode": "stretch", "filter": "bilinear_antialias", "pad_value": 0},
    "scale": 1.0 / 255.0,
    "normalize": {"mode": "fixed", "mean": 0.5, "std": 0.25},
}


def load_gray(path_or_img) -> np.ndarray:
    """Steps 1-2 of the spec: decode an image file to float32 gray values in 0..255 (16-bit: value / 257;
    alpha composited onto black; RGB -> BT.601 luma, no rounding)."""
    img = path_or_img if isinstance(path_or_img, Image.Image) else Image.open(path_or_img)
    img.load()
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit sources (PIL opens 16-bit PNG as "I"): value / 257 as the spec says, whatever the range
        return (np.asarray(img, dtype=np.float32) / 257.0).astype(np.float32)
    if mode in ("F", "L", "LA"):
        return gray_from_array(np.asarray(img, dtype=np.float32))
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
    # palette images may carry transparency: composite them like RGBA; other modes have no alpha
    return gray_from_array(rgba if mode in ("RGBA", "PA", "P") else rgba[..., :3])


def gray_from_array(arr: np.ndarray) -> np.ndarray:
    """Step 2 (colour `gray_bt601`) for an HxW or HxWx1..4 array of 0..255 values: alpha composited
    onto black (`v * a / 255`), RGB -> 0.299 R + 0.587 G + 0.114 B, float32, no rounding."""
    a = np.asarray(arr, dtype=np.float32)
    if a.ndim == 2:
        return a
    c = a.shape[2]
    if c == 1:
        return a[..., 0]
    if c == 2:
        return a[..., 0] * a[..., 1] / 255.0
    g = 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]
    if c == 4:
        g = g * a[..., 3] / 255.0
    return g.astype(np.float32)


def _axis_weights(n_in: int, n_out: int) -> np.ndarray:
    """Dense (n_out, n_in) matrix of the bilinear_antialias filter along one axis."""
    m = np.zeros((n_out, n_in), dtype=np.float64)
    if n_in == n_out:
        np.fill_diagonal(m, 1.0)
        return m.astype(np.float32)
    scale = n_in / n_out
    fs = max(scale, 1.0)
    support = 1.0 * fs
    for i in range(n_out):
        center = (i + 0.5) * scale
        xmin = max(int(math.floor(center - support + 0.5)), 0)
        xmax = min(int(math.floor(center + support + 0.5)), n_in)
        ws = []
        for j in range(xmin, xmax):
            ws.append(max(0.0, 1.0 - abs((j - center + 0.5) / fs)))
        total = sum(ws)
        if total <= 0:
            m[i, min(int(math.floor(center)), n_in - 1)] = 1.0
        else:
            for k, j in enumerate(range(xmin, xmax)):
                m[i, j] = ws[k] / total
    return m.astype(np.float32)


def resize_bilinear_aa(gray: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Separable antialiased bilinear resize, horizontal pass then vertical, float32."""
    h, w = gray.shape
    x = gray.astype(np.float32)
    if w != out_w:
        x = x @ _axis_weights(w, out_w).T
    if h != out_h:
        x = _axis_weights(h, out_h) @ x
    return x.astype(np.float32)


def resize(gray: np.ndarray, height: int, width: int, spec: Dict[str, Any]) -> np.ndarray:
    r = spec["resize"]
    if r.get("filter", "bilinear_antialias") != "bilinear_antialias":
        raise ValueError(f"unsupported resize filter {r.get('filter')!r}")
    mode = r["mode"]
    if mode == "stretch":
        return resize_bilinear_aa(gray, height, width)
    if mode == "letterbox":
        h, w = gray.shape
        s = min(width / w, height / h)
        nw = max(1, int(round(w * s)))
        nh = max(1, int(round(h * s)))
        out = np.full((height, width), float(r.get("pad_value", 0)), dtype=np.float32)
        left = (width - nw) // 2
        top = (height - nh) // 2
        out[top:top + nh, left:left + nw] = resize_bilinear_aa(gray, nh, nw)
        return out
    raise ValueError(f"unknown resize mode {mode!r}")


def model_input(values, spec: Dict[str, Any], augment: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
                ) -> torch.Tensor:
    """Step 4 of the spec, THE one path from resized 0..255 gray values to the model input: training
    batches, the export's features and parity sample, and the golden fixtures all call it.

    `values`: 0..255 gray values, [H,W], [1,H,W] or [N,1,H,W] (numpy or torch, uint8 or float).
    `x = v * scale`; then `augment(x)` (training only: x in 0..1, same range out); then `fixed`:
    `(x - mean) / std` with the card's mean and std, or `per_image`: `(x - mean(x)) / max(std(x), 1e-6)`
    over each whole image (population std, statistics in float64 like src/model/preprocess.ts).
    Throws on NaN/inf and on values outside 0..255 (a mis-scaled input must never reach the model).
    Returns float32, same shape as `values`."""
    v = values if isinstance(values, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(values))
    if v.ndim < 2:
        raise ValueError(f"expected an image [H,W], [1,H,W] or a batch [N,1,H,W], got shape {tuple(v.shape)}")
    v = v.to(torch.float32)
    if v.numel():
        if not bool(torch.isfinite(v).all()):
            raise ValueError("image contains NaN or infinite values")
        lo, hi = float(v.min()), float(v.max())
        if lo < -1e-3 or hi > 255.0 + 1e-3:
            raise ValueError(f"pixel values must be in 0..255, got {lo:.3f}..{hi:.3f}")
    x = v * float(np.float32(spec["scale"]))
    if augment is not None:
        x = augment(x)
    n = spec["normalize"]
    if n["mode"] == "fixed":
        return (x - float(np.float32(n["mean"]))) / float(np.float32(n["std"]))
    if n["mode"] == "per_image":
        dims = (-2, -1) if x.ndim <= 3 else tuple(range(1, x.ndim))  # an image = all but the batch axis
        x64 = x.double()
        m = x64.mean(dim=dims, keepdim=True)
        s = ((x64 - m) ** 2).mean(dim=dims, keepdim=True).sqrt().clamp_min(1e-6)
        return (x - m.float()) / s.float()
    raise ValueError(f"unknown normalize mode {n['mode']!r}")


def resized_gray(path_or_img, size: Tuple[int, int], spec: Dict[str, Any], min_side: int = 1) -> np.ndarray:
    """Steps 1-3: image file -> float32 0..255 gray [H, W] at the model's input size."""
    g = load_gray(path_or_img)
    if g.ndim != 2 or min(g.shape) < min_side:
        raise ValueError(f"unusable image shape {g.shape}")
    return resize(g, size[0], size[1], spec)


def to_storage(resized: np.ndarray) -> np.ndarray:
    """Training storage only (docs/model-contract.md "Training storage"): the resized 0..255 gray
    rounded half-to-even to uint8, 1 byte per pixel. Inference and the golden fixtures never round;
    the difference is at most 0.5 gray level before `model_input`."""
    return np.clip(np.rint(resized), 0, 255).astype(np.uint8)


def preprocess_file(path_or_img, size: Tuple[int, int], spec: Dict[str, Any]) -> np.ndarray:
    """Steps 1-4 for one image: file -> float32 [1, H, W] model input (what the golden fixtures hold)."""
    return model_input(resized_gray(path_or_img, size, spec)[None], spec).numpy()
