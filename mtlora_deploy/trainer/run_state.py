"""Everything a run needs to continue exactly: model, optimizer, scheduler, scaler, RNG, counters."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtlora_deploy.errors import MTLoRAError
from mtlora_deploy.model.checkpoint import load_state_strict, save_checkpoint
from mtlora_deploy.utils.atomic import atomic_path


class TrainingError(MTLoRAError):
    """Training cannot go on (a non-finite loss, an unusable resume folder)."""


@dataclass
class Progress:
    """Counters of a run; ``step`` counts optimizer steps since the start."""

    step: int = 0
    epoch: int = 0
    best_delta: float | None = None
    best_step: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def save_training_state(
    run_dir: Path, model: nn.Module, optimizer, scheduler, scaler, progress: Progress, name: str = "last"
) -> None:
    """Write ``checkpoints/NAME.{safetensors,json}`` and the resume state ``NAME.state.pt``, each atomically."""
    ckpt_dir = run_dir / "checkpoints"
    save_checkpoint(model, ckpt_dir / name, metadata={"step": progress.step, "epoch": progress.epoch})
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "progress": asdict(progress),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    with atomic_path(ckpt_dir / f"{name}.state.pt") as tmp:
        torch.save(state, tmp)


def load_training_state(run_dir: Path, model: nn.Module, optimizer, scheduler, scaler) -> Progress:
    """Restore a run from ``checkpoints/last``; every piece must be there."""
    from safetensors.torch import load_file

    ckpt = run_dir / "checkpoints" / "last"
    for suffix in (".safetensors", ".json", ".state.pt"):
        if not Path(f"{ckpt}{suffix}").is_file():
            raise TrainingError(f"--resume {run_dir}: {ckpt}{suffix} is missing; nothing to resume from")
    load_state_strict(model, load_file(f"{ckpt}.safetensors"), f"{ckpt}.safetensors")
    state = torch.load(f"{ckpt}.state.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng_cpu"])
    if state["rng_cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return Progress(**state["progress"])
