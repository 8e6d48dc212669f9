"""ImageNet Swin weights from a local file: Microsoft ``{'model': ...}`` .pth or timm state dict/safetensors.

Nothing is downloaded unless ``pretrained=timm`` asks for timm's hub weights (``timm_weights``). Loading happens
into the bare timm Swin, before adapters wrap its linears.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from timm.models.swin_transformer import checkpoint_filter_fn
from torch import nn

from mtlora_deploy.errors import WeightsError
from mtlora_deploy.model.state_io import check_state_keys, read_state_dict, refuse_unexpected

_LINEAR = re.compile(r"\.linear\.(weight|bias)$")  # reference MTLoRA wraps frozen linears as .linear
_SKIPPED_PREFIXES = ("head.", "norm.")  # classifier and final LayerNorm are not part of the dense backbone


def load_imagenet_weights(swin: nn.Module, path: str | Path) -> None:
    """Load Swin ImageNet weights into a bare timm Swin; the first missing or mis-shaped key is an error.

    ``path`` is a local file (Microsoft/reference ``{'model': ...}`` .pth, a reference ``--resume-backbone`` file,
    timm state dict or safetensors) or ``timm`` / ``timm:NAME`` for timm's own weights through the Hub cache.
    """
    from mtlora_deploy.model.timm_weights import is_timm_spec, timm_weights_file

    source = f"weights file {path}"
    if is_timm_spec(str(path)):
        path = timm_weights_file(str(path), swin)
    state = checkpoint_filter_fn(_backbone_only(read_state_dict(path), source), swin)
    state = {k: v for k, v in state.items() if not k.startswith(_SKIPPED_PREFIXES)}
    expected = {k: v for k, v in swin.state_dict().items() if not k.startswith(_SKIPPED_PREFIXES)}
    refuse_unexpected(check_state_keys(state, expected, source, hint="; is it a Swin of this size?"), source)
    swin.load_state_dict(state, strict=False)


def _backbone_only(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Accept what the reference's ``--resume-backbone`` accepts: plain Swin keys, or its ``.linear.`` layout.

    A whole reference multi-task state dict keeps only its ``backbone.`` part; trained LoRA weights mean the user
    wants ``import-checkpoint``, not ImageNet initialisation.
    """
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    lora = next((k for k in state if ".lora_" in k), None)
    if lora is not None:
        raise WeightsError(
            f"{source}: holds trained LoRA weights ({lora}), not ImageNet weights; convert it with "
            "mtlora import-checkpoint FILE -o DIR"
        )
    return {_LINEAR.sub(r".\1", k): v for k, v in state.items()}
