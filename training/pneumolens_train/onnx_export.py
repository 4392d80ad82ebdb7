"""Export step 2: the ONNX file, verified. The graph (gate.GatedModel) is written with a dynamic batch,
then run in ONNX Runtime through onnxruntime-node (the product's runtime, training/ort_check.mjs) on
real validation images and on noise; any output that differs from PyTorch by 1e-4 or more (relative to
max(1, |ref|)) removes the file and fails the export.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List

import numpy as np
import torch

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ORT_CHECK = os.path.join(REPO, "training", "ort_check.mjs")
GATE_TOLERANCE = 2e-3
TOLERANCE = 1e-4


def output_names(has_scope: bool, has_members: bool) -> List[str]:
    """The graph's outputs in order (docs/model-contract.md, "ONNX graph")."""
    return ["logit", "features", "ood"] + (["scope"] if has_scope else []) + (["members"] if has_members else [])


def write_onnx(graph: torch.nn.Module, path: str, size: int, out_names: List[str]) -> None:
    dummy = torch.randn(2, 1, size, size)
    torch.onnx.export(graph, dummy, path, input_names=["input"], output_names=out_names,
                      dynamic_axes={n: {0: "batch"} for n in ["input"] + out_names},
                      opset_version=13, do_constant_folding=True)


def run_ort(onnx_path: str, x: np.ndarray) -> Dict[str, np.ndarray]:
    """All outputs of the ONNX file for input x, computed by onnxruntime-node."""
    with tempfile.NamedTemporaryFile(suffix=".f32", delete=False) as fh:
        fh.write(np.ascontiguousarray(x, dtype="<f4").tobytes())
        tmp = fh.name
    try:
        r = subprocess.run(["node", ORT_CHECK, os.path.abspath(onnx_path), tmp, *map(str, x.shape)], capture_output=True,
                           text=True, cwd=REPO, timeout=300)
    finally:
        os.unlink(tmp)
    if r.returncode != 0:
        raise RuntimeError(f"ONNX Runtime check failed to run: {r.stderr.strip()[-2000:]}")
    out = json.loads(r.stdout)
    return {k: np.asarray(v["data"], dtype=np.float32).reshape(v["dims"]) for k, v in out.items()}


def verify_onnx(graph: torch.nn.Module, onnx_path: str, sample: torch.Tensor, out_names: List[str]) -> Dict[str, float]:
    """ONNX Runtime == PyTorch on `sample` (model inputs [N,1,H,W]); removes the file and raises if not."""
    graph.eval()  # torch.onnx.export restores the wrapper's mode; make sure the reference runs in eval
    with torch.no_grad():
        ref = dict(zip(out_names, (t.numpy() for t in graph(sample))))
    got = run_ort(onnx_path, sample.numpy())
    diffs = {k: float(np.abs(got[k] - ref[k]).max() / max(1.0, float(np.abs(ref[k]).max()))) for k in out_names}
    print("ONNX Runtime vs PyTorch, max |diff| (relative to max(1, |ref|)): "
          + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()), file=sys.stderr)
    # the gate scores (ood, scope) are exp() of a long float32 dot product: their relative error is the
    # absolute error of that logit, so they get a looser (still far below any decision) tolerance
    if not all(v < (GATE_TOLERANCE if k in ("ood", "scope") else TOLERANCE) for k, v in diffs.items()):
        os.unlink(onnx_path)
        raise RuntimeError(f"ONNX export differs from PyTorch ({diffs}); removed")
    return diffs
