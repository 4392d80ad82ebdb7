"""The one Python preprocessing path (preprocess.py) against the spec, the shipped card and the golden
fixtures that the exporter writes and the TypeScript parity test reads."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from pneumolens_train.config import TrainConfig
from pneumolens_train.preprocess import (DEFAULT_SPEC, gray_from_array, load_gray, model_input, preprocess_file,
                                         resize, resize_bilinear_aa, resized_gray, to_storage)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GOLDEN = os.path.join(REPO, "test", "fixtures", "golden")
MANIFEST = json.load(open(os.path.join(GOLDEN, "manifest.json")))
CARD_PATH = os.path.join(REPO, MANIFEST["card"])
CARD = json.load(open(CARD_PATH))
SPEC = CARD["preprocessing"]
SIZE = (CARD["input"]["height"], CARD["input"]["width"])
CASES = MANIFEST["cases"]


def _golden(case) -> np.ndarray:
    t = np.fromfile(os.path.join(GOLDEN, case["tensor"]), dtype="<f4")
    assert t.size == SIZE[0] * SIZE[1], f"{case['tensor']}: {t.size} floats, expected [1,{SIZE[0]},{SIZE[1]}]"
    return t.reshape(1, *SIZE)


# ------------------------------------------------------------------ golden fixtures and the card
@pytest.mark.parametrize("case", CASES, ids=[c["image"] for c in CASES])
def test_golden_tensor_is_reproduced_from_its_png_with_the_cards_spec(case):
    x = preprocess_file(os.path.join(GOLDEN, case["image"]), SIZE, SPEC)
    assert x.dtype == np.float32 and x.shape == (1, *SIZE)
    assert np.abs(x - _golden(case)).max() < 1e-5


@pytest.mark.parametrize("case", CASES, ids=[c["image"] for c in CASES])
def test_training_path_differs_from_the_golden_tensor_only_by_the_storage_rounding(case):
    """Training stores the resized image as uint8 (to_storage) and then calls the same model_input:
    the model input moves by at most about half a gray level divided by the image's std."""
    r = resized_gray(os.path.join(GOLDEN, case["image"]), SIZE, SPEC)
    train_x = model_input(to_storage(r)[None, None], SPEC)[0].numpy()   # a batch of one, as in training
    bound = 0.5 * SPEC["scale"] / float((r * SPEC["scale"]).std()) * 1.1
    assert np.abs(train_x - _golden(case)).max() <= bound


def test_golden_numbers_follow_the_cards_postprocessing():
    post = CARD["postprocessing"]
    assert CASES and MANIFEST["card"] == "models/" + os.path.basename(CARD_PATH)
    for c in CASES:
        p = 1 / (1 + np.exp(-(c["logit"] / post["temperature"] + post.get("bias", 0.0))))
        assert c["probability"] == pytest.approx(p, abs=1e-6)
        cam = np.asarray(c["cam"])
        assert cam.size == c["cam_shape"][0] * c["cam_shape"][1] and cam.min() >= 0 and cam.max() <= 1


def test_card_preprocessing_is_what_the_training_config_produces():
    assert SPEC["normalize"] == {"mode": "per_image"}
    cfg = TrainConfig(normalize=SPEC["normalize"]["mode"], resize_mode=SPEC["resize"]["mode"]).validate()
    assert cfg.preprocessing_spec() == SPEC


def test_card_gate_intended_use_and_uncertainty_blocks_are_consistent():
    gate, unc = CARD["gate"], CARD["uncertainty"]
    named = set(CARD["outputs"].values())
    assert {"logit", "features"} <= named
    assert gate["output"] in named and gate["threshold"] == 1.0
    assert gate["components"] and all(c["raw_threshold"] > 0 and c["name"] for c in gate["components"])
    assert 0 <= gate["validation"]["false_rejection_rate"] < 0.05
    iu = gate.get("intended_use")  # optional: 2.0.0 had an intended-use head, 3.0.0 has none
    if iu is not None:
        assert iu["output"] == "scope" and iu["threshold"] == 1.0 and iu["reason"] == "outside_intended_use"
        assert isinstance(iu["raw_threshold"], float) and iu["population"] and iu["description"]
        assert 0 <= iu["validation"]["false_decline_rate_intended_population"] < 0.05
    assert unc["output"] in named and unc["method"] == "ensemble_disagreement" and unc["cutoff"] > 0
    assert unc["validation"]["error_rate_flagged"] > unc["validation"]["error_rate_unflagged"]
    outputs = named | {gate["output"], unc["output"]} | ({iu["output"]} if iu else set())
    scale = CARD["gradcam"].get("display_scale")
    assert scale is None or scale > 0
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(os.path.join(os.path.dirname(CARD_PATH), CARD["file"])).graph
    assert {o.name for o in graph.output} == outputs
    assert [i.name for i in graph.input] == [CARD["input"]["name"]]


# ------------------------------------------------------------------ the spec, step by step
def test_resize_and_colour_spec():
    a = np.array([[0, 10, 20, 30]], dtype=np.float32)
    # triangle filter widened by the scale (PIL / torch antialias): weights .75 .75 .25 for output 0
    assert np.allclose(resize_bilinear_aa(a, 1, 2), [[12.5 / 1.75, 40 / 1.75]])
    r = np.random.default_rng(0).uniform(0, 255, (37, 53)).astype(np.float32)
    pil = np.asarray(Image.fromarray(r, mode="F").resize((24, 20), Image.BILINEAR))
    assert np.abs(resize_bilinear_aa(r, 20, 24) - pil).max() < 1e-3
    assert np.array_equal(resize_bilinear_aa(a, 1, 4), a)
    rgb = np.array([[[255, 0, 0], [0, 255, 0]]], dtype=np.float32)
    assert np.allclose(gray_from_array(rgb), [[0.299 * 255, 0.587 * 255]])


