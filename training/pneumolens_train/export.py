"""Export trained checkpoint(s) to ONNX with a model card and golden parity fixtures.

    /usr/bin/python3 -m pneumolens_train.export --run runs/cbam --name pneumolens --out ../models
    # feature-level ensemble of several trained runs (one concatenated head, logits averaged):
    /usr/bin/python3 -m pneumolens_train.export --run runs/a runs/b --name pneumolens --out ../models

One idea per file, joined here:

    checkpoint.read_runs -> fit.fit (calibration, gate, intended-use head, uncertainty)
      -> onnx_export (write + ONNX Runtime parity) -> card.build_card -> fixtures.write_fixtures

The ONNX graph outputs `logit` [N] and `features` [N,C,h,w] (plus `ood`, `scope`, `members`); the head is
GAP + Linear, so the Grad-CAM of the logit is exact in closed form (docs/model-contract.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

import torch

from .card import build_card, write_card
from .checkpoint import read_runs
from .fit import fit, write_split_records
from .fixtures import write_fixtures
from .gate import GatedModel
from .onnx_export import REPO, output_names, verify_onnx, write_onnx
from .preprocess import model_input


PREVIOUS_NOTE = ("the previous model's development table (its own validation split of the same sources; "
                 "the NIH rows of 2.0.0 were forced past its intended-use gate)")


def export(runs: List[str], name: str, out_dir: str, version: str, fixtures_dir: Optional[str],
           fixture_images: Sequence[str], data: Optional[str], gate_train_limit: int = 0,
           threshold_policy: Optional[str] = None, outlier_exposure: int = 1200, intended_use: bool = False,
           gate_extra: Sequence[str] = (), loso: Optional[str] = None, previous: Optional[str] = None) -> Dict:
    f = fit(read_runs(runs), data, gate_train_limit, threshold_policy, outlier_exposure, intended_use, gate_extra)

    graph = GatedModel(f.model, f.gate, f.members, f.scope).eval()
    out_names = output_names(f.scope is not None, bool(f.members))
    os.makedirs(out_dir, exist_ok=True)
    onnx_path = os.path.join(out_dir, f"{name}.onnx")
    write_onnx(graph, onnx_path, f.size, out_names)
    # verify ONNX Runtime == PyTorch on real validation images and on noise
    g = torch.Generator().manual_seed(0)
    sample = torch.cat([model_input(f.xva[:3, None], f.spec), torch.randn(1, 1, f.size, f.size, generator=g)])
    verify_onnx(graph, onnx_path, sample, out_names)
    write_split_records(f, out_dir)

    card = build_card(f, name, version, onnx_path)
    if previous:
        with open(previous) as fh:
            prev = json.load(fh)
        card["metrics"]["previous"] = {"version": prev["version"], "note": PREVIOUS_NOTE,
                                       "by_source": prev.get("metrics", {}).get("by_source", [])}
    if loso:
        with open(loso) as fh:
            t = json.load(fh)
        card["metrics"]["leave_one_source_out"] = {"method": t["method"], "rows": t["rows"]}
    card_path = write_card(card, out_dir, name)
    print(f"wrote {onnx_path} ({os.path.getsize(onnx_path) / 1e6:.1f} MB) and {card_path}", file=sys.stderr)
    if fixtures_dir:
        write_fixtures(f.model, card, card_path, fixtures_dir, fixture_images)
    return card


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Export pneumolens run(s) to ONNX + model card + fixtures")
    ap.add_argument("--run", nargs="+", required=True, help="training output folder(s); several = ensemble")
    ap.add_argument("--name", default="pneumolens")
    ap.add_argument("--version", default="1.0.0")
    ap.add_argument("--out", default=os.path.join(REPO, "models"))
    ap.add_argument("--fixtures", default=os.path.join(REPO, "test", "fixtures", "golden"))
    ap.add_argument("--fixture-images", nargs="*", default=None,
                    help="PNG images for the golden fixtures (default: the ones already in --fixtures)")
    ap.add_argument("--data", default=None, help="dataset folder (default: the one the run was trained on)")
    ap.add_argument("--threshold-policy", default=None,
                    help="youden | youden_high:E | sensitivity:X | fixed:X (default: the run's config)")
    ap.add_argument("--outlier-exposure", type=int, default=1200,
                    help="synthetic outliers for the gate's outlier-exposure head (0 disables it)")
    ap.add_argument("--intended-use", action="store_true",
                    help="fit the intended-use head (declines films unlike the primary source; 2.0.0 had it)")
    ap.add_argument("--gate-extra", nargs="*", default=[],
                    help="folders of real chest X-rays of other sites: inside the gate's fit, never the classifier's")
    ap.add_argument("--previous", help="the previous model's card: its development table goes beside the new one")
    ap.add_argument("--loso", help="levers / leave-one-source-out table (probe.py --table) for the card")
    ap.add_argument("--gate-train-limit", type=int, default=0,
                    help="fit the input gate on at most N training images (default: all)")
    a = ap.parse_args(argv)
    imgs = a.fixture_images
    if imgs is None:
        imgs = sorted(os.path.join(a.fixtures, f) for f in os.listdir(a.fixtures) if f.endswith(".png")) \
            if os.path.isdir(a.fixtures) else []
    export(a.run, a.name, a.out, a.version, a.fixtures, imgs, a.data, a.gate_train_limit, a.threshold_policy,
           a.outlier_exposure, a.intended_use, a.gate_extra, a.loso, a.previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
