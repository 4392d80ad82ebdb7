"""Export step 4: golden fixtures for the TypeScript parity test (test/fixtures/golden): per image the
PNG, its model input as little-endian float32 [1,H,W] (.f32, made by preprocess.preprocess_file with the
card's spec), the logit, the calibrated probability and the Grad-CAM map (autograd, the reference for the
closed form the app uses). training/tests/test_preprocess.py checks the tensors and the card on the
Python side.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from .models import Classifier
from .preprocess import preprocess_file

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def gradcam_autograd(model: Classifier, x: torch.Tensor, display_scale: Optional[float] = None) -> np.ndarray:
    """Grad-CAM of the logit at the features layer with PyTorch autograd (reference for parity)."""
    model.eval()
    x = x.clone().requires_grad_(False)
    f = model.features(x)
    f.retain_grad()
    logit = model.fc(f.mean(dim=(2, 3))).squeeze(1)
    logit.sum().backward()
    alpha = f.grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((alpha * f).sum(dim=1)).detach().numpy()
    if display_scale:  # the card's fixed scale (gradcam.display_scale): the same colour, the same evidence
        return np.clip(cam / display_scale, 0, 1).astype(np.float32)
    mx = cam.reshape(len(cam), -1).max(axis=1).reshape(-1, 1, 1)
    return np.where(mx > 0, cam / np.where(mx > 0, mx, 1), 0).astype(np.float32)


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
        x = preprocess_file(dst, size, spec)
        xt = torch.from_numpy(x).unsqueeze(0)
        with torch.no_grad():
            logit = float(model(xt)[0][0])
        cam = gradcam_autograd(model, xt, card["gradcam"].get("display_scale"))[0]
        x.astype("<f4").tofile(os.path.join(fixtures_dir, base + ".f32"))
        cases.append({"image": base + ".png", "tensor": base + ".f32", "logit": logit,
                      "probability": float(1 / (1 + np.exp(-(logit / t + bias)))),
                      "cam": [round(float(v), 7) for v in cam.reshape(-1)], "cam_shape": list(cam.shape)})
    manifest = {"card": os.path.relpath(card_path, REPO), "cases": cases,
                "written_by": "training/pneumolens_train/export.py"}
    with open(os.path.join(fixtures_dir, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=1)
    print(f"wrote {len(cases)} golden fixtures to {fixtures_dir}", file=sys.stderr)
