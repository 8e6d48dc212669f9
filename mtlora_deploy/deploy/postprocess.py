"""The exported module: the multi-task model with its outputs as a tuple in task order, logits or labels.

Labels mode moves the usual post-processing into the graph (docs/deploy.md, "Export"): a 21 x 448 x 448 float32 semseg
output is 16.9 MB per image, its uint8 label map 0.2 MB. Every output stays NCHW (labels keep a channel of 1).
"""

from __future__ import annotations

import torch
from torch import nn

from mtlora_deploy.errors import ConfigError

OUTPUT_MODES = ("logits", "labels")
CLASS_TASKS = ("semseg", "human_parts")
SIGMOID_TASKS = ("sal", "edge")
NORMAL_TASKS = ("normals",)


def task_to_labels(task: str, logits: torch.Tensor) -> torch.Tensor:
    """One task's logits (B, C, H, W) -> what a user consumes: class ids, probabilities or unit normals.

    Returns:
        uint8 (B, 1, H, W) for semseg/human_parts, float32 in [0, 1] (B, 1, H, W) for sal/edge,
        float32 unit vectors (B, 3, H, W) for normals.
    """
    if task in CLASS_TASKS:
        return logits.argmax(dim=1, keepdim=True).to(torch.uint8)
    if task in SIGMOID_TASKS:
        return torch.sigmoid(logits)
    if task in NORMAL_TASKS:
        norm = torch.linalg.vector_norm(logits, ord=2, dim=1, keepdim=True)
        return logits / norm.clamp_min(1e-12)
    raise ConfigError(f"`outputs` labels: no post-processing defined for task {task!r}", field="outputs")


class ExportHead(nn.Module):
    """``image (B, 3, H, W) -> tuple of per-task outputs`` in ``model.tasks`` order (ONNX output names)."""

    def __init__(self, model: nn.Module, outputs: str = "logits") -> None:
        super().__init__()
        if outputs not in OUTPUT_MODES:
            raise ConfigError(f"got {outputs!r}, expected one of {', '.join(OUTPUT_MODES)}", field="outputs")
        self.model, self.outputs, self.tasks = model, outputs, tuple(model.tasks)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.model(image)
        if self.outputs == "logits":
            return tuple(logits[t] for t in self.tasks)
        return tuple(task_to_labels(t, logits[t]) for t in self.tasks)
