"""The backend interface that ``evaluate`` and ``profile`` consume: images in, ``{task: tensor}`` out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (-1 for a dynamic axis) and dtype of one graph input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str


class Backend(ABC):
    """A loaded multi-task model on some runtime; ``infer`` takes and returns torch tensors."""

    name: str = "backend"

    def __init__(self, tasks: tuple[str, ...], image_size: int, device: torch.device, metadata: dict[str, Any]) -> None:
        self.tasks, self.image_size, self.device, self.metadata = tuple(tasks), int(image_size), device, metadata

    @abstractmethod
    def input_specs(self) -> list[TensorSpec]:
        """The graph inputs (one: ``image``)."""

    @abstractmethod
    def output_specs(self) -> list[TensorSpec]:
        """One output per task, named after it."""

    @abstractmethod
    def infer(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run a batch (B, 3, H, W) float32 and return ``{task: output}`` (on ``self.device`` where possible)."""

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.infer(images)

    def synchronize(self) -> None:
        """Wait for queued device work (profiling)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def close(self) -> None:  # noqa: B027 (an optional hook: backends that hold nothing keep this no-op)
        """Free runtime resources."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device": str(self.device),
            "tasks": list(self.tasks),
            "image_size": self.image_size,
        }
