"""The deployed ``mtl-lora`` model (docs/mtl_lora.md, "Deployment"): one merged single-task model per task,
``W_t = W + (alpha/r) B_t Lambda_t A``.

An ``mtl-lora`` encoder is conditioned on the task, so there is no single merged encoder: each task gets its own
model, a plain Swin (every adapted linear an ``nn.Linear`` holding ``W_t``, from ``MTLLoRALinear.to_deployed``)
with that task's decoder. Dense multi-task inference runs these T encoders one after another (``PerTaskModels``)
or as T graphs.
"""

from __future__ import annotations

import torch
from torch import nn

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.model.config import ModelConfig
from mtlora_deploy.model.deployed import linear_with_weight, replace_submodule
from mtlora_deploy.model.mtl_lora import MTLLoRALinear
from mtlora_deploy.model.multitask import MultiTaskModel, build_model
from mtlora_deploy.model.state_io import load_state_strict

TASK_CONDITIONED = "mtl-lora"


def is_task_conditioned(model: nn.Module) -> bool:
    """True while ``model`` still holds task-conditioned MTL-LoRA layers (an unmerged ``mtl-lora`` model)."""
    return any(isinstance(m, MTLLoRALinear) for m in model.modules())


def build_per_task_merged(config: ModelConfig) -> MultiTaskModel:
    """The empty structure of a per-task merged ``mtl-lora`` model (one task; tensors load afterwards).

    Every MTL-LoRA layer becomes a plain ``nn.Linear`` and the encoder runs one ordinary pass (no task repeat).
    """
    if config.adapter != TASK_CONDITIONED or len(config.tasks) != 1:
        raise ConfigError(
            f"per-task merge: got adapter {config.adapter} with tasks {','.join(config.tasks)}, "
            f"expected adapter {TASK_CONDITIONED} with exactly one task"
        )
    model = build_model(config.replace(pretrained=None), warn_without_weights=False)
    for name, adapter in [(n, m) for n, m in model.named_modules() if isinstance(m, MTLLoRALinear)]:
        replace_submodule(model, name, linear_with_weight(adapter.base_layer, adapter.base_layer.weight))
    model.backbone.task_conditioned = False
    return model.eval().requires_grad_(False)


def merge_per_task(model: MultiTaskModel, task: str) -> MultiTaskModel:
    """A single-task model for ``task`` with ``W_t`` folded into every MTL-LoRA layer; equal to ``model`` on it.

    Args:
        model: an ``mtl-lora`` model (unmerged; left untouched).
        task: one of ``model.tasks``; the result predicts only this task, with its decoder.

    Raises:
        ConfigError: ``model`` is not an unmerged ``mtl-lora`` model, or ``task`` is not one of its tasks.
        WeightsError: a weight holds NaN/inf (the message names the layer and tensor).
    """
    if not isinstance(model, MultiTaskModel) or not is_task_conditioned(model):
        raise ConfigError(
            f"merge_per_task: expected an unmerged {TASK_CONDITIONED} MultiTaskModel, got "
            f"{type(model).__name__} with adapter {getattr(getattr(model, 'config', None), 'adapter', '?')}"
        )
    if task not in model.tasks:
        raise ConfigError(f"merge_per_task: task {task!r} is not one of {', '.join(model.tasks)}")
    merged = build_per_task_merged(model.config.replace(tasks=[task], pretrained=None))
    load_state_strict(merged, _per_task_state(model, task, set(merged.state_dict())), f"merge_per_task({task})")
    device = next(model.parameters()).device
    return merged.to(device).eval().requires_grad_(False)


def _per_task_state(model: MultiTaskModel, task: str, wanted: set[str]) -> dict[str, torch.Tensor]:
    """The tensors of the per-task model: each adapter's deployed ``W_t`` and bias, every other tensor as it is."""
    state = {k: v for k, v in model.state_dict().items() if k in wanted}
    for name, adapter in model.named_modules():
        if isinstance(adapter, MTLLoRALinear):
            state.update({f"{name}.{k}": v for k, v in adapter.to_deployed(task, name).state_dict().items()})
    return state


class PerTaskModels(nn.Module):
    """The deployed ``mtl-lora`` model in PyTorch: the T per-task merged models, run one after another.

    ``forward(images) -> {task: logits}`` like a ``MultiTaskModel``; ``config`` is the source's (all tasks).
    """

    def __init__(self, config: ModelConfig, models: dict[str, MultiTaskModel]) -> None:
        super().__init__()
        self.config, self.tasks = config, tuple(models)
        self.models = nn.ModuleDict(models)

    @classmethod
    def from_model(cls, model: MultiTaskModel) -> PerTaskModels:
        """Merge ``model`` once per task."""
        return cls(model.config, {task: merge_per_task(model, task) for task in model.tasks}).eval()

    def forward(self, images: torch.Tensor, tasks: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        """Images (B, 3, H, W) -> ``{task: logits}``; each requested task costs one full encoder pass."""
        out: dict[str, torch.Tensor] = {}
        for task in self.tasks if tasks is None else tasks:
            out.update(self.models[task](images))
        return out
