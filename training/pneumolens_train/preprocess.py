"""The preprocessing spec of docs/model-contract.md, implemented once for Python.

The same algorithm lives in src/model/preprocess.ts; golden fixtures written by
`export.py` prove the two agree.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Tuple

import numpy as np
from PIL import Image

DEFAULT_SPEC: Dict[str, Any] = {
    "color": "gray_bt601",
    "resize": {"mode": "stretch", "filter": "bilinear_antialias", "pad_value": 0},
    "scale": 1.0 / 255.0,
    "normalize": {"mode": "fixed", "mean": 0.5, "std": 0.25},
}


def load_gray(path_or_img) -> np.ndarray:
    """Decode an image file to float32 gray values in 0..255 (alpha composited onto black)."""
    img = path_or_img if isinstance(path_or_img, Image.Image) else Image.open(path_or_img)
    img.load()
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit sources (PIL opens 16-bit PNG as "I"): value / 257 as the spec says, whatever the range
        return (np.asarray(img, dtype=np.float32) / 257.0).astype(np.float32)
    if mode == "F":
        return np.asarray(img, dtype=np.float32)
    if mode == "L":
        return np.asarray(img, dtype=np.float32)
    if mode == "LA":
        a = np.asarray(img, dtype=np.float32)
        return a[..., 0] * a[..., 1] / 255.0
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
    gray = 0.299 * rgba[..., 0] + 0.587 * rgba[..., 1] + 0.114 * rgba[..., 2]
    if mode in ("RGBA", "PA", "P") and img.mode != "RGB":
        gray = gray * rgba[..., 3] / 255.0
    return gray.astype(np.float32)


def gray_from_array(arr: np.ndarray) -> np.ndarray:
    """Colour step of the spec for an HxW, HxWx1..4 array of 0..255 values."""
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


def normalize(x: np.ndarray, spec: Dict[str, Any]) -> np.ndarray:
    """Scale 0..255 values and normalise. Throws on values outside the 0..255 range."""
    if not np.all(np.isfinite(x)):
        raise ValueError("image contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 255.0 + 1e-3:
        raise ValueError(f"pixel values must be in 0..255, got {lo:.3f}..{hi:.3f}")
    y = x.astype(np.float32) * np.float32(spec["scale"])
    n = spec["normalize"]
    if n["mode"] == "fixed":
        return ((y - np.float32(n["mean"])) / np.float32(n["std"])).astype(np.float32)
    if n["mode"] == "per_image":
        m = y.mean(dtype=np.float64)
        s = y.std(dtype=np.float64)
        return ((y - np.float32(m)) / np.float32(max(s, 1e-6))).astype(np.float32)
    raise ValueError(f"unknown normalize mode {n['mode']!r}")


def preprocess_gray(gray: np.ndarray, size: Tuple[int, int], spec: Dict[str, Any]) -> np.ndarray:
    """0..255 gray HxW -> float32 [1, H, W] model input."""
    h, w = size
    return normalize(resize(gray, h, w, spec), spec)[None]


def preprocess_file(path, size: Tuple[int, int], spec: Dict[str, Any]) -> np.ndarray:
    return preprocess_gray(load_gray(path), size, spec)
