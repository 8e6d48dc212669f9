"""PyTorch eager backend: a checkpoint, run folder or merged folder, run as is."""

from __future__ import annotations

import torch
from torch import nn

from mtlora_deploy.engines.base import Backend, TensorSpec


class TorchEagerBackend(Backend):
    """Wraps an ``nn.Module`` returning ``{task: logits}``; optional autocast dtype for fp16/bf16 runs."""

    name = "torch"

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> None:
        device = torch.device(device)
        config = model.config
        super().__init__(config.tasks, config.image_size, device, {"model_config": config.to_dict()})
        self.model = model.to(device).eval()
        self.dtype = dtype

    def input_specs(self) -> list[TensorSpec]:
        return [TensorSpec("image", (-1, 3, self.image_size, self.image_size), "float32")]

    def output_specs(self) -> list[TensorSpec]:
        size = self.image_size
        return [TensorSpec(t, (-1, self.model.config.output_channels(t), size, size), "float32") for t in self.tasks]

    @torch.inference_mode()
    def infer(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        if self.dtype is None:
            return self.model(images)
        with torch.autocast(self.device.type, dtype=self.dtype):
            return self.model(images)

    def describe(self) -> dict:
        return {**super().describe(), "dtype": str(self.dtype or torch.float32).replace("torch.", "")}
