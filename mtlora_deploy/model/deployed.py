"""The layers a merged (deployed) model is made of; each adapter's ``to_deployed`` builds its own.

- A folded linear is a plain ``nn.Linear`` holding ``W + s B_sh A_sh`` (``linear_with_weight``).
- ``TaskBranchLinear`` replaces a stage-final adapter. The task streams need the UN-adapted ``W x`` (docs/model.md,
  "Task-specific LoRA"), so it keeps the shared pair to take it back out:
  ``y_t = y - s B_sh A_sh x_sh + s_t B_t A_t x_t`` with ``y = W' x_sh + b`` (docs/deploy.md, "Merge"). Task pairs stay
  low-rank and run task-batched: one (T, M, r) x (T, r, out) product for all T tasks.

The float64 merge math lives with the adapters (``adapters.py``, ``mtl_lora.py``); this file only holds tensors.
"""

from __future__ import annotations

import torch
from torch import nn

from mtlora_deploy.errors import WeightsError


def replace_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted path ``name`` inside ``root``."""
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def is_finite(tensor: torch.Tensor) -> bool:
    """One float64 reduction: NaN/inf propagate into the sum, and finite float32 values cannot overflow it."""
    return bool(torch.isfinite(tensor.detach().sum(dtype=torch.float64)))


def check_finite(tensor: torch.Tensor, layer: str, name: str) -> None:
    """Refuse to merge a tensor with NaN/inf: it would silently poison every output of the merged model."""
    if not is_finite(tensor):
        bad = int((~torch.isfinite(tensor.detach())).sum())
        raise WeightsError(f"{layer}.{name}: {bad} non-finite value(s) (NaN/inf); cannot merge this checkpoint")


def check_merged(merged: torch.Tensor, named: dict[str, torch.Tensor], layer: str, what: str) -> torch.Tensor:
    """Return ``merged`` when finite; otherwise name the first non-finite input, else report a float overflow.

    Only the result is scanned on the good path (NaN/inf propagate into it); the inputs only to name the culprit.
    """
    if not is_finite(merged):
        for name, tensor in named.items():
            check_finite(tensor, layer, name)
        check_finite(merged, layer, f"{what} (float overflow)")
    return merged


def linear_with_weight(base: nn.Linear, weight: torch.Tensor) -> nn.Linear:
    """A plain ``nn.Linear`` shaped like ``base`` holding ``weight`` and ``base``'s bias (no LoRA code left)."""
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
    return linear.requires_grad_(False)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(..., C) -> (M, C), M the product of the leading dims."""
    return x.reshape(-1, x.shape[-1])


def capturing_graph() -> bool:
    """True while torch.compile, torch.export, TorchScript tracing or an ONNX export records the forward: the
    deployed layers then take their one-piece ops (no Python loop over a symbolic size, no custom autograd)."""
    compiling = torch.compiler.is_compiling() or torch.compiler.is_exporting()
    return compiling or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def task_batched_down(x_tasks: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """Per-task down-projections of per-task inputs: (T, ..., in) x (T, r, in) -> (T, M, r)."""
    return torch.matmul(x_tasks.reshape(x_tasks.shape[0], -1, x_tasks.shape[-1]), down.transpose(1, 2))


class TaskBranchLinear(nn.Module):
    """Folded linear plus low-rank task branches, with the adapters' ``forward_streams`` interface.

    Parameters (the same count as the adapter it replaces, so the merged count is the deployed one):
    ``weight`` = W' (out x in), ``bias``, ``lora_A`` = [A_sh; A_t1; ...; A_tT] row-stacked ((r + T r_t) x in),
    ``lora_shared_B`` = -s B_sh (out x r) and ``lora_tasks_B`` = [s_t B_t] stacked (T, out, r_t); scales are
    pre-applied. With ``shared_task_down`` (the ``mtlora-mtl`` hybrid) every task uses the same r_t rows,
    ``lora_A`` = [A_sh; A] ((r + r_t) x in), and ``lora_tasks_B[t]`` = (alpha / r_t) B_t Lambda_t.
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
        self.lora_tasks_B = nn.Parameter(torch.zeros(len(self.tasks), out_features, task_rank))

    @classmethod
    @torch.no_grad()
    def from_tensors(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        lora_a: torch.Tensor,
        shared_up: torch.Tensor,
        task_up: torch.Tensor,
        tasks: tuple[str, ...],
        shared_task_down: bool = False,
    ) -> TaskBranchLinear:
        """The layer holding the given (already merged and scaled) tensors; see the class docstring for shapes."""
        rank, task_rank = shared_up.shape[1], task_up.shape[2]
        module = cls(weight.shape[1], weight.shape[0], rank, tasks, task_rank, bias is not None, shared_task_down)
        module = module.to(device=weight.device, dtype=weight.dtype)
        for name, value in (("weight", weight), ("lora_A", lora_a), ("lora_shared_B", shared_up)):
            getattr(module, name).copy_(value)
        module.lora_tasks_B.copy_(task_up)
        if bias is not None:
            module.bias.copy_(bias)
        return module.requires_grad_(False)

    def task_down(self) -> torch.Tensor:
        """The task rows of ``lora_A`` as (T, r_t, in) (one shared (1, r_t, in) with ``shared_task_down``)."""
        rows = self.lora_A[self.rank :]
        return rows.view(1 if self.shared_task_down else len(self.tasks), self.task_rank, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shared stream: ``W' x + b`` (..., in) -> (..., out)."""
        return nn.functional.linear(x, self.weight, self.bias)

    def task_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The adapters' ``task_pairs``: down (T or 1, r_t, in) and the pre-scaled up (T, out, r_t)."""
        return self.task_down(), self.lora_tasks_B

    def shared_and_base(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W' x + b, W x + b)`` for rows (M, in): the shared output and, with the shared pair taken back out,
        the un-adapted product that every task stream adds its own low-rank term to."""
        y = self.forward(rows)
        down_shared = nn.functional.linear(rows, self.lora_A[: self.rank])
        return y, torch.addmm(y, down_shared, self.lora_shared_B.t())

    def forward_streams(
        self, x: torch.Tensor, x_tasks: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Shared output (..., out) and the task outputs stacked (T, ..., out), as the adapters' (eval mode).

        ``y - s B_sh A_sh x_sh`` (= the un-adapted ``W x + b``) is formed once and shared by every task; the task
        branches are two batched products for all T tasks. With ``x_tasks`` None (``attn.proj``) every task sees
        ``x`` and all down-projections are one product with the row-stacked A.

        Args:
            x: shared stream, (..., in).
            x_tasks: per-task streams stacked (T, ..., in) for the task branches (fc1/fc2), or None.
        """
        lead, tasks = x.shape[:-1], len(self.tasks)
        rows = _rows(x)
        if x_tasks is None:
            y = self.forward(rows)
            down = nn.functional.linear(rows, self.lora_A)
            down_shared, down_tasks = down[:, : self.rank], down[:, self.rank :]
            if self.shared_task_down:
                down_tasks = down_tasks.unsqueeze(0).expand(tasks, -1, -1)
            else:
                down_tasks = down_tasks.reshape(-1, tasks, self.task_rank).transpose(0, 1)
            unadapted = torch.addmm(y, down_shared, self.lora_shared_B.t())
        else:
            y, unadapted = self.shared_and_base(rows)
            down_tasks = task_batched_down(x_tasks, self.task_down().expand(tasks, -1, -1))
        outs = torch.baddbmm(unadapted.unsqueeze(0), down_tasks, self.lora_tasks_B.transpose(1, 2))
        # -1: traced graphs keep the batch dynamic
        return y.view(-1, *lead[1:], self.out_features), outs.view(tasks, -1, *lead[1:], self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
            f"tasks={list(self.tasks)}, task_rank={self.task_rank}, shared_task_down={self.shared_task_down}"
        )
