"""The synthetic PASCAL-MT set: real layout and formats, determinism, consistent labels, safe writing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from mtlora_deploy.errors import DataError
from mtlora_deploy.trainer.data import (
    NORMALS_VALID_CLASSES,
    PART_NAME_TO_ID,
    PERSON_CLASS_IND,
    TASKS,
    PascalLayout,
    make_synthetic_dataset,
    read_sample,
)
from mtlora_deploy.trainer.data.synthetic import VOC_TO_CONTEXT

SIZE = (64, 80)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth") / "pascal", 12, seed=3, image_size=SIZE)


def test_layout_and_splits(synth: Path) -> None:
    layout = PascalLayout(synth)
    train = layout.split_file("train").read_text().split()
    val = layout.split_file("val").read_text().split()
    assert (len(train), len(val)) == (9, 3)
    assert train == sorted(train) and val == sorted(val) and not set(train) & set(val)
    for image_id in train + val:
        for source in ("image", "semseg_voc", "human_parts", "normals", "sal", "label_map"):
            assert layout.path(source, image_id).is_file(), (source, image_id)
    with Image.open(layout.image(train[0])) as img:
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (SIZE[1], SIZE[0]))
    with Image.open(layout.normals(train[0])) as img:
        assert (img.format, img.mode) == ("PNG", "RGB")
    with Image.open(layout.semseg(train[0])) as img:
        assert img.mode == "P"
    assert set(scipy.io.loadmat(layout.label_map(train[0]))) >= {"LabelMap"}
    marker = json.loads((synth / "synthetic.json").read_text())
    assert {k: marker[k] for k in ("seed", "num_images", "image_size", "complete")} == {
        "seed": 3,
        "num_images": 12,
        "image_size": list(SIZE),
        "complete": True,
    }


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = _files(make_synthetic_dataset(tmp_path / "a", 5, seed=7, image_size=SIZE))
    b = _files(make_synthetic_dataset(tmp_path / "b", 5, seed=7, image_size=SIZE))
    c = _files(make_synthetic_dataset(tmp_path / "c", 5, seed=8, image_size=SIZE))
    assert a == b
    assert a["JPEGImages/synth_000000.jpg"] != c["JPEGImages/synth_000000.jpg"]


def test_image_depends_only_on_seed_and_index(tmp_path: Path) -> None:
    small = _files(make_synthetic_dataset(tmp_path / "small", 3, seed=1, image_size=SIZE))
    large = _files(make_synthetic_dataset(tmp_path / "large", 6, seed=1, image_size=SIZE))
    shared = [k for k in small if not k.endswith((".txt", ".json"))]
    assert shared and all(small[k] == large[k] for k in shared)


def test_parts_mat_parses_as_the_spec_says(synth: Path) -> None:
    layout = PascalLayout(synth)
    persons = 0
    for image_id in layout.split_file("train").read_text().split():
        objects = scipy.io.loadmat(layout.human_parts(image_id))["anno"][0][0][1][0]
        assert len(objects) >= 1
        for obj in objects:
            class_ind, mask, parts = obj[1][0][0], obj[2], obj[3]
            assert 1 <= class_ind <= 20 and mask.shape == SIZE
            if class_ind == PERSON_CLASS_IND:
                persons += 1
                assert len(parts) != 0
                for part in parts[0]:
                    assert str(part[0][0]) in PART_NAME_TO_ID and part[1].shape == SIZE
                    assert not (part[1].astype(bool) & ~mask.astype(bool)).any()
    assert persons > 0


def test_labels_agree_with_each_other(synth: Path) -> None:
    layout = PascalLayout(synth)
    seen_valid, seen_invalid = False, False
    for image_id in layout.split_file("train").read_text().split():
        sample = read_sample(layout, image_id, TASKS)
        semseg, parts, normals = sample["semseg"], sample["human_parts"], sample["normals"]
        label_map = scipy.io.loadmat(layout.label_map(image_id))["LabelMap"]
        np.testing.assert_array_equal(sample["sal"], (semseg > 0).astype(np.float32))
        if (parts != 255).any():
            assert set(np.unique(parts[semseg != PERSON_CLASS_IND])) == {0}
            assert (parts[semseg == PERSON_CLASS_IND] > 0).mean() > 0.95
        else:
            assert PERSON_CLASS_IND not in semseg
        objects = semseg > 0
        np.testing.assert_array_equal(label_map[objects], np.take(VOC_TO_CONTEXT, semseg[objects]))
        valid = np.isin(label_map, list(NORMALS_VALID_CLASSES))
        assert (normals[~valid] == 255).all() and np.allclose(np.linalg.norm(normals[valid], axis=-1), 1, atol=0.02)
        seen_valid |= bool(valid.any())
        seen_invalid |= bool((~valid).any())
        assert sample["edge"].sum() > 0
    assert seen_valid and seen_invalid


def test_reuses_identical_set_and_replaces_another(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "s", 4, image_size=SIZE)
    jpg = root / "JPEGImages" / "synth_000000.jpg"
    stamp = jpg.stat().st_mtime_ns
    make_synthetic_dataset(root, 4, image_size=SIZE)
    assert jpg.stat().st_mtime_ns == stamp
    make_synthetic_dataset(root, 2, image_size=SIZE)
    assert len(list((root / "JPEGImages").iterdir())) == 2
    assert json.loads((root / "synthetic.json").read_text())["num_images"] == 2


def test_refuses_foreign_folders(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "precious.txt").write_text("keep me")
    with pytest.raises(DataError, match="non-empty"):
        make_synthetic_dataset(tmp_path / "real", 2, image_size=SIZE)
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["precious.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        make_synthetic_dataset(tmp_path / "file", 2, image_size=SIZE)
    with pytest.raises(DataError, match="num_images"):
        make_synthetic_dataset(tmp_path / "new", 0)
