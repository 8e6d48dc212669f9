"""Checks of CLI inputs and outputs that run before any long work (a bad ``-o`` must not cost a 30 s export).

Each raises a one-line :class:`~mtlora_deploy.errors.ConfigError` naming the option, the value and the fix.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.utils.artifacts import CALIBRATED_PRECISIONS, PLAN_SUFFIXES


def _first_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_parent(path: str | Path, option: str) -> None:
    """The folder that will hold ``path`` exists or can be made, and is writable."""
    target = Path(path)
    ancestor = _first_existing(target.parent)
    if not ancestor.is_dir():
        raise ConfigError(f"{option} {path}: {ancestor} is a file, so no folder can be made under it")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: {ancestor} is not writable")


def check_output_file(path: str | Path, option: str = "-o/--output") -> None:
    """``path`` can be written as a file (not a folder, under a writable folder)."""
    if Path(path).is_dir():
        raise ConfigError(f"{option} {path} is a folder; expected a file name such as {Path(path) / 'model.onnx'}")
    check_writable_parent(path, option)


def check_output_dir(path: str | Path, option: str = "-o/--output") -> None:
    """``path`` is or can become a writable folder."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{option} {path} is a file; expected a folder")
    check_writable_parent(target / "x", option)


def check_calibration_file(path: str | Path | None, precision: str, option: str = "--calib") -> None:
    """int8 and fp8 need ``--calib``; a given file must be an .npz archive of plain arrays."""
    if path is None:
        if precision in CALIBRATED_PRECISIONS:
            raise ConfigError(
                f"--precision {precision} needs {option} FILE.npz; draw one with: mtlora calibrate --data DIR "
                "--split train --model MODEL -o calib/train.npz"
            )
        return
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{option} {path} does not exist; draw one with: mtlora calibrate --data DIR -o {path}")
    if not zipfile.is_zipfile(path):
        raise ConfigError(
            f"{option} {path} is not an .npz archive (truncated or another kind of file); "
            f"draw one with: mtlora calibrate --data DIR -o {path}"
        )
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError(
            f"{option} {path} is a corrupt .npz archive ({exc}); draw it again with mtlora calibrate"
        ) from exc
    if not names:
        raise ConfigError(f"{option} {path} holds no arrays; draw it again with mtlora calibrate")


def check_model_input(path: str | Path, option: str = "INPUT") -> None:
    """A run/checkpoint folder, a checkpoint file, an ONNX model that parses, or a TensorRT plan."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{option} {path} does not exist (expected a run or checkpoint folder, .onnx file or plan)")
    if path.is_dir() or path.suffix in (*PLAN_SUFFIXES, ".safetensors", ".json"):
        return
    if path.suffix != ".onnx":
        raise ConfigError(
            f"{option} {path}: unknown kind of file {path.suffix or '(no suffix)'!r}; expected a run or "
            f"checkpoint folder, an .onnx file or a TensorRT plan ({', '.join(PLAN_SUFFIXES)})"
        )
    import onnx

    try:
        onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
        detail = " ".join(str(exc).split())[:120]
        raise ConfigError(
            f"{option} {path} is not a valid ONNX model (truncated or corrupt: {detail}); "
            "export it again with mtlora export"
        ) from exc
