"""Everything a run needs to continue exactly: model, optimizer, scheduler, scaler, RNG, counters.

A save is one crash-consistent commit (:mod:`mtlora_deploy.trainer.checkpoint_set`): ``last.*`` and, when the
run improved, ``best.*`` become current together. A resume takes the newest set that verifies.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtlora_deploy.errors import MTLoRAError, WeightsError
from mtlora_deploy.model.checkpoint import checkpoint_bytes
from mtlora_deploy.model.state_io import load_state_strict, read_tensors
from mtlora_deploy.trainer import checkpoint_set
from mtlora_deploy.trainer.checkpoint_set import Generation

SUFFIXES = (".safetensors", ".json", ".state.pt")


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


def _state_bytes(optimizer, scheduler, scaler, progress: Progress) -> bytes:
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "progress": asdict(progress),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def save_training_state(
    run_dir: Path, model: nn.Module, optimizer, scheduler, scaler, progress: Progress, best: bool = False
) -> Generation:
    """Commit ``checkpoints/last.{safetensors,json,state.pt}`` (and ``best.*`` = the same files if ``best``) at once.

    ``best.*`` of the previous commit is carried over (hard-linked) when this step is not the best.
    """
    files = checkpoint_bytes(model, metadata={"step": progress.step, "epoch": progress.epoch})
    files[".state.pt"] = _state_bytes(optimizer, scheduler, scaler, progress)
    named = {f"last{suffix}": data for suffix, data in files.items()}
    best_names = tuple(f"best{suffix}" for suffix in SUFFIXES)
    links = {f"best{suffix}": f"last{suffix}" for suffix in SUFFIXES} if best else {}
    return checkpoint_set.commit(run_dir, named, progress.step, keep=() if best else best_names, links=links)


def load_training_state(
    run_dir: Path,
    model: nn.Module,
    optimizer,
    scheduler,
    scaler,
    warn: Callable[[str], None] = print,
    repair: bool = True,
) -> Progress | None:
    """Restore a run from the newest consistent checkpoint set; None when there is none (start from step 0).

    A newer set that fails its checks (missing, truncated or corrupt file, steps that disagree) is named in a
    one-line ``warn`` and skipped; with ``repair`` (rank 0) the ``checkpoints`` link is pointed at the set actually
    used and leftovers of an interrupted commit are removed.
    """
    run_dir = Path(run_dir)
    for generation in checkpoint_set.list_generations(run_dir):
        problem = checkpoint_set.verify(generation) or _restore(generation.path, model, optimizer, scheduler, scaler)
        if isinstance(problem, Progress):
            if repair:
                checkpoint_set.point_link(run_dir, generation.path)
                checkpoint_set.prune(run_dir)
            return problem
        warn(f"checkpoint {generation.path} (step {generation.step}) is unusable: {problem}; trying an older one")
    legacy = run_dir / checkpoint_set.LINK
    if legacy.is_dir() and not legacy.is_symlink() and (legacy / "last.json").is_file():
        result = _restore(legacy, model, optimizer, scheduler, scaler)
        if isinstance(result, Progress):
            return result
        raise TrainingError(f"resuming {run_dir}: {legacy} is unusable: {result}; start a new run")
    warn(f"no complete checkpoint in {run_dir}; starting again from step 0 with its config.yaml")
    return None


def _restore(folder: Path, model: nn.Module, optimizer, scheduler, scaler) -> Progress | str:
    """Load ``folder/last.*`` into the objects; returns the Progress, or what is wrong with the set."""
    for suffix in SUFFIXES:
        if not (folder / f"last{suffix}").is_file():
            return f"last{suffix} is missing"
    try:
        info = json.loads((folder / "last.json").read_text())
    except (ValueError, UnicodeDecodeError):
        return "last.json is truncated or corrupt"
    try:
        state = torch.load(folder / "last.state.pt", map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - a truncated zip or pickle raises many types
        return "last.state.pt is truncated or corrupt"
    try:
        tensors = read_tensors(folder / "last.safetensors")
    except WeightsError:
        return "last.safetensors is truncated or corrupt"
    steps = {"last.json": info.get("metadata", {}).get("step"), "last.state.pt": state["progress"]["step"]}
    if len(set(steps.values())) != 1:
        return "its files disagree on the step (" + ", ".join(f"{k} {v}" for k, v in steps.items()) + ")"
    load_state_strict(model, tensors, str(folder / "last.safetensors"))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng_cpu"])
    if state["rng_cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return Progress(**state["progress"])
