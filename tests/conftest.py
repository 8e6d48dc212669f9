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


# The model of the tiny training runs (train_tiny_run): heads wider than TINY's so that a few dozen steps learn.
TRAIN_MODEL = dict(
    backbone="swin_test_tiny", image_size=64, decoder_widths=(8, 8, 16, 16), head_channels=64, task_agnostic_rank=8
)


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


def full_size_structure(preset: str = "mtlora-r64"):
    """A full-size model (Swin-T at 448) on the meta device: every module and parameter shape, no memory, no init
    time (a second instead of ~10 on a loaded CPU). For counts and key sets; it cannot run or hold values."""
    with torch.device("meta"):
        return build_model(resolve_config(preset), warn_without_weights=False)


def randomize_lora(model: torch.nn.Module, seed: int = 1, std: float = 0.05) -> None:
    """Give every LoRA B (zero at init) random values so the adapters actually change outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name and "_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def train_tiny_run(run_dir, model: dict | None = None, stop_after: int | None = None, **train):
    """Train ``mtlora-r16`` on TRAIN_MODEL (updated with ``model``) and the in-memory synthetic set, through the
    library (``start_run``), with library warnings silenced; ``train`` overrides the training config's fields."""
    from mtlora_deploy.trainer.api import start_run

    overrides = {
        "data": "synthetic",
        "synthetic_images": 24,
        "batch_size": 4,
        "num_workers": 0,
        "base_lr": 0.2,
        "warmup_steps": 1,
        "log_every": 1,
        **train,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return start_run(
            "mtlora-r16", None, {**TRAIN_MODEL, **(model or {})}, overrides, run_dir, stop_after=stop_after
        )


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
