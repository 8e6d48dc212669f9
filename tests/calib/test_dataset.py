"""Calibration sets: deterministic draws, the eval transform, provenance, and one-line errors on load."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mtlora_deploy.calib.dataset import (
    array_sha256,
    choose_ids,
    draw_calibration_set,
    load_calibration,
    read_provenance,
    write_npz,
)
from mtlora_deploy.cli.main import cli
from mtlora_deploy.errors import ConfigError, DataError
from mtlora_deploy.trainer.data import PascalMTDataset
from mtlora_deploy.utils.hashing import file_sha256

pytestmark = pytest.mark.filterwarnings("ignore:calibration file .* recommends")


def test_same_seed_same_bytes_and_ids(synthetic_root, tmp_path):
    first = draw_calibration_set(synthetic_root, "train", 6, 32, 7, tmp_path / "a.npz")
    second = draw_calibration_set(synthetic_root, "train", 6, 32, 7, tmp_path / "b.npz")
    assert first.read_bytes() == second.read_bytes()
    assert read_provenance(first)["ids"] == read_provenance(second)["ids"]


def test_different_seed_different_ids(synthetic_root, tmp_path):
    ids = [
        read_provenance(draw_calibration_set(synthetic_root, "train", 6, 32, s, tmp_path / f"{s}.npz"))["ids"]
        for s in (0, 1)
    ]
    assert ids[0] != ids[1] and len(set(ids[0])) == 6


def test_images_are_the_reference_eval_transform(calib_npz, synthetic_root):
    provenance = read_provenance(calib_npz)
    images = load_calibration(calib_npz, "image", 64)
    dataset = PascalMTDataset(synthetic_root, "train", tasks=("sal",), image_size=64, train=False)
    for row, image_id in enumerate(provenance["ids"][:3]):
        expected = dataset[dataset.ids.index(image_id)]["image"].numpy()
        np.testing.assert_array_equal(images[row], expected)


def test_provenance_records_where_everything_came_from(calib_npz, synthetic_root):
    provenance = json.loads(calib_npz.with_suffix(".json").read_text())
    assert provenance["dataset_root"] == str(synthetic_root.resolve())
    assert [provenance[k] for k in ("split", "seed", "count", "image_size")] == ["train", 0, 16, 64]
    assert provenance["shape"] == [16, 3, 64, 64] and provenance["dtype"] == "float32"
    assert provenance["transform"]["name"] == "eval" and len(provenance["transform"]["mean"]) == 3
    assert provenance["input_name"] == "image" and provenance["toolkit_version"]
    train_ids = (synthetic_root / "ImageSets" / "Context" / "train.txt").read_text().split()
    assert set(provenance["ids"]) <= set(train_ids) and provenance["ids"] == sorted(provenance["ids"])
    with np.load(calib_npz) as archive:
        assert provenance["array_sha256"] == array_sha256(archive["image"])
    assert provenance["file_sha256"] == file_sha256(calib_npz)


def test_choose_ids_rejects_too_many_or_none():
    with pytest.raises(ConfigError, match="only 3 images"):
        choose_ids(["a", "b", "c"], 4, 0)
    with pytest.raises(ConfigError, match="at least 1"):
        choose_ids(["a"], 0, 0)


def test_output_must_be_npz(synthetic_root, tmp_path):
    with pytest.raises(ConfigError, match=r"\.npz"):
        draw_calibration_set(synthetic_root, "train", 2, 32, 0, tmp_path / "calib.bin")


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_calibration(tmp_path / "missing.npz", "image", 64)
    write_npz(tmp_path / "c.npz", {"pixels": np.zeros((8, 3, 32, 32), np.float32)})
    with pytest.raises(DataError, match=r"holds inputs \['pixels'\].*'image'"):
        load_calibration(tmp_path / "c.npz", "image", 32)
    with pytest.raises(DataError, match=r"\(3, 32, 32\).*\(3, 64, 64\)"):
        load_calibration(tmp_path / "c.npz", "pixels", 64)
    with pytest.raises(DataError, match="has 8 images, at least 10"):
        load_calibration(tmp_path / "c.npz", "pixels", 32, min_images=10)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable"):
        load_calibration(tmp_path / "bad.npz", "image", 32)


def test_load_warns_below_the_recommended_count(tmp_path):
    write_npz(tmp_path / "c.npz", {"image": np.zeros((8, 3, 32, 32), np.float32)})
    with pytest.warns(UserWarning, match="recommends at least 500"):
        images = load_calibration(tmp_path / "c.npz", "image", 32)
    assert images.shape == (8, 3, 32, 32) and images.dtype == np.float32


def test_cli_calibrate_takes_size_and_name_from_the_onnx_file(synthetic_root, tiny_onnx, tmp_path):
    out = tmp_path / "calib" / "train.npz"
    args = ["calibrate", "--data", str(synthetic_root), "--num-images", "4", "--model", str(tiny_onnx), "-o", str(out)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert load_calibration(out, "image", 64, min_images=4).shape == (4, 3, 64, 64)


def test_cli_calibrate_synthetic_without_a_run_folder_is_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["calibrate", "--data", "synthetic", "-o", str(tmp_path / "c.npz")])
    assert result.exit_code != 0 and "no synthetic set found" in str(result.exception)


def test_cli_calibrate_help_ends_with_example():
    result = CliRunner().invoke(cli, ["calibrate", "--help"])
    assert result.exit_code == 0 and "Example: mtlora calibrate" in result.output
