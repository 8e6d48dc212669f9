"""Checked before work, verified before use: the rows of issue 22 and more bad inputs, as a hostile user tries them.

Each row runs the real ``mtlora`` entry point in this process and asserts: the exit code (2 for a usage error at
parse time, 1 for a user error), one ``Error:`` line naming what is wrong, no traceback, nothing left at the paths
the command would have written (and no temporary file), and nothing used unchecked. Besides the error line only the
toolkit's one-line warnings may appear (of work done before the error, such as the model's random init). A full
disk is faked with ``MTLORA_FAULT_OSERROR=atomic.write:ENOSPC`` (the atomic writer's rename step raises ENOSPC, as
the last write of a full disk does); ``test_a_real_full_disk`` fills a real 256 KiB tmpfs where the machine lets the
test mount one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mtlora_deploy.utils.faults import OSERROR_ENV_VAR, reset_fault_counts
from tests.cli.test_bad_input import _mtlora
from tests.conftest import TINY_CLI as TINY

HAS_PLAN_BUILDER = any(importlib.util.find_spec(m) for m in ("tensorrt_rtx", "tensorrt"))
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A tiny run with two committed checkpoint sets, its fp32 graph, calibration files good and bad."""
    from mtlora_deploy.trainer.data import make_synthetic_dataset

    root = tmp_path_factory.mktemp("checked")
    data = make_synthetic_dataset(root / "data", 12, seed=0, image_size=(64, 80))
    run = root / "run"
    args = ["train", "--preset", "mtlora-r16", "--tasks", "semseg,sal", "--data", str(data), *TINY]
    code, _, err = _mtlora([*args, "--max-steps", "4", "--batch-size", "4", "--workers", "0", "-o", str(run)])
    assert code == 0, err
    assert len([p for p in (run / ".checkpoints").iterdir() if p.name.isdigit()]) == 2
    code, _, err = _mtlora(["export", str(run), "-o", str(root / "model.fp32.onnx")])
    assert code == 0, err
    images = np.random.default_rng(0).standard_normal((8, 3, 64, 64)).astype(np.float32)
    np.savez(root / "calib_ok.npz", image=images)
    np.savez(root / "calib_size.npz", image=images[:, :, :32, :32])
    np.savez(root / "calib_key.npz", x=images)
    np.savez(root / "calib_few.npz", image=images[:2])
    nan = images.copy()
    nan[5, 1, 3, 4] = np.nan
    np.savez(root / "calib_nan.npz", image=nan)
    (root / "a_file").write_text("x")
    (root / "notes.txt").write_text("not a model\n")
    return {"root": root, "data": data, "run": run, "onnx": root / "model.fp32.onnx"}


