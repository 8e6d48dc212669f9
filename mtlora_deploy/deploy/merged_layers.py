"""Layers of a merged model: the folded linear and the stage-final linear with low-rank task branches.

Folding ``W' = W + s B_sh A_sh`` is exact up to float rounding. In a stage-final block the task streams need the
UN-adapted ``W x`` (model.md, TS-LoRA), so ``TaskBranchLinear`` keeps the shared pair to take it back out:
``y_t = y - s B_sh A_sh x_sh + s_t B_t A_t x_t`` with ``y = W' x_sh + b`` (deploy.md 1). Task pairs stay low-rank.
"""

from __future__ import annotations

import torch
from torch import nn

from mtlora_deploy.errors import WeightsError
from mtlora_deploy.model.adapters import MTLoRALinear


def _is_finite(tensor: torch.Tensor) -> bool:
    """One float64 reduction: NaN/inf propagate into the sum, and finite float32 values cannot overflow it."""
    return bool(torch.isfinite(tensor.detach().sum(dtype=torch.float64)))


def _check_finite(tensor: torch.Tensor, layer: str, name: str) -> None:
    """Refuse to fold a tensor with NaN/inf: it would silently poison every output of the merged model."""
    if not _is_finite(tensor):
        bad = int((~torch.isfinite(tensor.detach())).sum())
        raise WeightsError(f"{layer}.{name}: {bad} non-finite value(s) (NaN/inf); cannot merge this checkpoint")


def folded_weight(adapter: MTLoRALinear, layer: str = "adapter") -> torch.Tensor:
    """``W + s B_sh A_sh`` computed in float64 and cast back to W's dtype (out x in).

    Only the result is scanned for NaN/inf (they propagate); the inputs are scanned to name the culprit.

    Args:
        adapter: the LoRA layer to fold.
        layer: its module name, for error messages.
    """
    weight, lora_a, lora_b = (
        t.detach() for t in (adapter.base_layer.weight, adapter.lora_shared_A, adapter.lora_shared_B)
    )
    delta = adapter.scale * (lora_b.double() @ lora_a.double())
    merged = (weight.double() + delta).to(weight.dtype)
    if not _is_finite(merged):
        for name, tensor in (("base_layer.weight", weight), ("lora_shared_A", lora_a), ("lora_shared_B", lora_b)):
            _check_finite(tensor, layer, name)
        _check_finite(merged, layer, "merged weight (float overflow)")
    return merged


def fold_linear(adapter: MTLoRALinear, layer: str = "adapter") -> nn.Linear:
    """A plain ``nn.Linear`` with the shared LoRA folded into its weight (no LoRA code left)."""
    base = adapter.base_layer
    linear = nn.Linear(
        base.in_features,
        base.out_features,
        bias=base.bias is not None,
        device=base.weight.device,
        dtype=base.weight.dtype,
    )
    with torch.no_grad():
        linear.weight.copy_(folded_weight(adapter, layer))
        if base.bias is not None:
            linear.bias.copy_(base.bias)
    return linear


class TaskBranchLinear(nn.Module):
    """Folded linear plus low-rank task branches, with ``MTLoRALinear``'s stream interface.

    Parameters (the same count as the adapter it replaces, so the merged count is the deployed one):
    ``weight`` = W' (out x in), ``bias``, ``lora_A`` = [A_sh; A_t1; ...; A_tT] row-stacked ((r + T r_t) x in),
    ``lora_shared_B`` = -s B_sh (out x r) and ``lora_tasks_B[t]`` = s_t B_t (out x r_t); scales are pre-applied.
    """

    def __init__(
        self, in_features: int, out_features: int, rank: int, tasks: tuple[str, ...], task_rank: int, bias: bool = True
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.rank, self.task_rank, self.tasks = rank, task_rank, tuple(tasks)
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.lora_A = nn.Parameter(torch.zeros(rank + len(self.tasks) * task_rank, in_features))
        self.lora_shared_B = nn.Parameter(torch.zeros(out_features, rank))
        self.lora_tasks_B = nn.ParameterDict(
            {t: nn.Parameter(torch.zeros(out_features, task_rank)) for t in self.tasks}
        )

    @classmethod
    def from_adapter(cls, adapter: MTLoRALinear, layer: str = "adapter") -> TaskBranchLinear:
        """Fold ``adapter``'s shared pair into W and keep its task pairs as pre-scaled low-rank branches."""
        base = adapter.base_layer
        module = cls(
            adapter.in_features,
            adapter.out_features,
            adapter.rank,
            adapter.tasks,
            adapter.task_rank,
            bias=base.bias is not None,
        ).to(device=base.weight.device, dtype=base.weight.dtype)
        for task in adapter.tasks:
            _check_finite(adapter.lora_tasks_A[task].detach(), layer, f"lora_tasks_A.{task}")
            _check_finite(adapter.lora_tasks_B[task].detach(), layer, f"lora_tasks_B.{task}")
        with torch.no_grad():
            module.weight.copy_(folded_weight(adapter, layer))
            if base.bias is not None:
                module.bias.copy_(base.bias)
            module.lora_A.copy_(torch.cat([adapter.lora_shared_A] + [adapter.lora_tasks_A[t] for t in adapter.tasks]))
            module.lora_shared_B.copy_(-adapter.scale * adapter.lora_shared_B)
            for task in adapter.tasks:
                module.lora_tasks_B[task].copy_(adapter.task_scale * adapter.lora_tasks_B[task])
        return module

    def _task_rows(self, index: int) -> slice:
        start = self.rank + index * self.task_rank
        return slice(start, start + self.task_rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shared stream: ``W' x + b`` (..., in) -> (..., out)."""
        return nn.functional.linear(x, self.weight, self.bias)

    def forward_streams(
        self, x: torch.Tensor, x_tasks: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Shared output and one output per task, as ``MTLoRALinear.forward_streams`` (eval mode).

        ``y - s B_sh A_sh x_sh`` (= the un-adapted ``W x + b``) is formed once and shared by every task, so a
        task costs one rank-r_t product. With ``x_tasks`` None (``attn.proj``) every task sees ``x`` and all
        down-projections are one product with the row-stacked A.

        Args:
            x: shared stream, (..., in).
            x_tasks: per-task streams for the task branches (fc1/fc2), or None.
        """
        y = self.forward(x)
        if x_tasks is None:
            down = nn.functional.linear(x, self.lora_A)
            down_shared = down[..., : self.rank]
            down_tasks = {t: down[..., self._task_rows(i)] for i, t in enumerate(self.tasks)}
        else:
            down_shared = nn.functional.linear(x, self.lora_A[: self.rank])
            down_tasks = {
                t: nn.functional.linear(x_tasks[t], self.lora_A[self._task_rows(i)]) for i, t in enumerate(self.tasks)
            }
        unadapted = y + nn.functional.linear(down_shared, self.lora_shared_B)
        return y, {t: unadapted + nn.functional.linear(down_tasks[t], self.lora_tasks_B[t]) for t in self.tasks}

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
            f"tasks={list(self.tasks)}, task_rank={self.task_rank}"
        )
