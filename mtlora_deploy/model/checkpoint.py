"""Checkpoints: tensors in safetensors, config and metadata in a JSON file beside them.

A checkpoint is the pair ``NAME.safetensors`` + ``NAME.json``. A run folder keeps ``checkpoints/best`` and
``checkpoints/last``; a merged/export folder keeps ``model``. Both files are written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from mtlora_deploy.errors import WeightsError, warn
from mtlora_deploy.model.config import ModelConfig
from mtlora_deploy.model.state_io import CORRUPT_HINT, load_state_strict, read_tensors
from mtlora_deploy.utils.atomic import atomic_path, write_json_atomic
from mtlora_deploy.utils.checkpoint_manifest import verified_checkpoint

FORMAT = "mtlora-deploy-checkpoint"
# kind -> builder(config) producing an empty module of the right structure. Each kind registers itself where it is
# defined: "multitask" in model.multitask, "merged" in deploy.merge; a module that loads checkpoints imports the
# kinds it loads (``mtlora_deploy.load`` imports deploy.merge, which imports model.multitask).
BUILDERS: dict[str, Callable[[ModelConfig], nn.Module]] = {}


def register_builder(kind: str, builder: Callable[[ModelConfig], nn.Module]) -> None:
    """Let a model kind (e.g. merged) be re-created from its JSON before its tensors load."""
    BUILDERS[kind] = builder


def _version() -> str:
    from mtlora_deploy._version import __version__

    return __version__


def save_checkpoint(
    model: nn.Module, path: str | Path, kind: str = "multitask", metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``path.safetensors`` and ``path.json`` (``path`` without suffix); returns the tensor file."""
    stem = Path(path).with_suffix("") if Path(path).suffix in (".safetensors", ".json") else Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(stem.with_suffix(".safetensors")) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    write_json_atomic(stem.with_suffix(".json"), checkpoint_info(model, kind, metadata))
    return stem.with_suffix(".safetensors")


def checkpoint_info(model: nn.Module, kind: str = "multitask", metadata: dict[str, Any] | None = None) -> dict:
    """The JSON half of a checkpoint: format, kind, toolkit version, model config and free-form metadata."""
    return {
        "format": FORMAT,
        "kind": kind,
        "toolkit_version": _version(),
        "model_config": model.config.to_dict(),
        "metadata": metadata or {},
    }


def checkpoint_bytes(
    model: nn.Module, kind: str = "multitask", metadata: dict[str, Any] | None = None
) -> dict[str, bytes]:
    """The two files of a checkpoint as bytes (``.safetensors``, ``.json``), for writers that commit sets."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    info = json.dumps(checkpoint_info(model, kind, metadata), indent=2, sort_keys=False) + "\n"
    return {".safetensors": save(tensors, metadata={"format": FORMAT}), ".json": info.encode()}


def resolve_checkpoint(path: str | Path) -> Path:
    """Map a run folder, checkpoint folder, .safetensors or .json path to the checkpoint's stem."""
    path = Path(path)
    if path.is_dir():
        for candidate in ("checkpoints/best", "checkpoints/last", "model"):
            if (path / candidate).with_suffix(".json").is_file():
                return path / candidate
        raise WeightsError(
            f"{path}: no checkpoint found (expected checkpoints/best.json, checkpoints/last.json or model.json)"
        )
    stem = path.with_suffix("")
    if not stem.with_suffix(".json").is_file() or not stem.with_suffix(".safetensors").is_file():
        raise WeightsError(f"{path}: expected a checkpoint pair {stem.name}.safetensors + {stem.name}.json")
    return stem


def read_checkpoint_info(path: str | Path) -> dict[str, Any]:
    """The JSON half of a checkpoint (config, kind, metadata)."""
    stem = resolve_checkpoint(path)
    try:
        info = json.loads(stem.with_suffix(".json").read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{stem}.json is truncated or corrupt (not JSON: {exc}); {CORRUPT_HINT}") from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        info = info if isinstance(info, dict) else {}
        raise WeightsError(f"{stem}.json: not an mtlora-deploy checkpoint (format={info.get('format')!r})")
    return info


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model a checkpoint describes, load its tensors, return it in eval mode.

    Files of a committed checkpoint set are verified against its sha256 manifest first (an older set is used,
    with a warning, when the newest one is damaged).
    """
    stem = verified_checkpoint(resolve_checkpoint(path), warn)
    info = read_checkpoint_info(stem)
    config = ModelConfig.from_dict({**info["model_config"], "pretrained": None}, source=f"{stem}.json")
    kind = info.get("kind", "multitask")
    if kind not in BUILDERS:
        raise WeightsError(f"{stem}.json: unknown model kind {kind!r}; expected one of {', '.join(BUILDERS)}")
    model = BUILDERS[kind](config)
    load_state_strict(model, read_tensors(stem.with_suffix(".safetensors")), f"{stem}.safetensors")
    return model.to(device).eval()
