import os
import sys

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))


def _xray(rng, label: int, size: int = 48) -> np.ndarray:
    """A crude chest-like image: two dark lung fields in a bright body; PNEUMONIA adds bright blobs."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 170 + 30 * np.sin(3 * xx) + rng.normal(0, 6, (size, size))
    for cx in (0.3, 0.7):
        lung = ((xx - cx) / 0.17) ** 2 + ((yy - 0.5) / 0.32) ** 2 < 1
        img[lung] -= 110
    if label:
        for _ in range(3):
            cx, cy = rng.uniform(0.2, 0.8), rng.uniform(0.3, 0.7)
            img += 90 * np.exp(-(((xx - cx) / 0.08) ** 2 + ((yy - cy) / 0.08) ** 2))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """DIR/{NORMAL,PNEUMONIA} with Kermany-style names, several images per patient, one exact
    duplicate across patients, and one corrupt file."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    (root / "NORMAL").mkdir()
    (root / "PNEUMONIA").mkdir()
    for p in range(16):
        for k in range(2):
            Image.fromarray(_xray(rng, 0)).save(root / "NORMAL" / f"IM-{p:04d}-{k + 1:04d}.jpeg")
    for p in range(16):
        kind = "bacteria" if p % 2 else "virus"
        for k in range(2):
            Image.fromarray(_xray(rng, 1)).save(root / "PNEUMONIA" / f"person{p}_{kind}_{p * 10 + k}.jpeg")
    # an exact duplicate under another patient's name
    dup = (root / "PNEUMONIA" / "person3_bacteria_30.jpeg").read_bytes()
    (root / "PNEUMONIA" / "person99_bacteria_990.jpeg").write_bytes(dup)
    (root / "NORMAL" / "IM-0999-0001.jpeg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return root
