"""Per-task merge of the task-conditioned ``mtl-lora`` model (docs/mtl_lora.md, "Deployment"): the checks around it.

The per-task merged models and their construction live in the model layer (``mtlora_deploy.model.per_task``;
each ``MTLLoRALinear.to_deployed(task)`` folds ``W_t``); they are re-exported here under their public names.
"""

from __future__ import annotations

from torch import nn

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.model.per_task import (
    TASK_CONDITIONED,
    PerTaskModels,
    build_per_task_merged,
    is_task_conditioned,
    merge_per_task,
)

__all__ = [
    "TASK_CONDITIONED",
    "PerTaskModels",
    "build_per_task_merged",
    "check_mergeable",
    "is_task_conditioned",
    "merge_per_task",
    "needs_per_task_merge",
]


def needs_per_task_merge(model: nn.Module) -> bool:
    """True for an unmerged multi-task ``mtl-lora`` model: no single merged encoder, one merged model per task."""
    return is_task_conditioned(model) and len(getattr(model, "tasks", ())) > 1


def check_mergeable(model: nn.Module) -> None:
    """Refuse a multi-task ``mtl-lora`` model where one merged model is expected (one line naming the way out)."""
    if needs_per_task_merge(model):
        raise ConfigError(
            f"merge: this {TASK_CONDITIONED} model is task-conditioned ({len(model.tasks)} tasks): there is no single "
            "merged encoder; merge per task with mtlora_deploy.deploy.merge_mtl.merge_per_task(model, task), or "
            "'mtlora export' it, which writes one ONNX graph per task"
        )
