"""What a training run leaves behind, read back: its checkpoint as a model, its record, and the machine
it ran on.

train.py writes OUT/best.pt ({"model": state_dict, "config": TrainConfig dict, "epoch"}), config.json,
calibration.json and split.json; train.py's final calibration and the exporter read them here.
"""
from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch

from .models import build_model

# keys on which the runs of one feature-level ensemble must agree (same data, split and preprocessing)
MUST_AGREE = ("size", "normalize", "resize_mode", "seed", "val_fraction", "data", "extra_data")


@dataclass
class Run:
    path: str
    config: Dict        # config.json (TrainConfig.to_dict())
    calibration: Dict   # calibration.json
    model: torch.nn.Module


def read_runs(paths: Sequence[str]) -> List[Run]:
    """Training output folders -> their configs, calibrations and best checkpoints; raises if the runs
    disagree on data, split or preprocessing (they cannot be one ensemble then)."""
    runs = []
    for r in paths:
        with open(os.path.join(r, "config.json")) as fh:
            cfg = json.load(fh)
        with open(os.path.join(r, "calibration.json")) as fh:
            calib = json.load(fh)
        runs.append(Run(r, cfg, calib, load_checkpoint(os.path.join(r, "best.pt"))))
    c0 = runs[0].config
    for run in runs[1:]:
        for key in MUST_AGREE:
            if run.config.get(key) != c0.get(key):
                raise ValueError(f"runs disagree on {key}: {run.config[key]!r} vs {c0[key]!r}")
    return runs


def load_checkpoint(path: str) -> torch.nn.Module:
    """best.pt -> the trained Classifier in eval mode (architecture rebuilt from the saved config)."""
    ck = torch.load(path, map_location="cpu")
    c = ck["config"]
    model = build_model(c["arch"], c.get("members", []), None, c.get("dropout", 0.2), c.get("width", 1.0),
                        c.get("cam_stride", 32))
    model.load_state_dict(ck["model"])
    return model.eval()


def machine() -> str:
    """One line describing this machine, recorded with a run (calibration.json, the model card)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"
