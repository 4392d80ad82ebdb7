"""The levers of model 3.0.0: hospitals, held-out children, lung fields, the lung-focus loss, shift2."""
import pytest
import numpy as np
import torch

from pneumolens_train.augment import AugmentConfig, augment, zoom_out
from pneumolens_train.config import TrainConfig
from pneumolens_train.data import Sample, assign_hospitals, split_off_children
from pneumolens_train.losses import mixup
from pneumolens_train.lungs import cam_mass_inside, lung_masks
from pneumolens_train.models import build_model
from pneumolens_train.train import aug_config, epoch_augment, lung_focus_loss


def synthetic_chest(n: int = 6, side: int = 128, seed: int = 0) -> np.ndarray:
    """Black air around a bright body with two dark lungs (ellipses) inside it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    out = np.zeros((n, side, side), dtype=np.uint8)
    for i in range(n):
        body = ((xx - 0.5) / 0.42) ** 2 + ((yy - 0.55) / 0.5) ** 2 < 1
        lungs = (((xx - 0.32) / 0.12) ** 2 + ((yy - 0.45) / 0.25) ** 2 < 1) | \
                (((xx - 0.68) / 0.12) ** 2 + ((yy - 0.45) / 0.25) ** 2 < 1)
        img = np.where(body, 190, 5) - np.where(lungs, 120, 0) + rng.normal(0, 4, (side, side))
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def lung_truth(side: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side] / side
    return (((xx - 0.32) / 0.12) ** 2 + ((yy - 0.45) / 0.25) ** 2 < 1) | \
        (((xx - 0.68) / 0.12) ** 2 + ((yy - 0.45) / 0.25) ** 2 < 1)


def test_lung_fields_cover_the_lungs_not_the_air_outside_the_body():
    m, prior, fallback = lung_masks(synthetic_chest())
    assert m.shape == (6, 64, 64) and m.dtype == np.uint8 and fallback == 0.0
    truth = lung_truth()
    field = m[0] > 127
    assert field[truth].mean() > 0.95                     # the lungs are inside the field
    corners = np.zeros_like(truth)
    corners[:6, :6] = corners[:6, -6:] = corners[-6:, :6] = corners[-6:, -6:] = True
    assert not field[corners].any()                       # the air outside the body is not
    assert field.mean() < 0.45


def test_cam_mass_inside_counts_positive_evidence_only():
    masks = torch.zeros(2, 64, 64)
    masks[:, :, :32] = 1                                   # left half is "lung"
    cam = torch.zeros(2, 4, 4)
    cam[0, :, :2] = 1.0                                    # all evidence inside
    cam[1, :, 2:] = 1.0                                    # all evidence outside
    cam[1, :, :2] = -5.0                                   # negative evidence does not count
    share = cam_mass_inside(cam, masks)
    assert torch.allclose(share, torch.tensor([1.0, 0.0]))


def test_lung_focus_loss_penalises_evidence_outside_the_lungs():
    torch.manual_seed(0)
    model = build_model("resnet_s", width=0.25)
    fields_in = torch.zeros(4, 1, 64, 64)
    fields_all = torch.ones(4, 1, 64, 64)
    x = torch.randn(4, 1, 64, 64)
    _, feats = model(x)
    y = torch.ones(4)
    assert float(lung_focus_loss(model, feats, fields_all, y)) < 1e-6   # everything is lung: no penalty
    assert float(lung_focus_loss(model, feats, fields_in, y)) > 0.99    # nothing is lung: all outside
    assert float(lung_focus_loss(model, feats, fields_in, torch.zeros(4))) == 0.0  # normals: no target
    loss = lung_focus_loss(model, feats, fields_in, y)
    loss.backward()
    assert model.fc.weight.grad is not None


def test_hospitals_and_held_out_children():
    s = [Sample("a.jpg", 0, "K1", source="chest_xray_train", age=-1),
         Sample("b.jpg", 1, "NIH_DEV:1", source="nih_dev", age=40),
         Sample("c.jpg", 0, "NIH_EXTRA:2", source="nih_extra", age=9),
         Sample("d.jpg", 1, "NIH_EXTRA:3", source="nih_extra", age=17.9),
         Sample("e.jpg", 1, "NIH_EXTRA:4", source="nih_extra", age=18)]
    for x in s:
        x.folder = x.source
    assign_hospitals(s, {"nih_dev": "nih", "nih_extra": "nih"})
    assert [x.source for x in s] == ["chest_xray_train", "nih", "nih", "nih", "nih"]
    assert [x.folder for x in s][2] == "nih_extra"
    kept, kids = split_off_children(s, "chest_xray_train")
    assert [x.path for x in kids] == ["c.jpg", "d.jpg"]
    assert [x.path for x in kept] == ["a.jpg", "b.jpg", "e.jpg"]


def test_mixup_moves_the_masks_with_the_images():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 2, 2).clone()
    m = x.clone()
    xm, _, mm = mixup(x, torch.ones(4), 0.4, g, m)
    assert torch.allclose(xm, mm)


def test_shift2_keeps_the_range_and_moves_masks_like_the_image():
    cfg = aug_config(TrainConfig(augment="shift2"))
    assert isinstance(cfg, AugmentConfig) and cfg.collimation_p > 0 and cfg.grid_p > 0
    g = torch.Generator().manual_seed(1)
    x = torch.from_numpy(synthetic_chest(8, 64)).float()[:, None] / 255
    masks = (x < 0.3).float()
    out, mout = augment(x, cfg, g, torch.nn.functional.interpolate(masks, size=(32, 32), mode="area"))
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert mout.shape == (8, 1, 32, 32) and float(mout.min()) >= 0 and float(mout.max()) <= 1 + 1e-6


def test_zoom_out_puts_the_whole_film_inside_a_flat_surround_and_moves_the_masks():
    cfg = aug_config(TrainConfig(augment="shift", zoom_out=0.3))
    assert cfg.zoom_out_p == 0.3 and aug_config(TrainConfig(augment="shift")).zoom_out_p == 0.0
    with pytest.raises(Exception):
        TrainConfig(augment="none", zoom_out=0.3).validate()
    g = torch.Generator().manual_seed(2)
    x = torch.full((6, 1, 64, 64), 0.5)
    x[:, :, 0, :] = 0.2  # a marked top row, to see where the film went
    masks = torch.ones(6, 1, 32, 32)
    out, mout = zoom_out(x, AugmentConfig(zoom_out_p=1.0, zoom_out_min=0.5), g, masks)
    for i in range(6):
        level = out[i, 0, 0, 0]
        surround = (out[i, 0] - level).abs() < 1e-6
        film = (out[i, 0] - 0.5).abs() < 1e-6
        assert 0.5 ** 2 * 0.8 < float(film.float().mean()) < 0.85 ** 2  # the film's share of the canvas
        assert float(surround.float().mean()) > 0.2 and (float(level) < 0.05 or 0.3 <= float(level) <= 1.0)
        assert float(mout[i].mean()) < 0.85 ** 2 + 0.05 and float(mout[i].max()) == 1.0  # lungs only inside the film
    assert torch.equal(zoom_out(x, AugmentConfig(zoom_out_p=0.0), g), x)
    warm = TrainConfig(augment="shift", zoom_out=0.3, zoom_out_warmup=1)
    assert epoch_augment(aug_config(warm), warm, 0).zoom_out_p == 0.0
    assert epoch_augment(aug_config(warm), warm, 1).zoom_out_p == 0.3


def test_config_parses_booleans_and_hospital_maps():
    c = TrainConfig.from_sources(None, {"holdout_children": "false", "lung_focus": "0.5",
                                        "hospital_of": {"nih_dev": "nih"}})
    assert c.holdout_children is False and c.lung_focus == 0.5 and c.hospital_of == {"nih_dev": "nih"}


def test_cam_stride_16_keeps_a_14x14_grad_cam_layer_and_is_measured_on_7x7_cells():
    from pneumolens_train.probe import cam_stats
    x = torch.zeros(2, 1, 224, 224)
    for arch in ("resnet_s", "cbam_cnn"):
        coarse, fine = (build_model(arch, width=0.5, cam_stride=s).eval() for s in (32, 16))
        assert coarse(x)[1].shape[-2:] == (7, 7) and fine(x)[1].shape[-2:] == (14, 14), arch
        assert sum(p.numel() for p in coarse.parameters()) == sum(p.numel() for p in fine.parameters())
    both = build_model("ensemble", ["resnet_s", "cbam_cnn"], width=0.5, cam_stride=16).eval()
    assert both(x)[1].shape[-2:] == (14, 14)
    with pytest.raises(ValueError, match="cam_stride"):
        TrainConfig(cam_stride=8).validate()
    # peaks in two fine cells of the same 7x7 cell count as one cell; in two 7x7 cells, as two
    cams = torch.zeros(4, 14, 14)
    cams[0, 2, 2] = cams[1, 3, 3] = 1.0   # both in 7x7 cell (1, 1)
    cams[2, 10, 4] = cams[3, 11, 5] = 1.0  # both in 7x7 cell (5, 2)
    r = cam_stats(cams, torch.ones(4, 64, 64), np.array([1, 1, 1, 1]))
    assert r["grid"] == [14, 14] and r["peak_top_cell_share_pneumonia"] == 0.25
    assert r["peak_top_cell_share_pneumonia_7x7"] == 0.5
