"""What a training run leaves behind, read back: its checkpoint as a model, and the machine it ran on.

train.py writes OUT/best.pt ({"model": state_dict, "config": TrainConfig dict, "epoch"}); the exporter
and train.py's final calibration load it here.
"""
from __future__ import annotations

import os
import platform

import torch

from .models import build_model


def load_checkpoint(path: str) -> torch.nn.Module:
    """best.pt -> the trained Classifier in eval mode (architecture rebuilt from the saved config)."""
    ck = torch.load(path, map_location="cpu")
    c = ck["config"]
    model = build_model(c["arch"], c.get("members", []), None, c.get("dropout", 0.2), c.get("width", 1.0))
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
