"""Shared fixtures: tiny model configs that build and run in well under a second on a CPU."""

from __future__ import annotations

import warnings

import pytest
import torch

from mtlora_deploy.model import ModelConfig, build_model, resolve_config

TINY = dict(backbone="swin_test_tiny", image_size=64, decoder_widths=(4, 4, 8, 8), head_channels=16)
# The same tiny model for CLI runs (mtlora train/compare ... --set KEY=VALUE), with rank 4 adapters.
TINY_CLI = [
    arg
    for item in (
        "backbone=swin_test_tiny",
        "image_size=64",
        "task_agnostic_rank=4",
        "decoder_widths=[4,4,8,8]",
        "head_channels=16",
    )
    for arg in ("--set", item)
]


def tiny_config(preset: str = "mtlora-r16", **overrides) -> ModelConfig:
    """A preset on the tiny Swin (embed 24, depths 1,1,2,1, window 2) at 64x64 with small heads."""
    overrides = (
        {"task_agnostic_rank": 4, **TINY, **overrides}
        if preset.startswith(("mtlora", "lora"))
        else {**TINY, **overrides}
    )
    return resolve_config(preset, overrides=overrides)


def tiny_model(preset: str = "mtlora-r16", seed: int = 0, **overrides):
    """Build a tiny model with a fixed seed and no 'no weights' warning."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model(tiny_config(preset, **overrides), warn_without_weights=False)


def randomize_lora(model: torch.nn.Module, seed: int = 1, std: float = 0.05) -> None:
    """Give every LoRA B (zero at init) random values so the adapters actually change outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name and "_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def run_ort(path, images) -> dict:
    """Every output of the ONNX graph at ``path`` for ``images`` (numpy or torch), on the ONNX Runtime CPU EP."""
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    array = images.numpy() if isinstance(images, torch.Tensor) else images
    return dict(zip(names, session.run(names, {"image": array}), strict=True))


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
