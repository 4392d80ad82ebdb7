"""Dataset reading, patient-level splitting and in-memory loading.

Layouts: DIR/{NORMAL,PNEUMONIA}/* or DIR/{train,val,test}/{NORMAL,PNEUMONIA}/*.
"""
from __future__ import annotations

import csv
import hashlib
import os
import random
import re
import sys
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .preprocess import DEFAULT_SPEC, resized_gray, to_storage

CLASSES = ("NORMAL", "PNEUMONIA")
IMAGE_EXT = {".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".webp"}

_PATTERNS = [
    re.compile(r"^(person\d+)_", re.I),                 # person1202_bacteria_3152.jpeg
    re.compile(r"^((?:NORMAL\d*-)?IM-\d+)-\d+", re.I),   # IM-0115-0001.jpeg, NORMAL2-IM-1427-0001.jpeg
]


def patient_id(filename: str) -> str:
    """Patient id parsed from a Kermany-style file name; falls back to the file stem."""
    base = os.path.basename(filename)
    for p in _PATTERNS:
        m = p.match(base)
        if m:
            return m.group(1).upper()
    return os.path.splitext(base)[0].upper()


@dataclass
class Sample:
    path: str
    label: int          # 0 NORMAL, 1 PNEUMONIA
    patient: str
    digest: str = ""    # sha1 of the file bytes, for exact-duplicate detection
    subset: str = ""    # train/val/test when the folder layout says so
    source: str = ""    # the dataset folder's name (one hospital / collection)
    view: str = ""      # AP / PA when the source's labels.csv says so
    age: float = -1.0   # years, when labels.csv says so
    folder: str = ""    # the dataset folder's name (source before assign_hospitals)


def _class_dirs(root: str) -> Dict[int, str]:
    out = {}
    for name in os.listdir(root):
        up = name.upper()
        if up in CLASSES and os.path.isdir(os.path.join(root, name)):
            out[CLASSES.index(up)] = os.path.join(root, name)
    return out


def scan(root: str) -> List[Sample]:
    """List labelled images under `root` in either supported layout, sorted for determinism."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset folder not found: {root}")
    groups: List[Tuple[str, str]] = []
    if _class_dirs(root):
        groups.append(("", root))
    for sub in ("train", "val", "test"):
        p = os.path.join(root, sub)
        if os.path.isdir(p) and _class_dirs(p):
            groups.append((sub, p))
    if not groups:
        raise ValueError(f"{root}: expected NORMAL/ and PNEUMONIA/ folders (or train|val|test/ with them)")
    meta = read_labels(root)
    source = source_name(root)
    samples: List[Sample] = []
    for subset, base in groups:
        for label, d in sorted(_class_dirs(base).items()):
            for f in sorted(os.listdir(d)):
                if os.path.splitext(f)[1].lower() in IMAGE_EXT:
                    m = meta.get(f, {})
                    pid = m.get("patient_id") or patient_id(f)
                    age = m.get("age", "")
                    samples.append(Sample(os.path.join(d, f), label, f"{source}:{pid}".upper() if m else pid.upper(),
                                          subset=subset, source=source, folder=source,
                                          view=(m.get("view") or "").upper(),
                                          age=float(age) if age not in ("", None) else -1.0))
    return samples


def source_name(root: str) -> str:
    return os.path.basename(os.path.normpath(root))


def read_labels(root: str) -> Dict[str, Dict[str, str]]:
    """Optional ROOT/labels.csv (columns file, patient_id, view, age, ...): per-file metadata keyed by the
    file's base name. Patient ids from it take precedence over ids parsed from file names."""
    path = os.path.join(root, "labels.csv")
    if not os.path.exists(path):
        return {}
    out: Dict[str, Dict[str, str]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("file"):
                out[os.path.basename(row["file"])] = row
    return out


def scan_sources(roots: Sequence[str]) -> List[Sample]:
    """`scan` of several dataset folders (one per source), concatenated."""
    out: List[Sample] = []
    names = [source_name(r) for r in roots]
    if len(set(names)) != len(names):
        raise ValueError(f"dataset folders must have distinct names: {names}")
    for r in roots:
        out.extend(scan(r))
    return out


def assign_hospitals(samples: Sequence[Sample], hospital_of: Dict[str, str]) -> None:
    """Several folders can be one hospital (nih_dev + nih_extra: NIH Clinical Center): `source` becomes
    the hospital, so sampling, per-source validation and model selection count hospitals, not folders.
    Patient ids keep their folder prefix (the folders hold different patients)."""
    for s in samples:
        s.source = hospital_of.get(s.source, s.source)


def split_off_children(samples: Sequence[Sample], primary: str) -> Tuple[List[Sample], List[Sample]]:
    """(kept, children of other hospitals): films of another source whose labels.csv gives an age under
    18. They are the scarce check that a child is not declined for its hospital, so they are never
    trained, calibrated or selected on."""
    kept: List[Sample] = []
    children: List[Sample] = []
    for s in samples:
        (children if s.source != primary and 0 <= s.age < 18 else kept).append(s)
    return kept, children


def patient_split_by_source(samples: Sequence[Sample], val_fraction: float = 0.15, seed: int = 0
                            ) -> Tuple[List[Sample], List[Sample]]:
    """`patient_split` within each source, so every source is represented on both sides."""
    train: List[Sample] = []
    val: List[Sample] = []
    for src in sorted({s.source for s in samples}):
        t, v = patient_split([s for s in samples if s.source == src], val_fraction, seed)
        train.extend(t)
        val.extend(v)
    return train, val


def add_digests(samples: Sequence[Sample]) -> None:
    for s in samples:
        with open(s.path, "rb") as fh:
            s.digest = hashlib.sha1(fh.read()).hexdigest()


def patient_split(samples: Sequence[Sample], val_fraction: float = 0.15, seed: int = 0
                  ) -> Tuple[List[Sample], List[Sample]]:
    """Split by patient, stratified by class, seeded. Exact duplicates (same bytes) are grouped with
    each other, so no duplicate straddles the two sides."""
    if not samples:
        raise ValueError("no samples to split")
    if any(not s.digest for s in samples):
        add_digests(samples)
    # union-find over patients linked by shared digests
    parent: Dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    by_digest: Dict[str, str] = {}
    for s in samples:
        find(s.patient)
        if s.digest in by_digest:
            parent[find(s.patient)] = find(by_digest[s.digest])
        else:
            by_digest[s.digest] = s.patient
    groups: Dict[str, List[Sample]] = {}
    for s in samples:
        groups.setdefault(find(s.patient), []).append(s)
    # stratify: a group's class is its majority label
    rng = random.Random(seed)
    train: List[Sample] = []
    val: List[Sample] = []
    for label in (0, 1):
        keys = sorted(k for k, g in groups.items() if round(sum(x.label for x in g) / len(g)) == label)
        rng.shuffle(keys)
        n_img = sum(len(groups[k]) for k in keys)
        target = val_fraction * n_img
        taken = 0
        for k in keys:
            if taken < target:
                val.extend(groups[k])
                taken += len(groups[k])
            else:
                train.extend(groups[k])
    return train, val


def load_images(samples: Sequence[Sample], size: Tuple[int, int], spec=DEFAULT_SPEC, log=sys.stderr,
                progress: bool = True) -> Tuple[np.ndarray, np.ndarray, List[Sample]]:
    """Decode + colour + resize every sample (preprocess.resized_gray, steps 1-3 of the spec) and store
    it as uint8 [N,H,W] (preprocess.to_storage: the one rounding, see docs/model-contract.md "Training
    storage"); preprocess.model_input turns a batch of them into model input. Unreadable files are
    reported and skipped."""
    from .progress import Progress

    cache = _image_cache(samples, size, spec)
    if cache and os.path.exists(cache):
        z = np.load(cache)
        keep = set(z["kept"].tolist())
        kept_s = [s for i, s in enumerate(samples) if i in keep]
        return z["x"], z["y"], kept_s
    h, w = size
    out = np.zeros((len(samples), h, w), dtype=np.uint8)
    labels = np.zeros(len(samples), dtype=np.float32)
    kept: List[Sample] = []
    bar = Progress(len(samples), "load") if progress else None
    for s in samples:
        try:
            r = resized_gray(s.path, size, spec, min_side=8)
        except Exception as e:  # noqa: BLE001 - any decode failure skips the file
            print(f"skipping unreadable image {s.path}: {e}", file=log)
            if bar:
                bar.update()
            continue
        out[len(kept)] = to_storage(r)
        labels[len(kept)] = s.label
        kept.append(s)
        if bar:
            bar.update()
    if bar:
        bar.close()
    if cache:
        ids = {id(s): i for i, s in enumerate(samples)}
        tmp = f"{cache}.{os.getpid()}.tmp.npz"  # one per process: two members may fill the same cache at once
        np.savez(tmp, x=out[:len(kept)], y=labels[:len(kept)], kept=np.array([ids[id(s)] for s in kept], dtype=np.int64))
        os.replace(tmp, cache)
    return out[:len(kept)], labels[:len(kept)], kept


def _image_cache(samples: Sequence[Sample], size: Tuple[int, int], spec) -> str:
    """A cache file for this exact list of files (path, size, mtime), size and spec under
    $PNEUMOLENS_IMAGE_CACHE (unset: no cache). Decoding 6k films takes minutes on 2 cores."""
    root = os.environ.get("PNEUMOLENS_IMAGE_CACHE")
    if not root or not samples:
        return ""
    key = hashlib.sha1(repr((size, sorted(spec.items()) if isinstance(spec, dict) else spec)).encode())
    for s in samples:
        st = os.stat(s.path)
        key.update(f"{s.path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    os.makedirs(root, exist_ok=True)
    return os.path.join(root, f"images_{key.hexdigest()[:16]}.npz")
