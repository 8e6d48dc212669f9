"""Layers of a merged model: the folded linear and the stage-final linear with low-rank task branches.

Folding ``W' = W + s B_sh A_sh`` is exact up to float rounding. In a stage-final block the task streams need the
UN-adapted ``W x`` (model.md, TS-LoRA), so ``TaskBranchLinear`` keeps the shared pair to take it back out:
``y_t = y - s B_sh A_sh x_sh + s_t B_t A_t x_t`` with ``y = W' x_sh + b`` (deploy.md 1). Task pairs stay low-rank.
The ``mtlora-mtl`` hybrid's MTL-LoRA branches fold into the same layer in their compact exact form: one shared
down-projection A and one ``(alpha / r) B_t Lambda_t`` per task (mtl_lora.md).
"""

from __future__ import annotations

import torch
from torch import nn

from mtlora_deploy.errors import WeightsError
from mtlora_deploy.model.adapters import MTLoRALinear
from mtlora_deploy.model.mtl_lora import MTLoRAMTLLinear

SharedPairAdapter = MTLoRALinear | MTLoRAMTLLinear  # both carry base_layer, lora_shared_A/B and scale


def replace_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted path ``name`` inside ``root``."""
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def _is_finite(tensor: torch.Tensor) -> bool:
    """One float64 reduction: NaN/inf propagate into the sum, and finite float32 values cannot overflow it."""
    return bool(torch.isfinite(tensor.detach().sum(dtype=torch.float64)))


def _check_finite(tensor: torch.Tensor, layer: str, name: str) -> None:
    """Refuse to fold a tensor with NaN/inf: it would silently poison every output of the merged model."""
    if not _is_finite(tensor):
        bad = int((~torch.isfinite(tensor.detach())).sum())
        raise WeightsError(f"{layer}.{name}: {bad} non-finite value(s) (NaN/inf); cannot merge this checkpoint")


def folded_weight(adapter: SharedPairAdapter, layer: str = "adapter") -> torch.Tensor:
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


def fold_linear(adapter: SharedPairAdapter, layer: str = "adapter") -> nn.Linear:
    """A plain ``nn.Linear`` with the shared LoRA folded into its weight (no LoRA code left)."""
    return linear_with_weight(adapter.base_layer, folded_weight(adapter, layer))


def linear_with_weight(base: nn.Linear, weight: torch.Tensor) -> nn.Linear:
    """A plain ``nn.Linear`` shaped like ``base`` holding ``weight`` and ``base``'s bias."""
    linear = nn.Linear(
        base.in_features,
        base.out_features,
        bias=base.bias is not None,
        device=base.weight.device,
        dtype=base.weight.dtype,
    )
    with torch.no_grad():
        linear.weight.copy_(weight)
        if base.bias is not None:
            linear.bias.copy_(base.bias)
    return linear


