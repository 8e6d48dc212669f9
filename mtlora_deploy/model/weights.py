"""ImageNet Swin weights from a local file: Microsoft ``{'model': ...}`` .pth or timm state dict/safetensors.

Nothing is downloaded unless ``pretrained=timm`` asks for timm's hub weights (``timm_weights``). Loading happens
into the bare timm Swin, before adapters wrap its linears.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from timm.models.swin_transformer import checkpoint_filter_fn
from torch import nn

from mtlora_deploy.errors import WeightsError
from mtlora_deploy.model.checkpoint import check_state_keys, refuse_unexpected

_LINEAR = re.compile(r"\.linear\.(weight|bias)$")  # reference MTLoRA wraps frozen linears as .linear
_SKIPPED_PREFIXES = ("head.", "norm.")  # classifier and final LayerNorm are not part of the dense backbone


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
    """Read a .pth/.pt/.bin (torch) or .safetensors file into a flat state dict (unwrapping 'model'/'state_dict').

    Torch files go through the restricted unpickler of ``reference_checkpoint`` (tensors, plain containers and
    yacs configs only), so whole reference/Microsoft training checkpoints read without yacs and without running code.
    """
    from mtlora_deploy.model.reference_checkpoint import load_torch_file

    path = Path(path)
    check_weights_file(path)
    if path.suffix != ".safetensors":
        return unwrap_state_dict(load_torch_file(path), path)
    try:
        from safetensors.torch import load_file

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
