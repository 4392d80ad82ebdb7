import numpy as np

from pneumolens_train.data import add_digests, load_images, patient_id, patient_split, scan


def test_patient_ids_from_kermany_names():
    assert patient_id("person1202_bacteria_3152.jpeg") == "PERSON1202"
    assert patient_id("person1202_virus_2049.jpeg") == "PERSON1202"
    assert patient_id("IM-0115-0001.jpeg") == "IM-0115"
    assert patient_id("NORMAL2-IM-1427-0001.jpeg") == "NORMAL2-IM-1427"
    assert patient_id("NORMAL2-IM-1427-0002.jpeg") == "NORMAL2-IM-1427"
    assert patient_id("/a/b/whatever.png") == "WHATEVER"


def test_scan_both_layouts(tiny_dataset, tmp_path):
    s = scan(str(tiny_dataset))
    assert len(s) == 16 * 2 + 16 * 2 + 2
    assert {x.label for x in s} == {0, 1}
    nested = tmp_path / "nested"
    for sub in ("train", "test"):
        for c in ("NORMAL", "PNEUMONIA"):
            (nested / sub / c).mkdir(parents=True)
            (nested / sub / c / "IM-0001-0001.jpeg").write_bytes((tiny_dataset / "NORMAL" / "IM-0001-0001.jpeg").read_bytes())
    s2 = scan(str(nested))
    assert len(s2) == 4 and {x.subset for x in s2} == {"train", "test"}


def test_split_is_by_patient_stratified_and_seeded(tiny_dataset):
    s = scan(str(tiny_dataset))
    add_digests(s)
    tr, va = patient_split(s, 0.25, seed=1)
    assert {x.patient for x in tr}.isdisjoint({x.patient for x in va})
    assert {x.label for x in va} == {0, 1}
    assert len(tr) + len(va) == len(s)
    # exact duplicates never straddle the split
    assert {x.digest for x in tr}.isdisjoint({x.digest for x in va})
    tr2, va2 = patient_split(scan(str(tiny_dataset)), 0.25, seed=1)
    assert [x.path for x in va2] == [x.path for x in va]
    _, va3 = patient_split(scan(str(tiny_dataset)), 0.25, seed=2)
    assert [x.path for x in va3] != [x.path for x in va]


def test_corrupt_image_skipped_with_message(tiny_dataset, capsys):
    import io
    s = scan(str(tiny_dataset))
    log = io.StringIO()
    x, y, kept = load_images(s, (32, 32), log=log, progress=False)
    assert len(kept) == len(s) - 1 and x.shape == (len(s) - 1, 32, 32) and x.dtype == np.uint8
    assert "IM-0999-0001.jpeg" in log.getvalue() and "skipping unreadable image" in log.getvalue()


def test_training_ignores_a_test_subfolder(tiny_dataset, tmp_path):
    import io
    import shutil
    from pneumolens_train.config import TrainConfig
    from pneumolens_train.train import prepare_data
    root = tmp_path / "layout"
    for sub in ("train", "test"):
        shutil.copytree(tiny_dataset, root / sub)
    log = io.StringIO()
    cfg = TrainConfig(data=str(root), size=32, val_fraction=0.3).validate()
    xtr, ytr, tr, xva, yva, va, _children = prepare_data(cfg, log=log)
    assert all("/test/" not in s.path for s in tr + va)
    assert "ignoring 66 images" in log.getvalue()  # every file of the tiny set, duplicate and corrupt one included