def test_decoder_uses_the_colour_step(tmp_path):
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(rgba[..., :3], "RGB").save(tmp_path / "b.png")
    Image.fromarray(rgba[..., :2], "LA").save(tmp_path / "c.png")
    assert np.array_equal(load_gray(tmp_path / "a.png"), gray_from_array(rgba))
    assert np.array_equal(load_gray(tmp_path / "b.png"), gray_from_array(rgba[..., :3]))
    assert np.array_equal(load_gray(tmp_path / "c.png"), gray_from_array(rgba[..., :2]))


def test_normalize_rejects_wrong_ranges():
    with pytest.raises(ValueError, match="0..255"):
        model_input(np.array([[0.0, 300.0]]), DEFAULT_SPEC)
    with pytest.raises(ValueError, match="0..255"):
        model_input(np.array([[-1.0, 0.5]]), DEFAULT_SPEC)   # a 0..1 or -1..1 image: mis-scaled
    with pytest.raises(ValueError, match="NaN"):
        model_input(np.array([[0.0, np.nan]]), DEFAULT_SPEC)
    with pytest.raises(ValueError, match="unknown normalize"):
        model_input(np.zeros((2, 2)), dict(DEFAULT_SPEC, normalize={"mode": "imagenet"}))
    out = model_input(np.array([[0.0, 127.5, 255.0]]), DEFAULT_SPEC).numpy()
    assert np.allclose(out, [[-2.0, 0.0, 2.0]])


def test_fixed_normalisation_reads_mean_and_std_from_the_spec():
    spec = dict(DEFAULT_SPEC, normalize={"mode": "fixed", "mean": 0.2, "std": 0.1})
    assert np.allclose(model_input(np.array([[0.0, 51.0, 255.0]]), spec).numpy(), [[-2.0, 0.0, 8.0]], atol=1e-5)


def test_per_image_is_per_image_in_a_batch_and_equals_one_image_at_a_time():
    spec = dict(DEFAULT_SPEC, normalize={"mode": "per_image"})
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 256, (3, 1, 16, 16), dtype=np.uint8)
    batch[1] //= 4                      # a dark, low-contrast image
    out = model_input(batch, spec)
    assert out.dtype == torch.float32 and out.shape == batch.shape
    for i in range(3):
        assert torch.equal(out[i], model_input(batch[i].astype(np.float32), spec))
        assert float(out[i].mean()) == pytest.approx(0, abs=1e-5) and float(out[i].std(unbiased=False)) == pytest.approx(1, abs=1e-4)
    flat = model_input(np.full((4, 4), 77.0), spec)   # a constant image: std clamped, no NaN
    assert torch.isfinite(flat).all() and float(flat.abs().max()) == 0


def test_augmentation_runs_between_scale_and_normalisation():
    seen = {}

    def aug(x01):
        seen["range"] = (float(x01.min()), float(x01.max()))
        return 1 - x01
    out = model_input(np.array([[[[0.0, 255.0]]]]), DEFAULT_SPEC, aug)
    assert seen["range"] == (0.0, 1.0) and np.allclose(out.numpy(), [[[[2.0, -2.0]]]])


def test_letterbox_places_the_image_and_pads(tmp_path):
    spec = dict(DEFAULT_SPEC, resize={"mode": "letterbox", "filter": "bilinear_antialias", "pad_value": 0})
    img = np.random.default_rng(2).integers(1, 256, (20, 40), dtype=np.uint8)   # h 20, w 40
    Image.fromarray(img).save(tmp_path / "wide.png")
    r = resized_gray(tmp_path / "wide.png", (32, 32), spec)
    # s = min(32/40, 32/20) = 0.8 -> 32 x 16 at top = floor((32-16)/2) = 8
    assert np.all(r[:8] == 0) and np.all(r[24:] == 0)
    assert np.array_equal(r[8:24], resize_bilinear_aa(img.astype(np.float32), 16, 32))
    tall = resize(np.ones((40, 10), np.float32) * 200, 32, 32, spec)   # 8 x 32 -> left = 12
    assert np.all(tall[:, :12] == 0) and np.all(tall[:, 20:] == 0) and np.allclose(tall[:, 12:20], 200)
    x = preprocess_file(tmp_path / "wide.png", (32, 32), spec)
    assert np.allclose(x[0, :8], (0 - 0.5) / 0.25)


def test_16bit_png_is_scaled_by_257(tmp_path):
    a = (np.arange(32 * 32).reshape(32, 32) % 200).astype(np.uint16)  # a 16-bit image whose values stay <= 255
    Image.fromarray(a).save(tmp_path / "g16.png")
    assert np.allclose(load_gray(tmp_path / "g16.png"), a / 257.0, atol=1e-5)


def test_16bit_and_8bit_of_the_same_picture_give_the_same_model_input(tmp_path):
    v = np.random.default_rng(4).integers(0, 256, (30, 26)).astype(np.uint16)
    Image.fromarray((v * 257).astype(np.uint16)).save(tmp_path / "g16.png")
    Image.fromarray(v.astype(np.uint8)).save(tmp_path / "g8.png")
    spec = dict(DEFAULT_SPEC, normalize={"mode": "per_image"})
    assert np.array_equal(preprocess_file(tmp_path / "g16.png", (16, 16), spec),
                          preprocess_file(tmp_path / "g8.png", (16, 16), spec))


def test_storage_rounds_half_to_even_and_clips():
    assert to_storage(np.array([[0.5, 1.5, 254.6, 255.0, 2.49]], np.float32)).tolist() == [[0, 2, 255, 255, 2]]
    assert to_storage(np.zeros((2, 2), np.float32)).dtype == np.uint8
