"""MTLoRA Swin backbone: a timm Swin with LoRA adapters and per-task streams out of every stage.

With ``adapter=mtl-lora`` the encoder is task-conditioned instead (MTL-LoRA in every block, no task streams).

Built from timm (patch merging at the START of stages 2-4). Stage i's task streams go through stage i+1's
patch merging (same module, same weights) before reaching the decoders; stage 4's go as they are.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import timm
import torch
from torch import nn

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.model.adapters import MTLoRALinear
from mtlora_deploy.model.config import TIMM_BASE_FOR, ModelConfig
from mtlora_deploy.model.mtl_lora import MTLLoRALinear, MTLoRAMTLLinear, task_routing
from mtlora_deploy.model.multistream import attach_window_order, multistream_block_forward


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
    """Swin encoder returning four feature maps per task (NCHW), shared, task-specific or task-conditioned.

    ``mtlora``/``mtlora-mtl`` run one pass with per-task streams out of every stage-final block; ``lora``/``none``
    run one shared pass; ``mtl-lora`` is task-conditioned and runs the encoder once per task, batched as one pass
    over the images repeated T times with per-sample task ids.
    """

    def __init__(self, config: ModelConfig, swin: nn.Module | None = None) -> None:
        super().__init__()
        if swin is None:
            swin = create_timm_swin(config)
        self.tasks = tuple(config.tasks)
        self.patch_embed = swin.patch_embed
        self.layers = swin.layers
        self.task_specific = config.adapter in ("mtlora", "mtlora-mtl")
        self.task_conditioned = config.adapter == "mtl-lora"
        self.embed_dims = [int(config.arch["embed_dim"] * 2**i) for i in range(len(self.layers))]
        if config.adapter != "none":
            self._wrap_adapters(config)
        if self.task_specific:  # the stage-final blocks' window gathers, as graph constants
            for stage in self.layers:
                attach_window_order(stage.blocks[-1])

    @property
    def feature_channels(self) -> list[int]:
        """Channels of the four decoder inputs (192, 384, 768, 768 for Swin-T)."""
        dims = self.embed_dims
        return dims[1:] + dims[-1:]

    def _wrap_adapters(self, config: ModelConfig) -> None:
        """Replace qkv/proj/fc1/fc2 (and MTLoRA+ reductions) by adapters; task branches at stage ends."""
        shared, task_aware = adapter_factories(config)
        for stage in self.layers:
            for index, block in enumerate(stage.blocks):
                wrap = task_aware if self.task_specific and index == len(stage.blocks) - 1 else shared
                block.attn.qkv = shared(block.attn.qkv)
                block.attn.proj = wrap(block.attn.proj)
                block.mlp.fc1 = wrap(block.mlp.fc1)
                block.mlp.fc2 = wrap(block.mlp.fc2)
            if (
                config.lora_on_reductions
                and isinstance(stage.downsample, nn.Module)
                and hasattr(stage.downsample, "reduction")
            ):
                stage.downsample.reduction = shared(stage.downsample.reduction)

    def _run_stage(self, stage: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The stage's blocks: the shared output, and with task streams the task outputs (T, B, H, W, C)."""
        blocks = list(stage.blocks)
        for block in blocks[:-1]:
            x = block(x)
        if not self.task_specific:
            return blocks[-1](x), None
        return multistream_block_forward(blocks[-1], x, self.tasks)

    def forward(self, images: torch.Tensor, tasks: tuple[str, ...] | None = None) -> dict[str, list[torch.Tensor]]:
        """Images (B, 3, H, W) -> ``{task: [f1, f2, f3, f4]}`` NCHW at strides 8, 16, 32, 32.

        Args:
            images: (B, 3, H, W).
            tasks: the tasks to return (default all); a task-conditioned encoder runs only these.
        """
        tasks = self._check_tasks(tasks)
        if self.task_conditioned:
            return self._task_conditioned_features(images, tasks)
        feats = self._stream_features(images)
        return {t: feats[t] for t in tasks}

    def _check_tasks(self, tasks: tuple[str, ...] | None) -> tuple[str, ...]:
        tasks = self.tasks if tasks is None else tuple(tasks)
        unknown = [t for t in tasks if t not in self.tasks]
        if unknown or not tasks:
            got = ",".join(tasks) or "none"
            raise ConfigError(f"tasks: got {got}, expected a non-empty subset of {','.join(self.tasks)}")
        return tasks

    def _task_conditioned_features(self, images: torch.Tensor, tasks: tuple[str, ...]) -> dict[str, list[torch.Tensor]]:
        """One pass over the images repeated per task (task-major), split back per task."""
        count, batch = len(tasks), images.shape[0]
        ids = torch.tensor([self.tasks.index(t) for t in tasks], dtype=torch.long, device=images.device)
        sample_ids = ids.view(count, 1).expand(count, batch).reshape(-1)
        with task_routing(self, sample_ids):
            # single-stream encoder: every task's list holds the same tensors
            maps = self._stream_features(images.repeat(count, 1, 1, 1))[self.tasks[0]]
        per_task = [m.unflatten(0, (count, batch)) for m in maps]  # unflatten, not chunk: export keeps B dynamic
        return {t: [m[i] for m in per_task] for i, t in enumerate(tasks)}

    def stream_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The single pass: the four decoder inputs, NHWC, task-stacked where the tasks differ.

        Each map is shared (B, h, w, C) or one per task stacked in ``tasks`` order (T, B, h, w, C). Stage i's
        task streams go through stage i+1's patch merging as one call over their T * B stacked samples (the shared
        stream as a second call: the two are never concatenated).
        """
        x = self.patch_embed(images)
        feats: list[torch.Tensor] = []
        streams: torch.Tensor | None = None
        for index, stage in enumerate(self.layers):
            x = stage.downsample(x)
            if streams is not None:
                feats.append(stage.downsample(streams.flatten(0, 1)).unflatten(0, (streams.shape[0], -1)))
            elif index > 0:
                feats.append(x)
            x, streams = self._run_stage(stage, x)
        feats.append(streams if streams is not None else x)
        return feats

    def _stream_features(self, images: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """``stream_features`` as ``{task: [f1..f4]}`` NCHW, contiguous (shared maps are the same tensor per task).

        Contiguous, not permuted views: the per-task heads' 1x1 convs and BatchNorm run ~15% faster (forward and
        backward, CPU) on NCHW than on channels-last strides, for a copy of the (small) decoder inputs.
        """
        feats = [
            f.permute(0, 1, 4, 2, 3) if f.dim() == 5 else f.permute(0, 3, 1, 2) for f in self.stream_features(images)
        ]
        feats = [f.contiguous() for f in feats]
        return {t: [f[i] if f.dim() == 5 else f for f in feats] for i, t in enumerate(self.tasks)}


def adapter_factories(config: ModelConfig) -> tuple[Callable[[nn.Linear], nn.Module], Callable[[nn.Linear], nn.Module]]:
    """``(shared, task_aware)`` wrappers of a frozen linear for ``config.adapter``.

    ``shared`` wraps every qkv and the linears of ordinary blocks (MTLoRA's TA-LoRA; MTL-LoRA for ``mtl-lora``);
    ``task_aware`` wraps proj/fc1/fc2 of stage-final blocks in the multi-stream adapters.
    """
    tasks = tuple(config.tasks)
    common = {"rank": config.task_agnostic_rank, "scale": config.lora_scale, "dropout": config.lora_dropout}
    mtl = {
        "rank": config.mtl_rank,
        "num_b": config.mtl_num_b,
        "temperature": config.mtl_temperature,
        "alpha": config.mtl_alpha,
        "diagonal_lambda": config.mtl_diagonal_lambda,
        "dropout": config.lora_dropout,
    }
    if config.adapter == "mtl-lora":
        return (lambda base: MTLLoRALinear(base, tasks, **mtl)), (lambda base: MTLLoRALinear(base, tasks, **mtl))
    if config.adapter == "mtlora-mtl":
        hybrid = {"shared_rank": config.task_agnostic_rank, "shared_scale": config.lora_scale, **mtl}
        return (lambda base: MTLoRALinear(base, **common)), (lambda base: MTLoRAMTLLinear(base, tasks, **hybrid))
    task_kw = {"tasks": tasks, "task_rank": config.task_specific_rank, "task_scale": config.task_specific_scale}
    return (lambda base: MTLoRALinear(base, **common)), (lambda base: MTLoRALinear(base, **common, **task_kw))


def warn_no_weights(config: ModelConfig) -> None:
    """Building without ImageNet weights is legitimate for tests, but a user should know."""
    if config.pretrained is None:
        warnings.warn(
            f"{config.backbone}: built without pretrained weights (random init); pass `pretrained`=PATH, "
            "a local Swin ImageNet .pth/.safetensors file",
            UserWarning,
            stacklevel=3,
        )
