"""End-to-end: train 2 epochs on the tiny dataset, resume, export to ONNX with ORT parity."""
import json
import os
import shutil

import numpy as np
import pytest

from pneumolens_train.config import TrainConfig
from pneumolens_train.export import export
from pneumolens_train.train import main, train

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), arch="cbam_cnn", width=0.25, size=32, epochs=2, batch_size=8,
                lr=3e-3, val_fraction=0.3, threads=1, augment="strong", mixup=0.2, ema=0.9, patience=10)
    base.update(kw)
    return TrainConfig(**base).validate()


def test_train_resume_export(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    # an interrupted run: the wall-clock budget stops it after its first epoch of two
    cfg = _cfg(tiny_dataset, out, epochs=2, max_minutes=1e-6)
    train(cfg)
    hist = json.load(open(out / "history.json"))
    assert len(hist) == 1 and {"val_auc", "train_loss", "val_loss"} <= set(hist[0])
    assert (out / "history.csv").exists() and (out / "best.pt").exists()
    # resume continues at epoch 2 of 2 with the same schedule
    cfg2 = _cfg(tiny_dataset, out, epochs=2)
    train(cfg2, resume=True)
    hist = json.load(open(out / "history.json"))
    assert [h["epoch"] for h in hist] == [1, 2]
    calib = json.load(open(out / "calibration.json"))
    assert calib["temperature"] > 0 and 0 < calib["threshold"] < 1
    split = json.load(open(out / "split.json"))
    assert set(split["train_patients"]).isdisjoint(split["val_patients"])

    # export: ONNX parity with PyTorch is checked inside export() through onnxruntime-node
    if not os.path.isdir(os.path.join(REPO, "node_modules", "onnxruntime-node")):
        pytest.fail("onnxruntime-node is not installed: run npm ci first")
    models = tmp_path / "models"
    fx = tmp_path / "golden"
    fx.mkdir()
    from PIL import Image
    Image.open(tiny_dataset / "PNEUMONIA" / "person1_bacteria_10.jpeg").convert("RGB").resize((40, 36)).save(fx / "a.png")
    card = export([str(out)], "tiny", str(models), "0.0.1", str(fx), [str(fx / "a.png")], None)
    assert (models / "tiny.onnx").exists() and (models / "tiny.json").exists()
    assert card["input"] == {"name": "input", "channels": 1, "height": 32, "width": 32}
    assert len(card["gradcam"]["weights"]) > 0 and card["postprocessing"]["temperature"] > 0
    for key in ("accuracy", "sensitivity", "specificity", "precision", "f1", "auc"):
        assert key in card["metrics"]["validation"]
    man = json.load(open(fx / "manifest.json"))
    case = man["cases"][0]
    t = np.fromfile(fx / case["tensor"], dtype="<f4")
    assert t.shape == (32 * 32,)
    cam = np.array(case["cam"])
    assert cam.min() >= 0 and cam.max() <= 1 and len(cam) == case["cam_shape"][0] * case["cam_shape"][1]
    # the card's prose comes from card.py; a single source has no intended-use head, no uncertainty block
    from pneumolens_train.card import GATE_RULE, LIMITATIONS
    assert card["gate"]["validation"]["rule"] == GATE_RULE
    assert card["limitations"][-len(LIMITATIONS):] == [t.format(grid="1x1") for t in LIMITATIONS]
    assert "intended_use" not in card["gate"] and "uncertainty" not in card
    assert json.load(open(models / "tiny.json")) == card and (models / "MODEL").read_text() == "tiny.json\n"

    # runs that disagree on preprocessing cannot be one ensemble
    from pneumolens_train.checkpoint import read_runs
    other = tmp_path / "other"
    shutil.copytree(out, other)
    c = json.load(open(other / "config.json"))
    c["normalize"] = "per_image" if c["normalize"] == "fixed" else "fixed"
    json.dump(c, open(other / "config.json", "w"))
    with pytest.raises(ValueError, match="runs disagree on normalize"):
        read_runs([str(out), str(other)])


def test_feature_level_ensemble_trains(tiny_dataset, tmp_path):
    out = tmp_path / "ens"
    train(_cfg(tiny_dataset, out, arch="ensemble", members=["resnet_s", "cbam_cnn"], epochs=1))
    assert json.load(open(out / "calibration.json"))["arch"] == "ensemble"


def test_config_is_validated(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"arch": "alexnet"}))
    assert main(["--config", str(bad)]) == 2
    bad.write_text(json.dumps({"arhc": "cbam_cnn"}))
    assert main(["--config", str(bad)]) == 2


@pytest.mark.parametrize("arch", ["mobilenet_v2", "efficientnet_b0", "densenet121", "resnet_s_cbam"])
def test_architectures_build_and_give_logit_and_cam_features(arch):
    import torch
    from pneumolens_train.models import build_model
    m = build_model(arch).eval()
    with torch.no_grad():
        logit, f = m(torch.zeros(2, 1, 64, 64))
    assert logit.shape == (2,) and f.shape[0] == 2 and f.shape[1] == m.out_channels