def _copy_run(world, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(world["run"], run, symlinks=True)
    return run


def _flip_byte(path: Path) -> None:
    """Corrupt one byte in the middle, same size (only the sha256 can tell), breaking hard links first."""
    real = path.resolve()
    data = bytearray(real.read_bytes())
    data[len(data) // 2] ^= 0xFF
    real.unlink()
    real.write_bytes(bytes(data))


def _corrupt_every_set(world, tmp_path, name: str) -> Path:
    run = _copy_run(world, tmp_path)
    for folder in (run / ".checkpoints").iterdir():
        if folder.name.isdigit():
            _flip_byte(folder / name)
    return run


def _corrupt_newest(world, tmp_path, name: str) -> Path:
    run = _copy_run(world, tmp_path)
    _flip_byte(run / "checkpoints" / name)
    return run


def _train(world, *extra, out):
    args = ["train", "--preset", "mtlora-r16", "--tasks", "semseg,sal", "--data", str(world["data"]), *TINY]
    return [*args, "--max-steps", "2", "--batch-size", "4", "--workers", "0", *extra, "-o", str(out)]


def _export_int8(world, t, calib: str, out: str = "m.int8.onnx", *extra):
    calib_path = str(world["root"] / calib)
    return ["export", str(world["run"]), "-o", str(t / out), "--precision", "int8", "--calib", calib_path, *extra]


ENOSPC = {OSERROR_ENV_VAR: "atomic.write:ENOSPC"}
FULL = "the disk is full [ENOSPC]"

# (id, args(world, tmp_path), exit code, text of the one error line, paths that must not exist, environment)
CASES = [
    # numeric options by range, at parse time (exit 2, before anything is built)
    ("train-lr-negative", lambda w, t: _train(w, "--lr", "-1", out=t / "o"), 2, "--lr", ["o"], {}),
    ("train-lr-zero", lambda w, t: _train(w, "--lr", "0", out=t / "o"), 2, "--lr", ["o"], {}),
    ("train-lr-words", lambda w, t: _train(w, "--lr", "fast", out=t / "o"), 2, "--lr", ["o"], {}),
    ("train-seed-negative", lambda w, t: _train(w, "--seed", "-3", out=t / "o"), 2, "--seed", ["o"], {}),
    ("train-max-steps-0", lambda w, t: _train(w, "--max-steps", "0", out=t / "o"), 2, "--max-steps", ["o"], {}),
    (
        "train-set-lr-negative",
        lambda w, t: _train(w, "--train-set", "base_lr=-1", out=t / "o"),
        1,
        "base_lr: got -1.0, expected a finite number > 0",
        ["o"],
        {},
    ),
    (
        "train-set-clip-zero",
        lambda w, t: _train(w, "--train-set", "clip_grad=0", out=t / "o"),
        1,
        "clip_grad: got 0.0, expected a number > 0 or null",
        ["o"],
        {},
    ),
    (
        "train-set-betas",
        lambda w, t: _train(w, "--train-set", "betas=[0.9,1.5]", out=t / "o"),
        1,
        "betas: got [0.9, 1.5], expected two numbers in [0, 1)",
        ["o"],
        {},
    ),
    (
        "train-set-and-flag",
        lambda w, t: _train(w, "--train-set", "max_steps=3", out=t / "o"),
        1,
        "--train-set max_steps=3 and --max-steps 2 both set max_steps; keep one",
        ["o"],
        {},
    ),
    ("compare-lr-negative", lambda w, t: ["compare", "--lr", "-1", "-o", str(t / "c")], 2, "--lr", ["c"], {}),
    ("compare-steps-0", lambda w, t: ["compare", "--steps", "0", "-o", str(t / "c")], 2, "--steps", ["c"], {}),
    (
        "export-rtol-0",
        lambda w, t: ["export", str(w["run"]), "-o", str(t / "m.onnx"), "--rtol", "0"],
        2,
        "--rtol",
        ["m.onnx"],
        {},
    ),
    (
        "export-fidelity-negative",
        lambda w, t: ["export", str(w["run"]), "-o", str(t / "m.onnx"), "--fidelity-images", "-1"],
        2,
        "--fidelity-images",
        ["m.onnx"],
        {},
    ),
    (
        "build-engine-batch-order",
        lambda w, t: [
            "build-engine",
            str(w["onnx"]),
            "--precision",
            "fp32",
            "--batch",
            "8:1:32",
            "-o",
            str(t / "p.plan"),
        ],
        2,
        "expected 1 <= MIN <= OPT <= MAX",
        ["p.plan"],
        {},
    ),
    (
        "build-engine-batch-words",
        lambda w, t: ["build-engine", str(w["onnx"]), "--precision", "fp32", "--batch", "big", "-o", str(t / "p.plan")],
        2,
        "expected MIN:OPT:MAX such as 1:8:32",
        ["p.plan"],
        {},
    ),
    (
        "build-engine-workspace-0",
        lambda w, t: ["build-engine", str(w["onnx"]), "--precision", "fp32", "--workspace-gib", "0"],
        2,
        "--workspace-gib",
        [],
        {},
    ),
    (
        "make-dataset-val-fraction",
        lambda w, t: ["make-dataset", "synthetic", str(t / "d"), "--val-fraction", "1.5"],
        2,
        "--val-fraction",
        ["d"],
        {},
    ),
    (
        "calibrate-num-images-0",
        lambda w, t: ["calibrate", "--data", str(w["data"]), "--num-images", "0", "-o", str(t / "c.npz")],
        2,
        "--num-images",
        ["c.npz"],
        {},
    ),
    # output paths, before any work
    (
        "build-engine-o-under-a-file",
        lambda w, t: [
            "build-engine",
            str(w["onnx"]),
            "--precision",
            "fp32",
            "-o",
            str(w["root"] / "a_file" / "p.plan"),
        ],
        1,
        "a_file is a file, so no folder can be made under it",
        [],
        {},
    ),
    (
        "build-engine-o-is-a-folder",
        lambda w, t: ["build-engine", str(w["onnx"]), "--precision", "fp32", "-o", str(t)],
        2,
        "is a directory",
        [],
        {},
    ),
    (
        "evaluate-o-under-a-file",
        lambda w, t: ["evaluate", str(w["run"]), "--data", str(w["data"]), "-o", str(w["root"] / "a_file" / "e.json")],
        1,
        "a_file is a file, so no folder can be made under it",
        [],
        {},
    ),
    (
        "export-fp32-output-clash",
        lambda w, t: _export_int8(w, t, "calib_ok.npz", "model.fp32.onnx"),
        1,
        "is also where the fp32 graph would go",
        ["model.fp32.onnx"],
        {},
    ),
    # calibration sets checked before the export starts: nothing exported, nothing left
    (
        "export-calib-image-size",
        lambda w, t: _export_int8(w, t, "calib_size.npz"),
        1,
        "holds images of shape (3, 32, 32), but the model takes (3, 64, 64)",
        ["m.int8.onnx", "m.fp32.onnx"],
        {},
    ),
    (
        "export-calib-key",
        lambda w, t: _export_int8(w, t, "calib_key.npz"),
        1,
        "holds inputs ['x'], but the model's input is 'image'",
        ["m.int8.onnx", "m.fp32.onnx"],
        {},
    ),
    (
        "export-calib-count",
        lambda w, t: _export_int8(w, t, "calib_few.npz"),
        1,
        "has 2 images, at least 8 are needed",
        ["m.int8.onnx", "m.fp32.onnx"],
        {},
    ),
    (
        "export-calib-nan",
        lambda w, t: _export_int8(w, t, "calib_nan.npz"),
        1,
        "image 5 of 'image' holds NaN or infinite values",
        ["m.int8.onnx", "m.fp32.onnx"],
        {},
    ),
    (
        "export-calib-image-size-at-image-size",
        lambda w, t: _export_int8(w, t, "calib_ok.npz", "m.int8.onnx", "--image-size", "128"),
        1,
        "holds images of shape (3, 64, 64), but the model takes (3, 128, 128)",
        ["m.int8.onnx", "m.fp32.onnx"],
        {},
    ),
    # a corrupted file of the run is never used silently
    (
        "evaluate-corrupt-weights-everywhere",
        lambda w, t: ["evaluate", str(_corrupt_every_set(w, t, "best.safetensors")), "--data", str(w["data"])],
        1,
        "best.safetensors is corrupt (sha256 differs from MANIFEST.json); no earlier checkpoint set",
        [],
        {},
    ),
    (
        "merge-corrupt-json-everywhere",
        lambda w, t: ["merge", str(_corrupt_every_set(w, t, "best.json")), "-o", str(t / "merged")],
        1,
        "best.json is corrupt (sha256 differs from MANIFEST.json)",
        ["merged"],
        {},
    ),
    (
        "export-corrupt-weights-everywhere",
        lambda w, t: ["export", str(_corrupt_every_set(w, t, "best.safetensors")), "-o", str(t / "m.onnx")],
        1,
        "best.safetensors is corrupt",
        ["m.onnx"],
        {},
    ),
    # a full disk: one line naming the file, nothing half-written
    (
        "export-disk-full",
        lambda w, t: ["export", str(w["run"]), "-o", str(t / "m.onnx")],
        1,
        f"cannot write {{t}}/m.onnx: {FULL}; nothing was written there",
        ["m.onnx"],
        ENOSPC,
    ),
    (
        "merge-disk-full",
        lambda w, t: ["merge", str(w["run"]), "-o", str(t / "merged")],
        1,
        f"cannot write the merged model into {{t}}/merged: {FULL}",
        ["merged"],
        ENOSPC,
    ),
    (
        "evaluate-disk-full",
        lambda w, t: ["evaluate", str(w["run"]), "--data", str(w["data"]), "-o", str(t / "e.json")],
        1,
        f"cannot write {{t}}/e.json: {FULL}",
        ["e.json"],
        ENOSPC,
    ),
    (
        "calibrate-disk-full",
        lambda w, t: [
            "calibrate",
            "--data",
            str(w["data"]),
            "--num-images",
            "4",
            "--image-size",
            "64",
            "-o",
            str(t / "c.npz"),
        ],  # noqa: E501
        1,
        f"cannot write {{t}}/c.npz: {FULL}",
        ["c.npz", "c.json"],
        ENOSPC,
    ),
    (
        "make-dataset-disk-full",
        lambda w, t: ["make-dataset", "synthetic", str(t / "d"), "--images", "4"],
        1,
        f"cannot write the synthetic dataset {{t}}/d: {FULL}; nothing was left there",
        ["d"],
        ENOSPC,
    ),
    (
        "train-disk-full",
        lambda w, t: _train(w, out=t / "o"),
        1,
        FULL,
        ["o/checkpoints", "o/.checkpoints"],
        ENOSPC,
    ),
    # inspect: what it does not know, or a file that fails its recorded checksum
    ("inspect-missing", lambda w, t: ["inspect", str(t / "nope.onnx")], 1, "nope.onnx does not exist", [], {}),
    (
        "inspect-text-file",
        lambda w, t: ["inspect", str(w["root"] / "notes.txt")],
        1,
        "not an artefact inspect knows",
        [],
        {},
    ),
    (
        "inspect-corrupt-run",
        lambda w, t: ["inspect", str(_corrupt_newest(w, t, "last.safetensors")), "--json"],
        1,
        "last.safetensors: sha256 differs from the recorded one",
        [],
        {},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_checked_before_work_and_verified_before_use(world, tmp_path, monkeypatch, case):
    _, setup, expected_code, text, absent, env = case
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_fault_counts()
    code, _, err = _mtlora(setup(world, tmp_path))
    assert code == expected_code, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and text.format(t=tmp_path) in errors[0], err
    if expected_code == 1:  # one error line; nothing else but the toolkit's one-line warnings of the work done before
        assert all(line.startswith("warning: ") for line in err.strip().splitlines() if line != errors[0]), err
    for name in absent:
        assert not (tmp_path / name).exists(), name
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_damaged_newest_set_falls_back_to_the_previous_one_and_says_so(world, tmp_path):
    run = _corrupt_newest(world, tmp_path, "best.safetensors")
    code, out, err = _mtlora(["evaluate", str(run), "--data", str(world["data"]), "-o", str(tmp_path / "e.json")])
    assert code == 0, err
    warning = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "best.safetensors is corrupt (sha256 differs from MANIFEST.json)" in warning[0]
    assert "using the previous checkpoint set" in warning[0] and "(step 2)" in warning[0]
    assert json.loads((tmp_path / "e.json").read_text())["num_images"] > 0


def test_build_engine_checks_the_calibration_set_before_exporting(world, tmp_path):
    if not HAS_PLAN_BUILDER:
        pytest.skip("neither TensorRT nor TensorRT-RTX is installed: build-engine stops at that first")
    args = ["build-engine", str(world["run"]), "--precision", "int8", "--calib", str(world["root"] / "calib_size.npz")]
    code, _, err = _mtlora([*args, "-o", str(tmp_path / "engines" / "m.plan")])
    assert code == 1 and "holds images of shape (3, 32, 32), but the model takes (3, 64, 64)" in err, err
    assert not (tmp_path / "engines").exists()  # no export was written before the check


@pytest.mark.skipif(not HAS_PLAN_BUILDER, reason="neither TensorRT nor TensorRT-RTX is installed")
def test_build_engine_on_a_full_disk_leaves_no_plan(world, tmp_path, monkeypatch):
    monkeypatch.setenv(OSERROR_ENV_VAR, "atomic.write:ENOSPC")
    reset_fault_counts()
    code, _, err = _mtlora(["build-engine", str(world["onnx"]), "--precision", "fp32", "-o", str(tmp_path / "p.plan")])
    assert code == 1 and err.strip().startswith("Error: cannot write") and FULL in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.skipif(ROOT, reason="root may write anywhere: permissions cannot refuse it")
def test_an_unwritable_output_folder_is_refused_before_work(world, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        code, _, err = _mtlora(["export", str(world["run"]), "-o", str(locked / "m.onnx")])
    finally:
        locked.chmod(0o700)
    assert code == 1 and "is not writable" in err and not (locked / "m.onnx").exists()


def test_a_real_full_disk(world, tmp_path):
    """A 256 KiB tmpfs (needs root and CAP_SYS_ADMIN, else skipped): the graph (megabytes) cannot fit."""
    full = tmp_path / "full"
    full.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(full)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        code, _, err = _mtlora(["export", str(world["run"]), "-o", str(full / "m.onnx")])
        left = sorted(p.name for p in full.iterdir())
    finally:
        subprocess.run(["umount", str(full)], check=True)
    assert code == 1 and err.strip() == f"Error: cannot write {full}/m.onnx: {FULL}; nothing was written there", err
    assert left == []
