"""A JSON-able description of a model: config, parameter groups, task outputs."""

from __future__ import annotations

from typing import Any

from torch import nn

from mtlora_deploy.model.params import count_parameters


def describe_model(model: nn.Module) -> dict[str, Any]:
    """What ``mtlora info`` prints: counts per group and the (channels, H, W) of every task output."""
    config = model.config
    size = config.image_size
    return {
        "backbone": config.backbone,
        "adapter": config.adapter,
        "trainable_mode": config.trainable,
        "image_size": size,
        **count_parameters(model).to_dict(),
        "tasks": {
            t: {"channels": config.output_channels(t), "shape": [config.output_channels(t), size, size]}
            for t in config.tasks
        },
        "config": config.to_dict(),
    }
