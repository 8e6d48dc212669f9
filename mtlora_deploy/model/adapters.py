"""LoRA adapters in the PEFT manner: each wraps a frozen ``nn.Linear`` kept as ``base_layer``.

``MTLoRALinear`` carries the task-agnostic pair (A_sh, B_sh) and, in stage-final blocks, one task-specific
pair (A_t, B_t) per task. Parameter names match the reference MTLoRA checkpoints
(``lora_shared_A``, ``lora_tasks_A.<task>``) so importing is a rename of ``linear`` to ``base_layer`` only.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _kaiming_a(rows: int, cols: int) -> nn.Parameter:
    """A matrix initialised like nn.Linear (kaiming-uniform a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in))."""
    weight = torch.empty(rows, cols)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    return nn.Parameter(weight)


class SharedTaskStreams:
    """The shared/task stream arithmetic of every stage-final adapter (MTLoRA's and the MTL-LoRA hybrid).

    Needs ``base_layer``, ``lora_dropout``, ``lora_shared_A/B``, ``scale``, ``tasks`` and ``task_delta(task, x)``.
    """

    def shared_delta(self, x_dropped: torch.Tensor) -> torch.Tensor:
        """``s * B_sh A_sh x`` for an already dropped-out input."""
        return self.scale * nn.functional.linear(
            nn.functional.linear(x_dropped, self.lora_shared_A), self.lora_shared_B
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shared stream only (every block that is not stage-final, and the shared path of those that are)."""
        return self.base_layer(x) + self.shared_delta(self.lora_dropout(x))

    def forward_streams(
        self, x: torch.Tensor, x_tasks: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Shared output and one output per task; the full-rank product ``W x + b`` is computed once.

        Args:
            x: shared stream, (..., in).
            x_tasks: per-task streams for the low-rank terms; None means every task sees ``x`` with the same
                dropout mask as the shared term (the ``attn.proj`` case).
        """
        base = self.base_layer(x)
        x_dropped = self.lora_dropout(x)
        shared = base + self.shared_delta(x_dropped)
        outs = {}
        for task in self.tasks:
            x_t = x_dropped if x_tasks is None else self.lora_dropout(x_tasks[task])
            outs[task] = base + self.task_delta(task, x_t)
        return shared, outs

    @torch.no_grad()
    def get_delta_weight(self) -> torch.Tensor:
        """``s * B_sh A_sh`` (out x in): what folding adds to W."""
        return self.scale * self.lora_shared_B @ self.lora_shared_A


class MTLoRALinear(SharedTaskStreams, nn.Module):
    """Frozen linear + shared low-rank update + optional per-task low-rank updates.

    Shared output: ``y = W x + b + s * B_sh A_sh dropout(x)``.
    Task output:   ``y_t = W x + b + s_t * B_t A_t dropout(x_t)`` (no shared term; W sees the shared x).
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        rank: int,
        scale: float = 4.0,
        dropout: float = 0.05,
        tasks: tuple[str, ...] = (),
        task_rank: int = 4,
        task_scale: float = 4.0,
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.rank, self.scale = rank, float(scale)
        self.task_rank, self.task_scale = task_rank, float(task_scale)
        self.tasks = tuple(tasks)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_shared_A = _kaiming_a(rank, self.in_features)
        self.lora_shared_B = nn.Parameter(torch.zeros(self.out_features, rank))
        self.lora_tasks_A = nn.ParameterDict({t: _kaiming_a(task_rank, self.in_features) for t in self.tasks})
        self.lora_tasks_B = nn.ParameterDict(
            {t: nn.Parameter(torch.zeros(self.out_features, task_rank)) for t in self.tasks}
        )

    def task_delta(self, task: str, x_dropped: torch.Tensor) -> torch.Tensor:
        """``s_t * B_t A_t x`` for one task."""
        down = nn.functional.linear(x_dropped, self.lora_tasks_A[task])
        return self.task_scale * nn.functional.linear(down, self.lora_tasks_B[task])

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scale={self.scale}, tasks={list(self.tasks)}, task_rank={self.task_rank}"
