"""Crash consistency: SIGKILL a real training run at named points, resume, get the same bits as a run never killed.

Each run is ``mtlora train`` / ``mtlora train --resume`` through the real CLI in a fresh child interpreter.
``MTLORA_FAULT_POINT=NAME:COUNT`` makes the child SIGKILL itself at
the COUNT-th pass through NAME (utils/faults.py), which reaches every stage of a checkpoint commit deterministically.
Children run torch with one thread, as does the uninterrupted reference, so results compare bit for bit.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtlora_deploy.trainer.data import make_synthetic_dataset
from mtlora_deploy.utils.faults import ENV_VAR, POINTS
from tests.conftest import TINY_CLI as TINY

STEPS = 8  # 9 train images, batch 2 -> 4 steps per epoch: commits (with validation) at steps 4 and 8

# Every kind of point at least once, at both commits; "checkpoint.partial" / "checkpoint.file" count files
# (4 per commit: last.safetensors, last.json, last.state.pt, MANIFEST.json / 3 files).
FULL_MATRIX = [
    *[f"train.step:{n}" for n in (1, 3, 4, 5, 7, 8)],
    "train.validate:1",
    "train.validate:2",
    "checkpoint.begin:1",
    "checkpoint.begin:2",
    *[f"checkpoint.partial:{n}" for n in range(1, 9)],
    *[f"checkpoint.file:{n}" for n in range(1, 7)],
    "checkpoint.manifest:1",
    "checkpoint.manifest:2",
    "checkpoint.commit:1",
    "checkpoint.commit:2",
    "checkpoint.switch:1",
    "checkpoint.switch:2",
]
# One run killed again and again, every kind of point once: each resumed process dies at the next point
# (they resume from step 0, 0, 0, 0, 4, 4, 4 and 8).
CHAIN = [
    "checkpoint.begin:1",
    "checkpoint.partial:2",
    "checkpoint.manifest:1",
    "train.validate:1",
    "checkpoint.commit:1",
    "train.step:2",
    "checkpoint.file:2",
    "checkpoint.switch:1",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("crash") / "data", 12, seed=0, image_size=(64, 80))


def _train_args(data: Path, run: Path) -> list[str]:
    return [
        "train",
        "--preset",
        "mtlora-r16",
        "--tasks",
        "semseg,sal",
        "--data",
        str(data),
        *TINY,
        "--max-steps",
        str(STEPS),
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--train-set",
        "eval_every=1",
        "-o",
        str(run),
    ]


_CHILD = """
import sys, traceback, warnings
import torch
torch.set_num_threads(1)
from mtlora_deploy.cli.main import cli
warnings.simplefilter("ignore")
try:
    cli.main(sys.argv[1:], standalone_mode=False)
except BaseException:
    traceback.print_exc()
    sys.exit(1)
