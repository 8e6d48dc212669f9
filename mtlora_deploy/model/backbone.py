"""MTLoRA Swin backbone: a timm Swin with LoRA adapters and per-task streams out of every stage.

Built from timm (patch merging at the START of stages 2-4). Stage i's task streams go through stage i+1's
patch merging (same module, same weights) before reaching the decoders; stage 4's go as they are.
"""

from __future__ import annotations

import warnings

import timm
import torch
from torch import nn

from mtlora_deploy.model.adapters import MTLoRALinear
from mtlora_deploy.model.config import TIMM_BASE_FOR, ModelConfig
from mtlora_deploy.model.multistream import multistream_block_forward


def create_timm_swin(config: ModelConfig) -> nn.Module:
    """The bare timm Swin for ``config`` (no head weights used), with SDPA attention in every block."""
    arch = config.arch
    model = timm.create_model(
        TIMM_BASE_FOR.get(config.backbone, config.backbone),
        pretrained=False,
        img_size=config.image_size,
        num_classes=0,
        drop_path_rate=config.drop_path_rate,
        **arch,
    )
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = True
    return model


class MultiTaskSwin(nn.Module):
    """Swin encoder returning four feature maps per task (NCHW), shared or task-specific."""

    def __init__(self, config: ModelConfig, swin: nn.Module | None = None) -> None:
        super().__init__()
        if swin is None:
            swin = create_timm_swin(config)
        self.tasks = tuple(config.tasks)
        self.patch_embed = swin.patch_embed
        self.layers = swin.layers
        self.task_specific = config.adapter == "mtlora"
        self.embed_dims = [int(config.arch["embed_dim"] * 2**i) for i in range(len(self.layers))]
        if config.adapter in ("mtlora", "lora"):
            self._wrap_adapters(config)

    @property
    def feature_channels(self) -> list[int]:
        """Channels of the four decoder inputs (192, 384, 768, 768 for Swin-T)."""
        dims = self.embed_dims
        return dims[1:] + dims[-1:]

    def _wrap_adapters(self, config: ModelConfig) -> None:
        """Replace qkv/proj/fc1/fc2 (and MTLoRA+ reductions) by LoRA adapters; TS pairs at stage ends."""
        common = dict(rank=config.task_agnostic_rank, scale=config.lora_scale, dropout=config.lora_dropout)
        task_kw = dict(tasks=self.tasks, task_rank=config.task_specific_rank, task_scale=config.task_specific_scale)
        for stage in self.layers:
            for index, block in enumerate(stage.blocks):
                stage_final = self.task_specific and index == len(stage.blocks) - 1
                block.attn.qkv = MTLoRALinear(block.attn.qkv, **common)
                block.attn.proj = MTLoRALinear(block.attn.proj, **common, **(task_kw if stage_final else {}))
                block.mlp.fc1 = MTLoRALinear(block.mlp.fc1, **common, **(task_kw if stage_final else {}))
                block.mlp.fc2 = MTLoRALinear(block.mlp.fc2, **common, **(task_kw if stage_final else {}))
            if config.lora_on_reductions and isinstance(stage.downsample, nn.Module) and hasattr(stage.downsample, "reduction"):
                stage.downsample.reduction = MTLoRALinear(stage.downsample.reduction, **common)

    def _run_stage(self, stage: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        blocks = list(stage.blocks)
        for block in blocks[:-1]:
            x = block(x)
        if not self.task_specific:
            return blocks[-1](x), None
        return multistream_block_forward(blocks[-1], x, self.tasks)

    def forward(self, images: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """Images (B, 3, H, W) -> ``{task: [f1, f2, f3, f4]}`` NCHW at strides 8, 16, 32, 32."""
        x = self.patch_embed(images)
        feats: dict[str, list[torch.Tensor]] = {t: [] for t in self.tasks}
        pending: dict[str, torch.Tensor] | None = None
        for index, stage in enumerate(self.layers):
            x = stage.downsample(x)
            for task in self.tasks:
                if pending is not None:
                    feats[task].append(stage.downsample(pending[task]))
                elif index > 0:
                    feats[task].append(x)
            x, pending = self._run_stage(stage, x)
        for task in self.tasks:
            feats[task].append(pending[task] if pending is not None else x)
        return {t: [f.permute(0, 3, 1, 2) for f in fs] for t, fs in feats.items()}


def warn_no_weights(config: ModelConfig) -> None:
    """Building without ImageNet weights is legitimate for tests, but a user should know."""
    if config.pretrained is None:
        warnings.warn(
            f"{config.backbone}: built without pretrained weights (random init); pass pretrained=PATH "
            "(--set pretrained=PATH) with a local Swin ImageNet .pth/.safetensors file",
            UserWarning,
            stacklevel=3,
        )
