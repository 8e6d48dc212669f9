"""Convert between the reference MTLoRA checkpoint layout and ours (both directions).

Reference (``{'model': state_dict}``, see docs/model.md, "Reference code"): Microsoft Swin stage layout (the
downsample of stage i stored at the END of stage i), frozen weights under ``<layer>.linear``, decoders as
``downsampler.<task>.downsample_<i>`` + ``decoders.decoders.<task>.last_layer.*``. Ours: timm layout
(patch merging at the START of stage i+1), ``<layer>.base_layer``, ``decoders.<task>.reduce.<i>``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from mtlora_deploy.errors import WeightsError
from mtlora_deploy.model.config import ModelConfig
from mtlora_deploy.model.multitask import build_model
from mtlora_deploy.model.state_io import check_state_keys, read_state_dict
from mtlora_deploy.utils.atomic import atomic_path

REFERENCE_BUFFERS = ("attn_mask", "relative_position_index")  # recomputable buffers the reference stores
_RULES_TO_OURS: list[tuple[re.Pattern, object]] = [
    (
        re.compile(r"^backbone\.layers\.(\d+)\.downsample\."),
        lambda m: f"backbone.layers.{int(m.group(1)) + 1}.downsample.",
    ),
    (re.compile(r"\.linear\.(weight|bias)$"), lambda m: f".base_layer.{m.group(1)}"),
    (re.compile(r"^downsampler\.(\w+?)\.downsample_(\d+)\."), lambda m: f"decoders.{m.group(1)}.reduce.{m.group(2)}."),
    (re.compile(r"^decoders\.decoders\."), lambda m: "decoders."),
]
_RULES_TO_REFERENCE: list[tuple[re.Pattern, object]] = [
    (
        re.compile(r"^backbone\.layers\.(\d+)\.downsample\."),
        lambda m: f"backbone.layers.{int(m.group(1)) - 1}.downsample.",
    ),
    (re.compile(r"\.base_layer\.(weight|bias)$"), lambda m: f".linear.{m.group(1)}"),
    (re.compile(r"^decoders\.(\w+?)\.reduce\.(\d+)\."), lambda m: f"downsampler.{m.group(1)}.downsample_{m.group(2)}."),
    (re.compile(r"^decoders\.(\w+?)\.last_layer\."), lambda m: f"decoders.decoders.{m.group(1)}.last_layer."),
]


def _rename(key: str, rules: list) -> str:
    for pattern, replacement in rules:
        key = pattern.sub(replacement, key)
    return key


def reference_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename reference keys to ours; the reference's recomputable buffers are dropped."""
    return {_rename(k, _RULES_TO_OURS): v for k, v in state.items() if not k.endswith(REFERENCE_BUFFERS)}


def ours_to_reference(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename our keys to the reference layout (for round trips and for users going back)."""
    return {_rename(k, _RULES_TO_REFERENCE): v for k, v in state.items()}


def check_against_model(state: dict[str, torch.Tensor], model: nn.Module, source: str) -> list[str]:
    """Return the keys of ``state`` that fit nowhere; raise on missing or mis-shaped keys (named)."""
    return check_state_keys(state, model.state_dict(), source, hint="; check `preset` (rank) and `tasks`")


def import_reference_checkpoint(
    path: str | Path, config: ModelConfig, allow_unused: bool = False
) -> tuple[nn.Module, list[str]]:
    """Build our model for ``config`` and load a reference MTLoRA ``.pth`` into it.

    Returns the model and the reference keys that did not fit (an error unless ``allow_unused``).
    """
    return load_reference_state(read_state_dict(path), config, str(path), allow_unused)


def load_reference_state(
    reference_state: dict[str, torch.Tensor], config: ModelConfig, source: str, allow_unused: bool = False
) -> tuple[nn.Module, list[str]]:
    """Build our model for ``config`` and load a state dict in the reference layout into it (eval mode)."""
    model = build_model(config.replace(pretrained=None), warn_without_weights=False)
    state = reference_to_ours(reference_state)
    unused = check_against_model(state, model, source)
    if unused and not allow_unused:
        raise WeightsError(
            f"{source}: {len(unused)} keys fit nowhere in the model, first {unused[0]} (`allow_unused` skips them)"
        )
    model.load_state_dict({k: v for k, v in state.items() if k not in unused}, strict=True)
    return model.eval(), unused


def save_reference_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Write ``{'model': state_dict}`` in the reference layout (what the reference code would load)."""
    state = ours_to_reference({k: v.detach().cpu() for k, v in model.state_dict().items()})
    with atomic_path(path) as tmp:
        torch.save({"model": state}, tmp)
