"""Exact merge of the task-agnostic LoRA (docs/deploy.md, "Merge") and the merged checkpoint kind.

``merge_task_agnostic`` walks a ``MultiTaskModel`` and puts each adapter's ``to_deployed()`` in its place (the merge
math is the adapter's own): every adapter without task branches becomes a plain ``nn.Linear`` holding
``W + s B_sh A_sh``; stage-final adapters (MTLoRA's, and the ``mtlora-mtl`` hybrid's MTL-LoRA ones) become
``TaskBranchLinear``. The task-conditioned ``mtl-lora`` model has
no task-agnostic merge: it merges per task (``merge_mtl.merge_per_task``). Importing this module registers the
``merged`` checkpoint kind so ``mtlora_deploy.load`` rebuilds merged folders (per-task ones included).
"""

from __future__ import annotations

import copy
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from mtlora_deploy.deploy.merge_mtl import (
    TASK_CONDITIONED,
    build_per_task_merged,
    check_mergeable,
    is_task_conditioned,
    merge_per_task,
)
from mtlora_deploy.errors import OutputError, WeightsError
from mtlora_deploy.model.adapters import MTLoRALinear
from mtlora_deploy.model.checkpoint import load_checkpoint, register_builder, save_checkpoint
from mtlora_deploy.model.config import ModelConfig
from mtlora_deploy.model.decoders import TaskBatchedHeads
from mtlora_deploy.model.deployed import replace_submodule
from mtlora_deploy.model.mtl_lora import MTLLoRABranch, MTLoRAMTLLinear
from mtlora_deploy.model.multitask import MultiTaskModel, build_model
from mtlora_deploy.model.params import count_parameters

MERGED_KIND = "merged"


def is_merged(model: nn.Module) -> bool:
    """True when no LoRA or MTL-LoRA adapter is left (a merged model, or one that never had adapters)."""
    return not any(isinstance(m, (MTLoRALinear, MTLLoRABranch)) for m in model.modules())


def merge_task_agnostic(model: MultiTaskModel) -> MultiTaskModel:
    """A merged copy of ``model`` in eval mode, numerically equal to it (the input is left untouched).

    Presets without adapters (full, decoders, bitfit) come back as a plain copy; ``lora`` folds every adapter;
    ``mtlora-mtl`` folds its shared path and keeps its MTL-LoRA task branches low-rank. A single-task ``mtl-lora``
    model is merged per task (its only task); a multi-task one has no single merged encoder.

    Raises:
        WeightsError: a LoRA or base weight holds NaN/inf (the message names the layer and tensor).
        ConfigError: ``model`` is a multi-task ``mtl-lora`` model (merge it per task instead).
    """
    if not isinstance(model, MultiTaskModel):
        raise WeightsError(f"merge: expected a MultiTaskModel, got {type(model).__name__}")
    check_mergeable(model)
    if is_task_conditioned(model):
        return merge_per_task(model, model.tasks[0])
    merged = copy.deepcopy(model).eval()
    adapters = [(n, m) for n, m in merged.named_modules() if isinstance(m, (MTLoRALinear, MTLoRAMTLLinear))]
    for name, adapter in adapters:
        replace_submodule(merged, name, adapter.to_deployed(name))
    if not isinstance(merged.decoders, TaskBatchedHeads):
        merged.decoders = TaskBatchedHeads.from_heads(merged.decoders)
    return merged.requires_grad_(False)


def build_merged(config: ModelConfig) -> MultiTaskModel:
    """The empty merged structure for ``config`` (the ``merged`` checkpoint builder; tensors load afterwards).

    A one-task ``mtl-lora`` config is a per-task merged model (``merge_per_task``).
    """
    if config.adapter == TASK_CONDITIONED:
        return build_per_task_merged(config)
    return merge_task_agnostic(build_model(config.replace(pretrained=None), warn_without_weights=False))


register_builder(MERGED_KIND, build_merged)


@dataclass
class MergeReport:
    """What ``mtlora merge`` did: where it wrote, and the parameter counts before and after."""

    output: Path
    source: str
    params_before: int
    params_after: int
    deployed_expected: int
    tables: dict[str, Any] = field(default_factory=dict)


def merge_checkpoint(source: str | Path, output_dir: str | Path) -> MergeReport:
    """Load a checkpoint or run folder, merge it and save ``output_dir/model.{safetensors,json}`` atomically.

    Args:
        source: run folder, checkpoint folder or checkpoint file (``mtlora_deploy.load`` accepts them all).
        output_dir: folder for the merged checkpoint; a new folder appears in one rename, an existing one
            gets its two files replaced (tensors first, then the JSON that makes them loadable).
    """
    if not Path(source).exists():
        raise WeightsError(f"{source}: does not exist (expected a run folder, checkpoint folder or checkpoint file)")
    model = load_checkpoint(source)  # this module registered the merged kind, so merged sources load too
    if not isinstance(model, MultiTaskModel):
        raise WeightsError(f"{source}: expected a multi-task model checkpoint, got {type(model).__name__}")
    before, merged = count_parameters(model), merge_task_agnostic(model)
    after = count_parameters(merged)
    metadata = {"params_before": before.total_params, "params_after": after.total_params, "source": str(source)}
    _save_into_folder(merged, Path(output_dir), metadata)
    return MergeReport(
        Path(output_dir),
        str(source),
        before.total_params,
        after.total_params,
        before.deployed_params,
        {"before": before.to_dict(), "after": after.to_dict()},
    )


def _save_into_folder(model: MultiTaskModel, folder: Path, metadata: dict[str, Any]) -> None:
    """Write the checkpoint in a sibling temp folder, then move it into place (see ``merge_checkpoint``)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp"
    staging.mkdir()  # not mkdtemp: its 0700 mode would stick to the renamed folder
    try:
        try:
            save_checkpoint(model, staging / "model", kind=MERGED_KIND, metadata=metadata)
        except OutputError as exc:  # name the folder asked for, not the staging folder
            raise OutputError(
                f"cannot write the merged model into {folder}: {exc.reason}; nothing was written there",
                folder,
                exc.reason,
            ) from exc
        if not folder.exists():
            os.replace(staging, folder)
            return
        for name in ("model.safetensors", "model.json"):
            os.replace(staging / name, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
