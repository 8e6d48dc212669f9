"""MTL-LoRA adapters (Yang et al., arXiv 2410.09437): shared A, per-task Lambda_t, per-task mixture of n shared B's.

For a frozen ``nn.Linear`` (W, b) and a sample of task t the MTL-LoRA branch adds
``(alpha / r) * B_t Lambda_t A dropout(x)`` with ``B_t = sum_i softmax(w_t / tau)_i B_i``. Two adapters use it:

- ``MTLLoRALinear`` (preset ``mtl-lora``, as the paper): task-conditioned. Every sample names its task, either
  explicitly (``forward(x, task_ids)``) or for a whole encoder pass through ``task_routing``.
- ``MTLoRAMTLLinear`` (preset ``mtlora-mtl``): MTLoRA's stage-final adapter whose task-specific pairs are
  replaced by the MTL-LoRA branch; it keeps ``MTLoRALinear``'s ``forward_streams`` contract and shared pair.

Tensors follow the reference layout: ``lora_A`` (r, in), ``lora_lambdas`` (T, r, r) or (T, r) when diagonal,
``lora_B`` (n, out, r) and the mixture logits ``lora_mix_logits`` (T, n). Task index i means ``tasks[i]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.model.adapters import SharedTaskStreams, _kaiming_a
from mtlora_deploy.model.deployed import TaskBranchLinear, check_merged, linear_with_weight


class MTLLoRABranch(nn.Module):
    """The frozen linear plus the MTL-LoRA task branch; the two adapters below add how tasks are selected.

    Init (reference code): A ~ kaiming-uniform(a=sqrt 5) = U(-1/sqrt(in), 1/sqrt(in)); Lambda_t = identity (ones
    when diagonal); B_i = 0, so the adapter starts as the frozen layer. The mixture logits are the (T, n) matrix
    initialised by kaiming-uniform(a=sqrt 5) as one tensor, whose fan-in is n: every w_t,i ~ U(-1/sqrt(n),
    1/sqrt(n)) independently, so tasks start with different, mildly non-uniform mixtures.

    Args:
        base_layer: the frozen linear (W out x in, optional bias b).
        tasks: task names; per-sample task ids index this tuple.
        rank: r, the rank of A, Lambda_t and every B_i.
        num_b: n, the number of shared up-projections B_i.
        temperature: tau > 0 of ``softmax(w_t / tau)``; lower is sharper.
        alpha: the branch is scaled by ``alpha / r`` (not MTLoRA's constant multiplier).
        diagonal_lambda: Lambda_t as r values per task (init ones) instead of an r x r matrix (init identity).
        dropout: dropout probability on the branch input only.
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        tasks: tuple[str, ...],
        rank: int,
        num_b: int = 3,
        temperature: float = 0.1,
        alpha: float = 128.0,
        diagonal_lambda: bool = False,
        dropout: float = 0.05,
    ) -> None:
        super().__init__()
        _check_branch_args(tasks, rank, num_b, temperature)
        self.base_layer = base_layer
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.tasks, self.rank, self.num_b = tuple(tasks), int(rank), int(num_b)
        self.temperature, self.alpha, self.diagonal_lambda = float(temperature), float(alpha), bool(diagonal_lambda)
        self.scaling = self.alpha / self.rank
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = _kaiming_a(self.rank, self.in_features)
        count = len(self.tasks)
        lambdas = torch.ones(count, self.rank) if self.diagonal_lambda else torch.eye(self.rank).repeat(count, 1, 1)
        self.lora_lambdas = nn.Parameter(lambdas)
        self.lora_B = nn.Parameter(torch.zeros(self.num_b, self.out_features, self.rank))
        self.lora_mix_logits = _kaiming_a(count, self.num_b)

    def task_index(self, task: str) -> int:
        """Position of ``task`` in ``tasks`` (the id a sample of that task carries)."""
        if task not in self.tasks:
            raise ConfigError(f"task: got {task!r}, expected one of {', '.join(self.tasks)}")
        return self.tasks.index(task)

    def mixture_weights(self) -> torch.Tensor:
        """``softmax(w_t / tau)`` for every task, (T, n); each row sums to 1 (at least float32, as the reference)."""
        logits = self.lora_mix_logits
        weights = F.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) / self.temperature, dim=-1)
        return weights.to(self.lora_B.dtype)

    def lambda_matrices(self) -> torch.Tensor:
        """Every Lambda_t as an r x r matrix, (T, r, r)."""
        return torch.diag_embed(self.lora_lambdas) if self.diagonal_lambda else self.lora_lambdas

    def task_low_rank_pair(self, task: str) -> tuple[torch.Tensor, torch.Tensor, float]:
        """An equivalent rank-r pair ``(A_t, B_t, scale)``: ``A_t = Lambda_t A`` (r x in), mixture ``B_t`` (out x r).

        ``scale * B_t A_t`` is the task's delta weight, so merge/export code can treat it like an MTLoRA pair.
        (The compact exact form shares A over tasks instead: ``scale * (B_t Lambda_t) A``.)
        """
        index = self.task_index(task)
        task_b = torch.einsum("n,nor->or", self.mixture_weights()[index], self.lora_B)
        return self.lambda_matrices()[index] @ self.lora_A, task_b, self.scaling

    @torch.no_grad()
    def get_task_delta_weight(self, task: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``(alpha / r) B_t Lambda_t A`` (out x in), merged per task (``W_t = W + delta``): float64 math.

        Args:
            task: one of ``tasks``.
            dtype: result dtype; default the base weight's.
        """
        index = self.task_index(task)
        return (self.compact_task_up(torch.float64)[index] @ self.lora_A.double()).to(
            dtype or self.base_layer.weight.dtype
        )

    def compact_task_up(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``(alpha / r) B_t Lambda_t`` for every task, (T, out, r): the branch is ``up_t (A x)`` with A shared.

        Args:
            dtype: compute dtype (float64 when merging); default the parameters' own.
        """
        dtype = dtype or self.lora_B.dtype
        mixed = torch.einsum("tn,nor->tor", self.mixture_weights().to(dtype), self.lora_B.to(dtype))
        return self.scaling * mixed @ self.lambda_matrices().to(dtype)

    def routed_delta(self, x_dropped: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """The branch with one task per sample, (..., out).

        Args:
            x_dropped: (R, ..., in), already dropped out; its rows are sample-major: ``R = k * S`` and row j
                belongs to sample ``j // k`` (true for tokens, k = 1, and for Swin windows, k = windows/image).
            task_ids: (S,) int64 task indices into ``tasks``.

        The mixture is folded into the rank space: ``B_t v = [B_1 .. B_n] (pi_t kron v)``, one rank-n*r product
        with no per-sample (out x r) matrix gathered.
        """
        samples = task_ids.shape[0]
        if x_dropped.shape[0] % samples:
            raise ConfigError(f"task_ids: got {samples} ids for {x_dropped.shape[0]} rows, expected a divisor")
        down = F.linear(x_dropped, self.lora_A).reshape(samples, -1, self.rank)
        if self.diagonal_lambda:
            mid = down * self.lora_lambdas[task_ids].unsqueeze(1)
        else:
            mid = torch.bmm(down, self.lora_lambdas[task_ids].transpose(1, 2))
        weights = self.mixture_weights()[task_ids]
        mixed = (mid.unsqueeze(2) * weights[:, None, :, None]).flatten(2)
        up = F.linear(mixed, self.lora_B.permute(1, 0, 2).reshape(self.out_features, -1))
        return self.scaling * up.reshape(*x_dropped.shape[:-1], self.out_features)


class MTLLoRALinear(MTLLoRABranch):
    """Task-conditioned MTL-LoRA: ``h = W x + b + (alpha / r) B_t Lambda_t A dropout(x)`` with t chosen per sample.

    The task ids come from ``forward(x, task_ids)`` or, when the layer sits inside a timm block that calls it with
    ``x`` only, from ``task_routing(encoder, task_ids)``, which sets ``routed_task_ids`` for one pass.
    """

    routed_task_ids: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(R, ..., in) -> (R, ..., out); ``task_ids`` (S,) with R a multiple of S (see ``routed_delta``)."""
        ids = task_ids if task_ids is not None else self.routed_task_ids
        if ids is None:
            raise ConfigError("MTLLoRALinear: no task ids; call forward(x, task_ids) or run inside task_routing()")
        return self.base_layer(x) + self.routed_delta(self.lora_dropout(x), ids)

    @torch.no_grad()
    def get_delta_weight(self, task: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``(alpha / r) B_t Lambda_t A`` (out x in) for one task; ``x W_t^T + b`` equals the task's output."""
        return self.get_task_delta_weight(task, dtype)

    @torch.no_grad()
    def merged_weight(self, task: str, layer: str = "adapter") -> torch.Tensor:
        """``W_t = W + (alpha / r) B_t Lambda_t A`` summed in float64, cast to W's dtype; NaN/inf refused by name."""
        weight = self.base_layer.weight.detach()
        merged = (weight.double() + self.get_task_delta_weight(task, torch.float64)).to(weight.dtype)
        names = ("lora_A", "lora_lambdas", "lora_B", "lora_mix_logits")
        named = {"base_layer.weight": weight, **{n: getattr(self, n) for n in names}}
        return check_merged(merged, named, layer, f"merged weight of {task}")

    @torch.no_grad()
    def to_deployed(self, task: str, layer: str = "adapter") -> nn.Linear:
        """The per-task merged layer: a plain ``nn.Linear`` holding ``W_t`` and the bias."""
        return linear_with_weight(self.base_layer, self.merged_weight(task, layer))

    def extra_repr(self) -> str:
        branch = f"rank={self.rank}, num_b={self.num_b}, temperature={self.temperature}, alpha={self.alpha}"
        return f"{branch}, diagonal_lambda={self.diagonal_lambda}, tasks={list(self.tasks)}"


class MTLoRAMTLLinear(SharedTaskStreams, MTLLoRABranch):
    """MTLoRA stage-final adapter with MTL-LoRA task branches (the ``mtlora-mtl`` hybrid).

    Shared output: ``y = W x + b + s * B_sh A_sh dropout(x)`` (MTLoRA's task-agnostic pair; folds exactly).
    Task output:   ``y_t = W x + b + (alpha / r) B_t Lambda_t A dropout(x_t)`` (no shared term; W sees shared x).
    """

    def __init__(
        self, base_layer: nn.Linear, tasks: tuple[str, ...], shared_rank: int, shared_scale: float = 4.0, **branch: Any
    ) -> None:
        super().__init__(base_layer, tasks, **branch)
        self.shared_rank, self.scale = int(shared_rank), float(shared_scale)
        self.lora_shared_A = _kaiming_a(self.shared_rank, self.in_features)
        self.lora_shared_B = nn.Parameter(torch.zeros(self.out_features, self.shared_rank))

    def task_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The compact exact form: the one shared A (1, r, in) and ``(alpha / r) B_t Lambda_t`` (T, out, r)."""
        return self.lora_A.unsqueeze(0), self.compact_task_up()

    @torch.no_grad()
    def to_deployed(self, layer: str = "adapter") -> TaskBranchLinear:
        """The merged layer: shared pair folded into W, MTL-LoRA branches as one shared A and per-task
        up-projections ``(alpha / r) B_t Lambda_t`` formed in float64 (``TaskBranchLinear`` with shared down)."""
        merged = self.merged_weight(layer)
        named = {n: getattr(self, n) for n in ("lora_A", "lora_lambdas", "lora_B", "lora_mix_logits")}
        up = check_merged(self.compact_task_up(torch.float64), named, layer, "task up-projection")
        lora_a = torch.cat([self.lora_shared_A, self.lora_A])
        shared_up = -self.scale * self.lora_shared_B
        return TaskBranchLinear.from_tensors(
            merged, self.base_layer.bias, lora_a, shared_up, up.to(merged.dtype), self.tasks, shared_task_down=True
        )

    def extra_repr(self) -> str:
        shared = f"shared_rank={self.shared_rank}, scale={self.scale}"
        return f"{shared}, rank={self.rank}, num_b={self.num_b}, alpha={self.alpha}, tasks={list(self.tasks)}"


@contextmanager
def task_routing(module: nn.Module, task_ids: torch.Tensor) -> Iterator[None]:
    """Give every ``MTLLoRALinear`` inside ``module`` the per-sample ``task_ids`` for one forward pass.

    timm blocks call their linears with ``x`` only; the ids are cleared on exit so no pass sees stale ids.
    """
    adapters = [m for m in module.modules() if isinstance(m, MTLLoRALinear)]
    for adapter in adapters:
        adapter.routed_task_ids = task_ids
    try:
        yield
    finally:
        for adapter in adapters:
            adapter.routed_task_ids = None


def _check_branch_args(tasks: tuple[str, ...], rank: int, num_b: int, temperature: float) -> None:
    if not tasks:
        raise ConfigError("MTL-LoRA: tasks is empty, expected at least one task")
    if rank < 1 or num_b < 1:
        raise ConfigError(f"MTL-LoRA: got rank={rank}, num_b={num_b}, expected both >= 1")
    if temperature <= 0:
        raise ConfigError(f"MTL-LoRA: got temperature={temperature}, expected > 0")
