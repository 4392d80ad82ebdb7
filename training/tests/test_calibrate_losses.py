import math

import numpy as np
import pytest
import torch

from pneumolens_train import calibrate as cal
from pneumolens_train.losses import focal_loss, weighted_bce


def test_auc_with_ties_is_mann_whitney():
    y = [0, 0, 1, 1]
    assert cal.roc_auc(y, [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert cal.roc_auc(y, [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert cal.roc_auc([0, 1, 1], [0.2, 0.2, 0.9]) == pytest.approx(0.75)


def test_binary_metrics_hand_computed():
    m = cal.binary_metrics([1, 1, 1, 0, 0], [0.9, 0.6, 0.2, 0.7, 0.1], 0.5)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 1)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(2 / 3)


def test_temperature_recovers_known_scale():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-z))).astype(int)
    # logits that are 2.5x too confident -> temperature about 2.5
    assert cal.fit_temperature(z * 2.5, y) == pytest.approx(2.5, rel=0.05)


def test_temperature_bias_recovers_scale_and_offset():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-z))).astype(int)
    t, b = cal.fit_temperature_bias(z * 2.0 - 3.0, y)   # true: logit' = 2 z - 3 -> T = 2, b = 1.5
    assert t == pytest.approx(2.0, rel=0.05) and b == pytest.approx(1.5, abs=0.1)


def test_youden_threshold_midpoint_of_separating_gap():
    # separable: negatives at logit <= -1, positives at logit >= 3 -> midpoint logit 1
    logits = np.array([-3, -2, -1, 3, 4, 5], dtype=float)
    y = [0, 0, 0, 1, 1, 1]
    t, pol = cal.choose_threshold(y, cal.sigmoid(logits), "youden")
    assert pol == "youden" and t == pytest.approx(cal.sigmoid(1.0), abs=1e-6)


def test_youden_high_takes_the_most_specific_near_optimal_threshold():
    logits = np.array([-3, -2, 0.5, 1, 2, 3, 4, 5, 6, 7], dtype=float)
    y = [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    p = cal.sigmoid(logits)
    t0, _ = cal.choose_threshold(y, p, "youden")          # separating gap (0.5, 1) -> midpoint 0.75
    assert t0 == pytest.approx(cal.sigmoid(0.75), abs=1e-6)
    t1, _ = cal.choose_threshold(y, p, "youden_high:0.15")  # J may drop 1/7: skip one positive -> (1, 2)
    assert t1 == pytest.approx(cal.sigmoid(1.5), abs=1e-6)
    assert cal.choose_threshold(y, p, "youden_high:0.0")[0] == pytest.approx(t0)


def test_sensitivity_policy_and_fixed():
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9])
    y = [0, 0, 1, 0, 1, 1, 1]
    t, _ = cal.choose_threshold(y, p, "sensitivity:0.75")  # 3 of 4 positives -> between 0.6 and 0.7
    assert 0.6 < t <= 0.7
    assert cal.binary_metrics(y, p, t)["sensitivity"] == pytest.approx(0.75)
    assert cal.choose_threshold(y, p, "fixed:0.42")[0] == 0.42


def test_focal_loss_against_hand_computed_value():
    logit = torch.tensor([2.0, -1.0])
    y = torch.tensor([1.0, 1.0])
    p = [1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(1.0))]
    expect = sum(-0.25 * (1 - q) ** 2 * math.log(q) for q in p) / 2
    assert float(focal_loss(logit, y, gamma=2.0, alpha=0.25)) == pytest.approx(expect, rel=1e-5)
    # gamma 0, no alpha = plain BCE
    assert float(focal_loss(logit, y, 0.0, None)) == pytest.approx(float(weighted_bce(logit, y)), rel=1e-6)


def test_weighted_bce_weights_positive_class():
    logit, y = torch.tensor([0.0]), torch.tensor([1.0])
    assert float(weighted_bce(logit, y, pos_weight=3.0)) == pytest.approx(3 * math.log(2), rel=1e-6)
