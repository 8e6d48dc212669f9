"""The multi-task model: MTLoRA Swin encoder + one decoder per task, logits at input size.

Importing this module registers the ``multitask`` checkpoint kind (``checkpoint.load_checkpoint`` rebuilds it);
every module that loads checkpoints imports it (the package ``mtlora_deploy.model`` no longer does: it stays light).
"""

from __future__ import annotations

import torch
from torch import nn

from mtlora_deploy.model.backbone import MultiTaskSwin, create_timm_swin, warn_no_weights
from mtlora_deploy.model.checkpoint import register_builder
from mtlora_deploy.model.config import ModelConfig
from mtlora_deploy.model.decoders import HRNetHead, TaskBatchedHeads


class MultiTaskModel(nn.Module):
    """``model(images) -> {task: logits (B, n_out, H, W)}`` for every configured task."""

    def __init__(self, config: ModelConfig, backbone: MultiTaskSwin | None = None) -> None:
        super().__init__()
        self.config = config
        self.tasks = tuple(config.tasks)
        self.backbone = backbone if backbone is not None else MultiTaskSwin(config)
        channels = self.backbone.feature_channels
        self.decoders = nn.ModuleDict(
            {
                t: HRNetHead(channels, config.decoder_widths, config.head_channels, config.output_channels(t))
                for t in self.tasks
            }
        )

    def forward(self, images: torch.Tensor, tasks: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        """Images (B, 3, H, W) -> ``{task: logits}`` for ``tasks`` (default every configured task).

        A task-conditioned backbone (``mtl-lora``) runs its encoder once per requested task, batched; naming
        one task is the per-task inference a per-task merged graph replaces. A merged model's decoders are
        ``TaskBatchedHeads`` fed with the task-stacked features.
        """
        tasks = self.tasks if tasks is None else tuple(tasks)
        size = images.shape[-2:]
        if isinstance(self.decoders, TaskBatchedHeads):  # deployed: task-batched heads over stacked features
            self.backbone._check_tasks(tasks)
            return self.decoders(self.backbone.stream_features(images), size, tasks)
        feats = self.backbone(images, tasks)
        return {
            t: nn.functional.interpolate(self.decoders[t](feats[t]), size=size, mode="bilinear", align_corners=False)
            for t in tasks
        }


def build_model(config: ModelConfig, warn_without_weights: bool = True) -> MultiTaskModel:
    """Build the model: timm Swin -> ImageNet weights (if configured) -> adapters -> decoders -> freezing."""
    from mtlora_deploy.model.freezing import apply_trainable
    from mtlora_deploy.model.weights import load_imagenet_weights

    swin = create_timm_swin(config)
    if config.pretrained is not None:
        load_imagenet_weights(swin, config.pretrained)
    elif warn_without_weights:
        warn_no_weights(config)
    model = MultiTaskModel(config, MultiTaskSwin(config, swin))
    apply_trainable(model, config)
    return model


def _build_empty(config: ModelConfig) -> MultiTaskModel:
    """The ``multitask`` checkpoint builder: the structure only (no ImageNet weights, no warning); tensors follow."""
    return build_model(config, warn_without_weights=False)


register_builder("multitask", _build_empty)
