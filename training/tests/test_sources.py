"""Several sources: labels.csv metadata, per-source patient split, source x view x class sampling,
the intended-use head and the acquisition-shift augmentations."""
import csv

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import _xray
from pneumolens_train.augment import AugmentConfig, augment
from pneumolens_train.config import TrainConfig
from pneumolens_train.data import patient_split_by_source, scan_sources
from pneumolens_train.scope import ScopeHead, rows_by_source
from pneumolens_train.train import sampling_weights


@pytest.fixture(scope="module")
def second_source(tmp_path_factory):
    """An NIH-like folder: numeric file names, patient ids and views only in labels.csv."""
    root = tmp_path_factory.mktemp("src") / "other_hospital"
    rng = np.random.default_rng(1)
    rows = []
    for cls, label in (("NORMAL", 0), ("PNEUMONIA", 1)):
        (root / cls).mkdir(parents=True)
        for p in range(10):
            for k in range(2):
                f = f"{label}{p:04d}_{k:03d}.png"
                Image.fromarray(_xray(rng, label)).save(root / cls / f)
                rows.append({"file": f"{cls}/{f}", "class": cls, "patient_id": str(label * 100 + p), "age": "40",
                             "view": "AP" if (p + label) % 3 else "PA"})
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def test_labels_csv_gives_patient_view_and_source(tiny_dataset, second_source):
    s = scan_sources([str(tiny_dataset), str(second_source)])
    other = [x for x in s if x.source == "other_hospital"]
    assert len(other) == 40 and {x.view for x in other} == {"AP", "PA"}
    assert other[0].patient.startswith("OTHER_HOSPITAL:") and other[0].age == 40
    # files of the first source keep their name-derived patient ids and have no view
    assert all(x.view == "" and not x.patient.startswith("OTHER") for x in s if x.source != "other_hospital")


def test_split_by_source_keeps_patients_and_sources_on_both_sides(tiny_dataset, second_source):
    s = scan_sources([str(tiny_dataset), str(second_source)])
    tr, va = patient_split_by_source(s, 0.25, 0)
    assert {x.source for x in tr} == {x.source for x in va} == {x.source for x in s}
    assert not ({x.patient for x in tr} & {x.patient for x in va})


def test_source_class_sampling_masses(tiny_dataset, second_source):
    s = scan_sources([str(tiny_dataset), str(second_source)])
    y = np.array([x.label for x in s], dtype=np.float32)
    cfg = TrainConfig(data=str(tiny_dataset), extra_data=[str(second_source)], balance="source_class", source_mix=0.3)
    w = sampling_weights(s, y, cfg)
    src = np.array([x.source for x in s])
    assert w.sum() == pytest.approx(1.0)
    assert w[src == "other_hospital"].sum() == pytest.approx(0.3)
    # within the second source each (view, class) cell has the same mass: view cannot predict the label
    cells = {}
    for x, wi in zip(s, w):
        if x.source == "other_hospital":
            cells[(x.view, x.label)] = cells.get((x.view, x.label), 0) + wi
    assert len(cells) == 4 and max(cells.values()) == pytest.approx(min(cells.values()))


def test_scope_head_declines_the_other_population_and_few_of_its_own():
    rng = np.random.default_rng(0)
    inside, outside = rng.normal(0, 1, (400, 6)), rng.normal(2.5, 1, (400, 6))
    head = ScopeHead(inside, outside)
    head.calibrate(rng.normal(0, 1, (1000, 6)), max_false_decline=0.01)
    assert head.declined(rng.normal(0, 1, (4000, 6))).mean() < 0.015
    assert head.declined(rng.normal(2.5, 1, (1000, 6))).mean() > 0.9


def test_rows_by_source_reports_views_and_normal_ap_fpr():
    y = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    p = np.array([0.9, 0.1, 0.8, 0.7, 0.2, 0.3, 0.9, 0.6])
    rows = rows_by_source(["a"] * 4 + ["b"] * 4, [""] * 4 + ["AP", "PA", "AP", "PA"], y, p, 0.5, None, {"a": "A"})
    assert [r["source"] for r in rows] == ["A", "b", "b, AP view", "b, PA view"]
    assert rows[0]["auc"] == pytest.approx(0.5) and rows[1]["normal_ap_false_positive_rate"] == 0.0
    assert rows[0]["specificity"] == 0.5


def test_shift_augmentations_stay_in_range_and_change_pixels():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 64, 64)
    cfg = AugmentConfig(sharpen_p=1, downup_p=1, marker_p=1, border_p=1, erase_p=0, noise=0, blur_p=0)
    y = augment(x.clone(), cfg, g)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert float((y - x).abs().mean()) > 0.01
