"""LoRA adapters in the PEFT manner: each wraps a frozen ``nn.Linear`` kept as ``base_layer``.

``MTLoRALinear`` carries the task-agnostic pair (A_sh, B_sh) and, in stage-final blocks, one task-specific
pair (A_t, B_t) per task. Parameter names match the reference MTLoRA checkpoints
(``lora_shared_A``, ``lora_tasks_A.<task>``) so importing is a rename of ``linear`` to ``base_layer`` only.
As in PEFT, each adapter owns its merge beside its forward: a float64 ``get_delta_weight``, ``merged_weight``
(checked for NaN/inf) and ``to_deployed`` (the merged layer from ``deployed.py``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.model.deployed import (
    TaskBranchLinear,
    check_finite,
    check_merged,
    linear_with_weight,
    task_batched_down,
)


def _kaiming_a(rows: int, cols: int) -> nn.Parameter:
    """A matrix initialised like nn.Linear (kaiming-uniform a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in))."""
    weight = torch.empty(rows, cols)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    return nn.Parameter(weight)


class SharedTaskStreams:
    """The shared/task stream arithmetic of every stage-final adapter (MTLoRA's and the MTL-LoRA hybrid).

    Needs ``base_layer``, ``lora_dropout``, ``lora_shared_A/B``, ``scale``, ``tasks`` and
    ``task_pairs() -> (down (T or 1, r_t, in), up (T, out, r_t))`` with the task scales folded into ``up``.
    Streams are stacked along a leading task axis so the T task branches are two batched products.
    """

    def masked_input(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The LoRA branch input and the factor its rank-r product takes: ``dropout(x) = (m * x) * factor``.

        The mask m ~ Bernoulli(1 - p) is drawn as booleans and the 1 / (1 - p) rescale rides on the rank-r
        product (the same distribution and values as ``nn.Dropout``, without two full-size passes); in eval or
        with p = 0 the input comes back as it is.
        """
        drop = self.lora_dropout
        if not isinstance(drop, nn.Dropout) or not drop.training or drop.p == 0:
            return x, 1.0
        keep = 1.0 - drop.p
        return x * torch.empty_like(x, dtype=torch.bool).bernoulli_(keep), 1.0 / keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shared stream only (every block that is not stage-final, and the shared path of those that are).

        ``W x + b + s B_sh A_sh dropout(x)``: the up-projection, its scale and the sum are one in-place ``addmm_``
        into ``W x + b`` (autograd keeps the linear's input, not its output), so the (M, out) output is written
        once instead of copied first (an ``addmm`` with a full-size C copies it: ~15% of a training step's copies).
        """
        lead = x.shape[:-1]
        masked, factor = self.masked_input(x)
        out = self.base_layer(x.reshape(-1, self.in_features))
        low = nn.functional.linear(masked.reshape(-1, self.in_features), self.lora_shared_A)
        up, alpha = self.lora_shared_B.t(), self.scale * factor
        if torch.is_autocast_enabled(x.device.type) or out.dtype != up.dtype:  # in-place ops are not autocast
            return torch.addmm(out, low, up, alpha=alpha).view(*lead, self.out_features)
        return out.addmm_(low, up, alpha=alpha).view(*lead, self.out_features)

    def shared_and_base(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W x + b + s B_sh A_sh dropout(x), W x + b)`` for rows (M, in): the shared output and the un-adapted
        product that every task stream adds its own low-rank term to."""
        masked, factor = self.masked_input(rows)
        base = self.base_layer(rows)
        low = nn.functional.linear(masked, self.lora_shared_A)
        return torch.addmm(base, low, self.lora_shared_B.t(), alpha=self.scale * factor), base

    def forward_streams(
        self, x: torch.Tensor, x_tasks: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Shared output (..., out) and the task outputs stacked (T, ..., out); ``W x + b`` is computed once.

        Args:
            x: shared stream, (..., in).
            x_tasks: per-task streams stacked (T, ..., in) for the low-rank terms, taken as they are (the reference
                draws LoRA dropout on the shared input only); None means every task sees ``x`` with the same
                dropout mask as the shared term (the ``attn.proj`` case).
        """
        lead, rank = x.shape[:-1], self.lora_shared_A.shape[0]
        down, up = self.task_pairs()
        count = up.shape[0]
        if x_tasks is not None:
            shared, base = self.shared_and_base(x.reshape(-1, self.in_features))
            low_tasks = task_batched_down(x_tasks, down.expand(count, -1, -1))
            tasks = torch.baddbmm(base.unsqueeze(0), low_tasks, up.transpose(1, 2))
            return shared.view(*lead, self.out_features), tasks.view(count, *lead, self.out_features)
        # attn.proj: one product for the shared and every task down-projection, one dropout mask for all
        masked, factor = self.masked_input(x)
        masked = masked.reshape(-1, self.in_features)
        base = self.base_layer(x.reshape(-1, self.in_features))
        low = nn.functional.linear(masked, torch.cat([self.lora_shared_A, down.flatten(0, 1)]))
        low_shared, low_tasks = low[:, :rank], low[:, rank:]
        if down.shape[0] == 1:
            low_tasks = low_tasks.unsqueeze(0).expand(count, -1, -1)
        else:
            low_tasks = low_tasks.reshape(-1, count, down.shape[1]).transpose(0, 1)
        shared = torch.addmm(base, low_shared, self.lora_shared_B.t(), alpha=self.scale * factor)
        tasks = torch.baddbmm(base.unsqueeze(0), low_tasks, up.transpose(1, 2), alpha=factor)
        return shared.view(*lead, self.out_features), tasks.view(count, *lead, self.out_features)

    @torch.no_grad()
    def get_delta_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``s * B_sh A_sh`` (out x in), what folding adds to W: computed in float64, returned in ``dtype``.

        Args:
            dtype: result dtype; default the base weight's.
        """
        delta = self.scale * (self.lora_shared_B.double() @ self.lora_shared_A.double())
        return delta.to(dtype or self.base_layer.weight.dtype)

    @torch.no_grad()
    def merged_weight(self, layer: str = "adapter") -> torch.Tensor:
        """``W + s B_sh A_sh`` summed in float64 and cast to W's dtype; NaN/inf is refused naming the tensor."""
        weight = self.base_layer.weight.detach()
        merged = (weight.double() + self.get_delta_weight(torch.float64)).to(weight.dtype)
        named = {"base_layer.weight": weight, "lora_shared_A": self.lora_shared_A, "lora_shared_B": self.lora_shared_B}
        return check_merged(merged, named, layer, "merged weight")


class MTLoRALinear(SharedTaskStreams, nn.Module):
    """Frozen linear + shared low-rank update + optional per-task low-rank updates.

    Shared output: ``y = W x + b + s * B_sh A_sh dropout(x)``.
    Task output:   ``y_t = W x + b + s_t * B_t A_t x_t`` (no shared term; W sees the shared x). In ``attn.proj``
    ``x_t = dropout(x)`` with the shared term's mask; in fc1/fc2 the task stream itself (the reference code).
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

    def task_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every task's pair stacked: A (T, r_t, in) and ``s_t B_t`` (T, out, r_t)."""
        down = torch.stack([self.lora_tasks_A[t] for t in self.tasks])
        return down, self.task_scale * torch.stack([self.lora_tasks_B[t] for t in self.tasks])

    def forward_streams(
        self, x: torch.Tensor, x_tasks: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See ``SharedTaskStreams.forward_streams``; only stage-final adapters (``tasks`` set) have streams."""
        if not self.tasks:
            raise ConfigError(f"{type(self).__name__}: forward_streams needs task branches, this layer has none")
        return super().forward_streams(x, x_tasks)

    @torch.no_grad()
    def to_deployed(self, layer: str = "adapter") -> nn.Module:
        """The merged layer: a plain ``nn.Linear`` holding ``W + s B_sh A_sh``, or with task branches a
        ``TaskBranchLinear`` (W' folded; ``-s B_sh`` to take the shared term out of the task outputs; task pairs
        low-rank, pre-scaled). Equal to this adapter in eval mode; this adapter is left untouched.

        Args:
            layer: the module's dotted name, for error messages.
        """
        merged = self.merged_weight(layer)
        if not self.tasks:
            return linear_with_weight(self.base_layer, merged)
        for task in self.tasks:
            check_finite(self.lora_tasks_A[task], layer, f"lora_tasks_A.{task}")
            check_finite(self.lora_tasks_B[task], layer, f"lora_tasks_B.{task}")
        down, up = self.task_pairs()
        lora_a = torch.cat([self.lora_shared_A, down.flatten(0, 1)])
        bias = self.base_layer.bias
        return TaskBranchLinear.from_tensors(merged, bias, lora_a, -self.scale * self.lora_shared_B, up, self.tasks)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scale={self.scale}, tasks={list(self.tasks)}, task_rank={self.task_rank}"
