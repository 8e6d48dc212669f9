"""State-file I/O, the leaf of ``model/``: read torch and safetensors files, unwrap them, check keys, load strictly.

Everything that reads tensors from disk or puts a state dict into a module goes through here, so every reader
fails the same way: one ``WeightsError`` line naming the file (or the key, with its shape) and what was expected.
Torch files are read by torch's weights-only unpickler with yacs config nodes allowed (as plain dicts): whole
reference/Microsoft training checkpoints read without yacs installed and without running pickled code.
"""

from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from mtlora_deploy.errors import WeightsError

CORRUPT_HINT = (
    "re-export or re-merge it; in a run folder, mtlora train --resume RUN falls back to the previous checkpoint"
)
CFGNODE_NAME = "yacs.config.CfgNode"


# ----------------------------------------------------------------------------------------------- reading
def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint's safetensors file; a truncated or corrupt one is a one-line WeightsError naming it."""
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for bad headers and sizes
        detail = " ".join(str(exc).split())[:200]
        raise WeightsError(f"{path} is truncated or corrupt ({detail}); {CORRUPT_HINT}") from exc


def check_weights_file(path: Path) -> None:
    """A torch file is a zip archive (or an old-style pickle), a .safetensors file starts with its header length:
    anything else (random bytes, a text file) is named as such before torch.load speaks of pickles."""
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    with open(path, "rb") as handle:
        head = handle.read(9)
    if path.suffix == ".safetensors":
        header = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
        if not (0 < header <= path.stat().st_size - 8 and head[8:9] == b"{"):
            raise WeightsError(f"weights file {path} is not a safetensors file (truncated or another kind of file)")
        return
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise WeightsError(
            f"weights file {path} is not a PyTorch checkpoint (neither the zip archive torch.save writes nor a "
            f"pickle; it starts with {head[:8]!r}); expected a .pth/.pt file or .safetensors"
        )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a .pth/.pt/.bin (torch) or .safetensors file into a flat state dict (unwrapping 'model'/'state_dict')."""
    path = Path(path)
    check_weights_file(path)
    if path.suffix != ".safetensors":
        return unwrap_state_dict(load_torch_file(path), path)
    try:
        return unwrap_state_dict(load_file(str(path)), path)
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is the same user problem
        raise WeightsError(f"weights file {path} could not be read: {str(exc).splitlines()[0]}") from exc


def unwrap_state_dict(state: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a loaded file: the dict itself or its 'model'/'state_dict' entry; anything else is an error."""
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {path}: expected a dict of tensors (optionally under 'model')")
    return state


def load_torch_file(path: str | Path) -> Any:
    """``torch.load`` restricted to tensors, plain containers and yacs config nodes (as plain dicts).

    Raises:
        WeightsError: the file is missing or unreadable, or it pickles any other global (named in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        # torch's unpickler fills and BUILDs only exact dict types; OrderedDict takes a CfgNode's items and flags
        with torch.serialization.safe_globals([(OrderedDict, CFGNODE_NAME)]):
            return _plain(torch.load(path, map_location="cpu", weights_only=True))
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found:
            raise WeightsError(
                f"weights file {path}: refusing to unpickle {found.group(1)} (only tensors, plain containers and "
                "yacs configs are read; no pickled code runs)"
            ) from exc
        raise WeightsError(f"weights file {path} could not be read: {_first_line(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - any reader failure is the same user problem
        raise WeightsError(f"weights file {path} could not be read: {_first_line(exc)}") from exc


def _plain(obj: Any) -> Any:
    """Config nodes (unpickled as OrderedDicts, at any depth) -> plain dicts; everything else unchanged."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# ----------------------------------------------------------------------------------------------- checking, loading
def check_state_keys(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str, hint: str = ""
) -> list[str]:
    """Raise on the first missing or mis-shaped key (named, with ``hint``); return the unexpected keys, sorted."""
    for key, tensor in expected.items():
        if key not in state:
            raise WeightsError(f"{source}: missing key {key} (shape {tuple(tensor.shape)}){hint}")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise WeightsError(
                f"{source}: key {key} has shape {tuple(state[key].shape)}, expected {tuple(tensor.shape)}{hint}"
            )
    return sorted(set(state) - set(expected))


def refuse_unexpected(unexpected: list[str], source: str) -> None:
    """Keys that fit nowhere are an error, never silently dropped."""
    if unexpected:
        raise WeightsError(f"{source}: unexpected key {unexpected[0]} ({len(unexpected)} unexpected in all)")


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load tensors, failing on the first missing, unexpected or mis-shaped key with its name."""
    refuse_unexpected(check_state_keys(state, model.state_dict(), source), source)
    model.load_state_dict(state, strict=True)
