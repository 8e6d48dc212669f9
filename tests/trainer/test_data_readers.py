"""Readers: .mat struct parsing, part mapping, normals mask, edges, semseg fallback, errors, read-only."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from scipy import ndimage
from skimage.morphology import thin

from mtlora_deploy.errors import DataError
from mtlora_deploy.trainer.data import (
    HUMAN_PART_GROUPS,
    NORMALS_VALID_CLASSES,
    PART_NAME_TO_ID,
    TASKS,
    PascalLayout,
    check_files,
    edges_from_label_map,
    has_person_parts,
    make_synthetic_dataset,
    read_human_parts,
    read_normals,
    read_sample,
    read_semseg,
)

SHAPE = (12, 10)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*"))}


def _box(top: int, left: int, height: int, width: int) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[top : top + height, left : left + width] = 1
    return mask


def _write_parts_mat(path: Path, objects: list[tuple[str, int, np.ndarray, list[tuple[str, np.ndarray]]]]) -> None:
    """A PASCAL-Part file built by hand, independently of the synthetic writer."""
    array = np.zeros((1, len(objects)), dtype=[("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")])
    for i, (name, class_ind, mask, parts) in enumerate(objects):
        part_array = np.zeros((1, len(parts)), dtype=[("part_name", "O"), ("mask", "O")])
        for j, part in enumerate(parts):
            part_array[0, j] = part
        array[0, i] = (name, np.array([[class_ind]], dtype=np.float64), mask, part_array if parts else np.zeros((0, 0)))
    scipy.io.savemat(path, {"anno": {"imname": "x.jpg", "objects": array}})


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth") / "pascal", 6, seed=5, image_size=(48, 64))


def test_part_mapping_is_the_six_groups_of_the_spec() -> None:
    assert len(PART_NAME_TO_ID) == 24 and len(HUMAN_PART_GROUPS) == 6
    expected = {"hair": 1, "nose": 1, "rear": 1, "neck": 2, "torso": 2, "luarm": 3, "ruarm": 3, "llarm": 4,
                "rhand": 4, "luleg": 5, "ruleg": 5, "rlleg": 6, "lfoot": 6}  # fmt: skip
    assert {k: PART_NAME_TO_ID[k] for k in expected} == expected


def test_normals_valid_set_is_the_170_classes() -> None:
    assert len(NORMALS_VALID_CLASSES) == 170
    assert {3, 4, 284, 427, 457} <= NORMALS_VALID_CLASSES and not {0, 1, 2, 5, 459} & NORMALS_VALID_CLASSES


def test_human_parts_only_people_with_parts_count(tmp_path: Path) -> None:
    path = tmp_path / "p.mat"
    cat_parts = [("head", _box(0, 0, 3, 3)), ("torso", _box(3, 0, 3, 3))]
    person = [("hair", _box(0, 5, 1, 2)), ("torso", _box(3, 5, 2, 2)), ("luarm", _box(3, 7, 1, 1)),
              ("llarm", _box(4, 7, 1, 1)), ("ruleg", _box(5, 5, 2, 1)), ("lfoot", _box(7, 6, 1, 1))]  # fmt: skip
    _write_parts_mat(path, [("cat", 8, _box(0, 0, 6, 3), cat_parts),
                            ("person", 15, _box(9, 0, 3, 3), []),
                            ("person", 15, _box(0, 5, 8, 3), person)])  # fmt: skip
    assert scipy.io.loadmat(path)["anno"][0][0][1][0][2][3][0][0][0][0] == "hair"
    labels = read_human_parts(path, SHAPE)
    expected = np.zeros(SHAPE, dtype=np.uint8)
    for name, mask in person:
        expected[mask.astype(bool)] = PART_NAME_TO_ID[name]
    np.testing.assert_array_equal(labels, expected)
    assert has_person_parts(path)


def test_human_parts_without_person_is_all_ignore(tmp_path: Path) -> None:
    path = tmp_path / "p.mat"
    _write_parts_mat(
        path, [("cat", 8, _box(0, 0, 6, 3), [("head", _box(0, 0, 3, 3))]), ("person", 15, _box(9, 0, 3, 3), [])]
    )
    assert not has_person_parts(path)
    labels = read_human_parts(path, SHAPE)
    assert labels.shape == SHAPE and (labels == 255).all()


def test_unknown_part_name_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.mat"
    _write_parts_mat(path, [("person", 15, _box(0, 0, 4, 4), [("tail", _box(0, 0, 2, 2))])])
    with pytest.raises(DataError, match=r"bad\.mat.*human_parts.*tail"):
        read_human_parts(path, SHAPE)


def test_normals_masked_by_label_map(tmp_path: Path) -> None:
    rgb = np.zeros((*SHAPE, 3), dtype=np.uint8)
    rgb[...] = (255, 0, 191)
    rgb[0, 0] = (128, 128, 255)
    label_map = np.full(SHAPE, 1, dtype=np.int32)  # 1 is not normals-valid
    label_map[:6] = 3  # 3 is
    label_map[0, 5] = 2
    Image.fromarray(rgb).save(tmp_path / "n.png")
    normals = read_normals(tmp_path / "n.png", label_map)
    valid = label_map == 3
    assert normals.shape == (*SHAPE, 3) and normals.dtype == np.float32
    assert (normals[~valid] == 255).all()
    np.testing.assert_allclose(normals[1, 1], [1.0, -1.0, 2 * 191 / 255 - 1], atol=1e-6)
    np.testing.assert_allclose(normals[0, 0], 2 * np.array([128, 128, 255]) / 255 - 1, atol=1e-6)


def test_edges_are_the_thinned_label_map_laplacian() -> None:
    label_map = np.full((20, 24), 7, dtype=np.int32)
    label_map[5:15, 6:18] = 30
    edges = edges_from_label_map(label_map)
    np.testing.assert_array_equal(edges, thin(np.abs(ndimage.laplace(label_map.astype(float))) > 0).astype(np.float32))
    assert set(np.unique(edges)) == {0.0, 1.0}
    blocks = edges[:-1, :-1] + edges[1:, :-1] + edges[:-1, 1:] + edges[1:, 1:]
    assert blocks.max() < 4  # thin: no 2x2 block of edge pixels
    boundary = ndimage.binary_dilation(label_map == 30) & ~ndimage.binary_erosion(label_map == 30)
    assert edges[~boundary].sum() == 0 and ndimage.label(edges, np.ones((3, 3)))[1] == 1 and edges.sum() > 30
    assert edges_from_label_map(np.full((8, 8), 3)).sum() == 0


def test_semseg_prefers_voc12_then_pascal_context(synth: Path, tmp_path: Path) -> None:
    root = shutil.copytree(synth, tmp_path / "copy")
    layout = PascalLayout(root)
    image_id = "synth_000000"
    assert layout.semseg(image_id) == root / "semseg/VOC12/synth_000000.png"
    context = root / "semseg/pascal-context"
    context.mkdir()
    shutil.move(layout.semseg(image_id), context / "synth_000000.png")
    assert layout.semseg(image_id) == context / "synth_000000.png"
    assert read_semseg(layout.semseg(image_id)).shape == (48, 64)
    check_files(layout, [image_id, "synth_000001"], ["semseg"])


def test_missing_and_broken_files_name_file_and_task(synth: Path, tmp_path: Path) -> None:
    root = shutil.copytree(synth, tmp_path / "copy")
    layout = PascalLayout(root)
    layout.normals("synth_000001").unlink()
    with pytest.raises(
        DataError, match=r"missing file .*normals_distill/synth_000001\.png \(needed by task 'normals'\)"
    ):
        read_sample(layout, "synth_000001", ["normals"])
    with pytest.raises(DataError, match=r"synth_000001\.png .*task 'normals'"):
        check_files(layout, ["synth_000000", "synth_000001"], ["normals"])
    layout.label_map("synth_000002").unlink()
    with pytest.raises(DataError, match=r"trainval/synth_000002\.mat \(needed by task 'edge'\)") as info:
        read_sample(layout, "synth_000002", ["edge"])
    assert "\n" not in str(info.value)
    layout.sal("synth_000003").write_bytes(b"not a png")
    with pytest.raises(
        DataError, match=r"cannot read .*sal_distill/synth_000003\.png \(needed by task 'sal'\)"
    ) as info:
        read_sample(layout, "synth_000003", ["sal"])
    assert "\n" not in str(info.value)
    assert set(read_sample(layout, "synth_000001", ["semseg", "sal"])) == {"image", "semseg", "sal"}


def test_readers_never_write_to_the_dataset(synth: Path) -> None:
    before = _snapshot(synth)
    layout = PascalLayout(synth)
    for image_id in layout.split_file("train").read_text().split():
        read_sample(layout, image_id, TASKS)
    assert _snapshot(synth) == before
