"""AdamW with the reference parameter groups and the per-iteration cosine schedule with warm-up."""

from __future__ import annotations

import torch
from timm.scheduler import CosineLRScheduler
from torch import nn

NO_DECAY_KEYWORDS = ("relative_position_bias_table", "absolute_pos_embed")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split as the reference (Swin) does: no decay on 1-D, biases, rel-pos tables."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = param.ndim <= 1 or name.endswith(".bias") or any(k in name for k in NO_DECAY_KEYWORDS)
        (no_decay if skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple, eps: float) -> torch.optim.AdamW:
    """AdamW over the two reference groups."""
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=eps)


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, warmup_lr: float, min_lr: float
) -> CosineLRScheduler:
    """timm's CosineLRScheduler stepped per iteration (``step_update(step)``), as the reference uses."""
    return CosineLRScheduler(
        optimizer,
        t_initial=max(total_steps, 1),
        lr_min=min_lr,
        warmup_lr_init=warmup_lr,
        warmup_t=warmup_steps,
        cycle_limit=1,
        t_in_epochs=False,
    )
