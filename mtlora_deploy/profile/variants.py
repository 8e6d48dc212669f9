"""The model variants the comparisons time: task subsets with the same weights, the merged model, the bare backbone,
and for the task-conditioned ``mtl-lora`` model its per-task merged encoders and an MTLoRA model to put them beside."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtlora_deploy.deploy.merge import is_merged
from mtlora_deploy.model.backbone import create_timm_swin
from mtlora_deploy.model.config import ModelConfig
from mtlora_deploy.model.multitask import MultiTaskModel, build_model


def sub_model(model: MultiTaskModel, tasks: Sequence[str]) -> MultiTaskModel:
    """The same architecture and adapter config for ``tasks`` only, carrying ``model``'s matching weights.

    Used for one-model-per-task (``tasks=(t,)``) and per-task head cost (all tasks but one). Shared weights are
    copied as they are; each kept task brings its own task-specific LoRA and decoder.
    """
    config = model.config.replace(tasks=list(tasks), pretrained=None)
    if model.config.adapter != "none" and is_merged(model):
        from mtlora_deploy.deploy.merge import build_merged

        sub = build_merged(config)
    else:
        sub = build_model(config, warn_without_weights=False)
    state, wanted = model.state_dict(), sub.state_dict()
    if not is_merged(model) or model.config.adapter == "none":
        sub.load_state_dict({key: state[key] for key in wanted}, strict=True)
    else:
        # merged: the row-stacked task branches differ with the task set; keep the sub-model's own values there
        # (latency does not depend on them) and copy every tensor whose shape matches
        sub.load_state_dict({k: state[k] if state[k].shape == v.shape else v for k, v in wanted.items()}, strict=True)
    return sub.eval()


def merged_model(model: MultiTaskModel) -> MultiTaskModel:
    """A merged copy (``merge_task_agnostic``); the input model is left as it is."""
    from mtlora_deploy.deploy.merge import merge_task_agnostic

    return merge_task_agnostic(model)


def per_task_merged(model: MultiTaskModel) -> nn.Module:
    """``mtl-lora`` deployed: the T per-task merged models (``W_t`` folded), run one after another."""
    from mtlora_deploy.deploy.merge_mtl import PerTaskModels

    return PerTaskModels.from_model(model)


def mtlora_reference(model: MultiTaskModel) -> MultiTaskModel:
    """A merged MTLoRA model (task-agnostic rank and task rank from ``model.config``) of the same backbone, input
    size, tasks and heads: the single pass an ``mtl-lora`` model's T task passes are compared with.

    Its weights are random (B = 0): latency does not depend on the values.
    """
    config = model.config.replace(adapter="mtlora", pretrained=None)
    reference = build_model(config, warn_without_weights=False)
    return merged_model(reference)


class BareBackbone(nn.Module):
    """The timm Swin alone (patch embedding, four stages, final norm): no adapters, no task streams, no heads.

    The reference point for the encoder cost: a multi-task model cannot be cheaper than its backbone.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config.replace(adapter="none", pretrained=None)
        self.swin = create_timm_swin(self.config)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": self.swin.forward_features(images)}


def bare_backbone(model: MultiTaskModel) -> BareBackbone:
    """A bare Swin of ``model``'s architecture and input size (weights do not change its latency)."""
    return BareBackbone(model.config).eval()
