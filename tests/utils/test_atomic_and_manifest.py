"""Atomic writers turn a failed write into one OutputError naming the target; checkpoint sets verify before use."""

from __future__ import annotations

import errno
import json
import os

import pytest

from mtlora_deploy.errors import OutputError, WeightsError
from mtlora_deploy.utils.atomic import describe_os_error, write_bytes_atomic, write_json_atomic
from mtlora_deploy.utils.checkpoint_manifest import FORMAT, MANIFEST, verified_checkpoint
from mtlora_deploy.utils.faults import OSERROR_ENV_VAR, reset_fault_counts
from mtlora_deploy.utils.hashing import file_sha256


def test_os_errors_in_words():
    assert describe_os_error(OSError(errno.ENOSPC, "No space left on device")) == "the disk is full [ENOSPC]"
    assert describe_os_error(OSError(errno.EROFS, "x")) == "the filesystem is read-only [EROFS]"
    assert describe_os_error(OSError(errno.ENOLINK, "Link has been severed")) == "Link has been severed [ENOLINK]"


def test_a_failed_write_names_the_target_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"old": True})
    monkeypatch.setenv(OSERROR_ENV_VAR, "atomic.write:ENOSPC")
    reset_fault_counts()
    with pytest.raises(OutputError, match=r"out.json: the disk is full \[ENOSPC\].*previous file is unchanged") as info:
        write_json_atomic(target, {"new": True})
    assert info.value.path == target and info.value.reason == "the disk is full [ENOSPC]"
    assert json.loads(target.read_text()) == {"old": True} and sorted(p.name for p in tmp_path.iterdir()) == [
        "out.json"
    ]


def test_an_os_error_about_another_file_passes_through(tmp_path):
    from mtlora_deploy.utils.atomic import atomic_path

    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "x.bin") as tmp:
        tmp.write_bytes(b"half")
        (tmp_path / "missing.txt").read_text()  # the body's own error, not the writer's
    assert list(tmp_path.iterdir()) == []


def test_a_folder_under_a_file_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(OutputError, match=r"cannot write .*a_file/b/c.bin: .*\[(ENOTDIR|EEXIST)\]"):
        write_bytes_atomic(tmp_path / "a_file" / "b" / "c.bin", b"data")


def _set(folder, number: int, step: int, files: dict[str, bytes]):
    path = folder / ".checkpoints" / f"{number:06d}"
    path.mkdir(parents=True)
    for name, data in files.items():
        (path / name).write_bytes(data)
    entries = {n: {"bytes": len(d), "sha256": file_sha256(path / n)} for n, d in files.items()}
    (path / MANIFEST).write_text(json.dumps({"format": FORMAT, "step": step, "files": entries}))
    return path


def test_a_damaged_set_falls_back_to_an_older_good_one_or_is_refused(tmp_path):
    files = {"best.safetensors": b"weights-1", "best.json": b"{}"}
    old = _set(tmp_path, 1, 10, files)
    new = _set(tmp_path, 2, 20, {"best.safetensors": b"weights-2", "best.json": b"{}"})
    os.symlink(os.path.relpath(new, tmp_path), tmp_path / "checkpoints")
    stem = tmp_path / "checkpoints" / "best"
    said: list[str] = []
    assert verified_checkpoint(stem, said.append) == stem and said == []
    (new / "best.safetensors").write_bytes(b"weights-X")  # same size, other bytes
    assert verified_checkpoint(stem, said.append) == old / "best"
    assert len(said) == 1 and "checkpoints/best.safetensors is corrupt (sha256 differs from MANIFEST.json)" in said[0]
    assert f"previous checkpoint set {old} (step 10)" in said[0]
    (old / "best.json").write_bytes(b"[]")
    with pytest.raises(
        WeightsError, match="best.safetensors is corrupt .* no earlier checkpoint set holds a good copy"
    ):
        verified_checkpoint(stem, said.append)


def test_a_checkpoint_outside_a_set_is_used_as_it_is(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"w")
    assert verified_checkpoint(tmp_path / "model", print) == tmp_path / "model"


def test_default_loader_workers_never_exceed_the_cores(monkeypatch):
    from mtlora_deploy.trainer import data_setup

    monkeypatch.setattr(data_setup, "usable_cores", lambda: 2)
    assert data_setup.resolve_workers(None) == 2 and data_setup.resolve_workers(0) == 0
    with pytest.warns(UserWarning, match="`num_workers` 8 is more than the 2 CPU cores"):
        assert data_setup.resolve_workers(8) == 8
    monkeypatch.setattr(data_setup, "usable_cores", lambda: 16)
    assert data_setup.resolve_workers(None) == data_setup.DEFAULT_WORKERS