"""


def _child(args: list[str], fault: str | None) -> int:
    """Run the CLI in a fresh interpreter; returns the signal that killed it (negative) or its exit code.

    A fresh process, not a fork: a fork of a test process whose autograd engine already started threads cannot
    run backward ("Unable to handle autograd's threading in combination with fork-based multiprocessing").
    """
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    if fault:
        env[ENV_VAR] = fault
    return subprocess.run([sys.executable, "-c", _CHILD, *args], env=env, check=False).returncode


def _run_with_faults(data: Path, run: Path, faults: list[str]) -> None:
    for index, fault in enumerate(faults):
        args = _train_args(data, run) if index == 0 else ["train", "--resume", str(run)]
        assert _child(args, fault) == -signal.SIGKILL, f"{fault} was not reached"
    assert _child(["train", "--resume", str(run)], None) == 0


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("crash") / "straight"
    assert _child(_train_args(data, run), None) == 0
    return run


def _assert_same_bits(run: Path, reference: Path) -> None:
    for name in ("last.safetensors", "best.safetensors"):
        got, want = load_file(str(run / "checkpoints" / name)), load_file(str(reference / "checkpoints" / name))
        assert got.keys() == want.keys()
        different = [k for k in want if not torch.equal(got[k], want[k])]
        assert not different, f"{name}: {len(different)} of {len(want)} tensors differ, e.g. {different[0]}"
    got = torch.load(run / "checkpoints" / "last.state.pt", weights_only=False)
    want = torch.load(reference / "checkpoints" / "last.state.pt", weights_only=False)
    assert got["progress"]["step"] == want["progress"]["step"] == STEPS
    for key, value in want["optimizer"]["state"].items():
        for name, tensor in value.items():
            assert torch.equal(got["optimizer"]["state"][key][name], tensor), f"optimizer state {key}.{name}"
    assert torch.equal(got["rng_cpu"], want["rng_cpu"])


def _assert_clean(run: Path) -> None:
    store = run / ".checkpoints"
    assert (run / "checkpoints").is_symlink()
    assert not list(store.glob(".staging-*")) and not list(run.rglob("*.tmp")), sorted(map(str, run.rglob("*")))
    manifests = sorted(store.glob("*/MANIFEST.json"))
    assert 1 <= len(manifests) <= 2
    assert (run / "checkpoints").resolve() == manifests[-1].parent.resolve()
    train_steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "train" in r]
    assert len(train_steps) == len(set(train_steps))


def test_the_fault_points_are_the_documented_ones():
    assert {f.split(":")[0] for f in FULL_MATRIX} == set(POINTS)
    assert {f.split(":")[0] for f in CHAIN} == set(POINTS)


def test_a_run_killed_eight_times_resumes_to_the_same_bits(data, reference, tmp_path):
    start = time.perf_counter()
    run = tmp_path / "killed"
    _run_with_faults(data, run, CHAIN)
    _assert_same_bits(run, reference)
    _assert_clean(run)
    print(f"{len(CHAIN)} kills + resumes in {time.perf_counter() - start:.1f} s")


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["train.validate:2", "checkpoint.begin:2"])
def test_single_kills_resume_to_the_same_bits(data, reference, tmp_path, fault):
    run = tmp_path / "killed"
    _run_with_faults(data, run, [fault])
    _assert_same_bits(run, reference)
    _assert_clean(run)


@pytest.mark.slow
@pytest.mark.parametrize("fault", FULL_MATRIX)
def test_every_kill_point_resumes_to_the_same_bits(data, reference, tmp_path, fault):
    run = tmp_path / "killed"
    _run_with_faults(data, run, [fault])
    _assert_same_bits(run, reference)
    _assert_clean(run)


def test_a_corrupt_newest_checkpoint_falls_back_with_one_warning(data, reference, tmp_path, capfd):
    run = tmp_path / "run"
    assert _child(_train_args(data, run), "train.step:6") == -signal.SIGKILL  # commits at step 4
    assert _child(["train", "--resume", str(run)], None) == 0  # commits at step 8, keeps step 4 as the fallback
    newest = max((run / ".checkpoints").glob("0*"))
    with open(newest / "last.state.pt", "r+b") as handle:  # bit rot after the commit
        handle.truncate(100)
    capfd.readouterr()
    assert _child(["train", "--resume", str(run)], None) == 0
    out = capfd.readouterr().out
    assert f"checkpoint {newest} (step 8) is unusable: last.state.pt is truncated" in " ".join(out.split())
    _assert_same_bits(run, reference)


def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_0(data, reference, tmp_path, capfd):
    run = tmp_path / "run"
    assert _child(_train_args(data, run), "train.step:2") == -signal.SIGKILL
    assert (run / "config.yaml").is_file() and not (run / "checkpoints").exists()
    capfd.readouterr()
    assert _child(["train", "--resume", str(run)], None) == 0
    assert "starting again from step 0" in " ".join(capfd.readouterr().out.split())
    _assert_same_bits(run, reference)


@pytest.mark.filterwarnings("ignore:swin_test_tiny")
def test_a_full_disk_keeps_the_previous_checkpoint_current(data, tmp_path, monkeypatch):
    from mtlora_deploy.errors import MTLoRAError
    from mtlora_deploy.trainer import checkpoint_set
    from mtlora_deploy.trainer.api import start_run

    original, calls = checkpoint_set.write_file, []

    def fill_disk(path, payload):
        calls.append(path)
        if len(calls) == 6:  # the second commit's second file
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        original(path, payload)

    monkeypatch.setattr(checkpoint_set, "write_file", fill_disk)
    model = {
        "backbone": "swin_test_tiny",
        "image_size": 64,
        "task_agnostic_rank": 4,
        "decoder_widths": [4, 4, 8, 8],
        "head_channels": 16,
        "tasks": ["semseg", "sal"],
    }
    train = {"data": str(data), "max_steps": STEPS, "batch_size": 2, "num_workers": 0, "eval_every": 1}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on two shared cores only slow a model this small down
    try:
        with pytest.raises(MTLoRAError) as info:
            start_run("mtlora-r16", None, model, train, tmp_path / "run")
    finally:
        torch.set_num_threads(threads)
    message = str(info.value)
    assert "\n" not in message and "the disk is full [ENOSPC]" in message
    assert "the previous checkpoint (step 4) is still current" in message
    link = tmp_path / "run" / "checkpoints"
    assert json.loads((link / "last.json").read_text())["metadata"]["step"] == 4
    assert not list((tmp_path / "run" / ".checkpoints").glob(".staging-*"))