class TaskBranchLinear(nn.Module):
    """Folded linear plus low-rank task branches, with ``MTLoRALinear``'s stream interface.

    Parameters (the same count as the adapter it replaces, so the merged count is the deployed one):
    ``weight`` = W' (out x in), ``bias``, ``lora_A`` = [A_sh; A_t1; ...; A_tT] row-stacked ((r + T r_t) x in),
    ``lora_shared_B`` = -s B_sh (out x r) and ``lora_tasks_B[t]`` = s_t B_t (out x r_t); scales are pre-applied.
    With ``shared_task_down`` (the ``mtlora-mtl`` hybrid) every task uses the same r_t rows, ``lora_A`` = [A_sh; A]
    ((r + r_t) x in), and ``lora_tasks_B[t]`` = (alpha / r_t) B_t Lambda_t.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        tasks: tuple[str, ...],
        task_rank: int,
        bias: bool = True,
        shared_task_down: bool = False,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.rank, self.task_rank, self.tasks = rank, task_rank, tuple(tasks)
        self.shared_task_down = bool(shared_task_down)
        task_rows = task_rank if self.shared_task_down else len(self.tasks) * task_rank
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.lora_A = nn.Parameter(torch.zeros(rank + task_rows, in_features))
        self.lora_shared_B = nn.Parameter(torch.zeros(out_features, rank))
        self.lora_tasks_B = nn.ParameterDict(
            {t: nn.Parameter(torch.zeros(out_features, task_rank)) for t in self.tasks}
        )

    @classmethod
    def _shaped_like(cls, adapter: SharedPairAdapter, shared_rank: int, task_rank: int, shared_down: bool):
        base = adapter.base_layer
        module = cls(adapter.in_features, adapter.out_features, shared_rank, adapter.tasks, task_rank,
                     bias=base.bias is not None, shared_task_down=shared_down)
        return module.to(device=base.weight.device, dtype=base.weight.dtype)

    def _copy_shared(self, adapter: SharedPairAdapter, layer: str) -> None:
        """W' and the bias; ``-s B_sh`` to take the shared term back out of the task outputs."""
        self.weight.copy_(folded_weight(adapter, layer))
        if adapter.base_layer.bias is not None:
            self.bias.copy_(adapter.base_layer.bias)
        self.lora_shared_B.copy_(-adapter.scale * adapter.lora_shared_B)

    @classmethod
    def from_adapter(cls, adapter: MTLoRALinear, layer: str = "adapter") -> TaskBranchLinear:
        """Fold ``adapter``'s shared pair into W and keep its task pairs as pre-scaled low-rank branches."""
        module = cls._shaped_like(adapter, adapter.rank, adapter.task_rank, shared_down=False)
        for task in adapter.tasks:
            _check_finite(adapter.lora_tasks_A[task].detach(), layer, f"lora_tasks_A.{task}")
            _check_finite(adapter.lora_tasks_B[task].detach(), layer, f"lora_tasks_B.{task}")
        with torch.no_grad():
            module._copy_shared(adapter, layer)
            module.lora_A.copy_(torch.cat([adapter.lora_shared_A] + [adapter.lora_tasks_A[t] for t in adapter.tasks]))
            for task in adapter.tasks:
                module.lora_tasks_B[task].copy_(adapter.task_scale * adapter.lora_tasks_B[task])
        return module

    @classmethod
    def from_mtl_adapter(cls, adapter: MTLoRAMTLLinear, layer: str = "adapter") -> TaskBranchLinear:
        """The hybrid's layer: shared pair folded, MTL-LoRA branches as one shared A and per-task up-projections.

        ``(alpha / r) B_t Lambda_t A x`` = ``lora_tasks_B[t] (A x)``: the up-projection is formed in float64.
        """
        module = cls._shaped_like(adapter, adapter.shared_rank, adapter.rank, shared_down=True)
        for name in ("lora_A", "lora_lambdas", "lora_B", "lora_mix_logits"):
            _check_finite(getattr(adapter, name).detach(), layer, name)
        with torch.no_grad():
            module._copy_shared(adapter, layer)
            module.lora_A.copy_(torch.cat([adapter.lora_shared_A, adapter.lora_A]))
            for task in adapter.tasks:
                module.lora_tasks_B[task].copy_(compact_task_up(adapter, task))
        return module

    def _task_rows(self, index: int) -> slice:
        start = self.rank + (0 if self.shared_task_down else index * self.task_rank)
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
            f"tasks={list(self.tasks)}, task_rank={self.task_rank}, shared_task_down={self.shared_task_down}"
        )


@torch.no_grad()
def compact_task_up(adapter: MTLoRAMTLLinear, task: str) -> torch.Tensor:
    """``(alpha / r) B_t Lambda_t`` (out x r) in float64, cast to the adapter's dtype; ``B_t`` is the task mixture."""
    index = adapter.task_index(task)
    weights = adapter.mixture_weights()[index].double()
    mixed = torch.einsum("n,nor->or", weights, adapter.lora_B.double())
    lam = adapter.lambda_matrices()[index].double()
    return (adapter.scaling * mixed @ lam).to(adapter.lora_B.dtype)
