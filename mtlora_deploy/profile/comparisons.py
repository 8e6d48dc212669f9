"""The built-in comparisons: which candidates a torch model brings, and the ratios computed from one run.

Every ratio is between measurements taken in the same process, on the same device, with the same settings:
(1) shared-encoder single pass vs one single-task model per task, (2) merged vs unmerged, (3) precisions,
(4) batch sweep, (5) per-task head cost, and the single pass against the bare backbone (target <= 1.25x merged).
A task-conditioned ``mtl-lora`` model's merged variant is its T per-task merged encoders run one after another, and
it is also put beside a merged MTLoRA single pass of the same backbone, tasks and heads (``mtl_lora_vs_mtlora``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import torch

from mtlora_deploy.profile.runs import PRECISION_DTYPES, Candidate, Measurement, SequentialPredictors
from mtlora_deploy.profile.variants import (
    bare_backbone,
    merged_model,
    mtlora_reference,
    per_task_merged,
    sub_model,
)

COMPARISONS = ("per_task", "merged", "bare_backbone", "head_cost")
TORCH_BACKENDS = ("torch", "torch-compiled")
BARE_TARGET = 1.25
MTL_LORA_VS_MTLORA = "mtl-lora T task passes (per-task merged encoders run one after another) vs MTLoRA single pass"


def open_torch(
    factory: Callable[[], torch.nn.Module],
    backend: str,
    device: torch.device,
    precision: str,
    compile_options: dict[str, Any],
):
    """Build the model and wrap it in the eager or compiled backend with the precision's autocast dtype."""
    from mtlora_deploy.engines.torch_eager import TorchEagerBackend

    dtype = PRECISION_DTYPES[precision]
    if backend == "torch":
        return TorchEagerBackend(factory(), device=device, dtype=dtype)
    from mtlora_deploy.engines.torch_compiled import TorchCompiledBackend

    return TorchCompiledBackend(factory(), device=device, dtype=dtype, **compile_options)


def _open_per_task(model, backend, device, precision, compile_options) -> SequentialPredictors:
    return SequentialPredictors(
        [open_torch(partial(sub_model, model, (t,)), backend, device, precision, compile_options) for t in model.tasks]
    )


def model_roles(model, comparisons: Sequence[str]) -> list[tuple[str, Callable]]:
    """(role, opener-maker) pairs for one torch model: its single pass and each requested comparison variant."""
    from mtlora_deploy.deploy.merge import is_merged
    from mtlora_deploy.deploy.merge_mtl import needs_per_task_merge

    roles: list[tuple[str, Callable]] = [("single_pass", lambda: model)]
    if "merged" in comparisons and needs_per_task_merge(model):
        roles += [("merged", partial(per_task_merged, model)), ("mtlora_single_pass", partial(mtlora_reference, model))]
    elif "merged" in comparisons and not is_merged(model):
        roles.append(("merged", partial(merged_model, model)))
    if "bare_backbone" in comparisons:
        roles.append(("bare_backbone", partial(bare_backbone, model)))
    if "head_cost" in comparisons and len(model.tasks) > 1:
        roles += [(f"without:{t}", partial(sub_model, model, [u for u in model.tasks if u != t])) for t in model.tasks]
    return roles


def torch_candidates(
    model,
    source: str,
    backends: Sequence[str],
    precisions: Sequence[str],
    device: torch.device,
    comparisons: Sequence[str],
    compile_options: dict[str, Any],
    notes: list[str],
) -> list[Candidate]:
    """Every candidate a torch model brings: backends x precisions x (single pass + comparison variants)."""
    out = []
    for backend in [b for b in backends if b in TORCH_BACKENDS]:
        for precision in precisions:
            if device.type == "cpu" and precision == "fp16":
                notes.append(
                    f"{source}: {backend} fp16 skipped on the CPU (no fast fp16 kernels; not a deployment "
                    "path); use --device cuda"
                )
                continue
            opener = partial(
                open_torch, backend=backend, device=device, precision=precision, compile_options=compile_options
            )
            out += [
                Candidate(source, role, backend, precision, partial(opener, factory), tasks=model.tasks)
                for role, factory in model_roles(model, comparisons)
            ]
            if "per_task" in comparisons and len(model.tasks) > 1:
                out.append(
                    Candidate(
                        source,
                        "per_task",
                        backend,
                        precision,
                        tasks=model.tasks,
                        open=partial(_open_per_task, model, backend, device, precision, compile_options),
                    )
                )
    return out


# -- ratios ------------------------------------------------------------------------------------------------------
def _row(m: Measurement, **extra: Any) -> dict[str, Any]:
    c = m.candidate
    return {"source": c.source, "backend": c.backend, "precision": c.precision, "batch": m.batch, **extra}


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def compute_comparisons(measurements: Iterable[Measurement]) -> dict[str, list[dict[str, Any]]]:
    """All ratios that the measurements allow, keyed by comparison name (empty lists when not measured)."""
    measurements = list(measurements)
    index = {m.key(): m for m in measurements}
    singles = [m for m in measurements if m.candidate.role == "single_pass"]
    return {
        "shared_vs_per_task": list(_shared_vs_per_task(singles, index)),
        "merged_vs_unmerged": list(_merged(singles, index)),
        "vs_bare_backbone": list(_vs_bare(singles, index)),
        "head_cost": list(_head_cost(singles, index)),
        "mtl_lora_vs_mtlora": list(_mtl_lora_vs_mtlora(singles, index)),
        "precision": _precision(measurements),
        "batch_sweep": _batch_sweep(measurements),
    }


def _other(m: Measurement, index: dict, role: str) -> Measurement | None:
    source, backend, precision, batch, _ = m.key()
    return index.get((source, backend, precision, batch, role))


def _shared_vs_per_task(singles, index):
    for m in singles:
        per_task = _other(m, index, "per_task")
        if per_task is not None:
            yield _row(
                m,
                tasks=list(m.candidate.tasks),
                single_pass_ms=m.latency.median,
                per_task_models_ms=per_task.latency.median,
                ratio=_ratio(per_task.latency.median, m.latency.median),
            )


def _merged(singles, index):
    for m in singles:
        merged = _other(m, index, "merged")
        if merged is not None:
            yield _row(
                m,
                unmerged_ms=m.latency.median,
                merged_ms=merged.latency.median,
                speedup=_ratio(m.latency.median, merged.latency.median),
            )


def _vs_bare(singles, index):
    for m in singles:
        bare = _other(m, index, "bare_backbone")
        if bare is None:
            continue
        merged = _other(m, index, "merged")
        deployed = merged or m
        ratio = _ratio(deployed.latency.median, bare.latency.median)
        yield _row(
            m,
            bare_backbone_ms=bare.latency.median,
            single_pass_ms=m.latency.median,
            merged_ms=merged.latency.median if merged else None,
            single_pass_ratio=_ratio(m.latency.median, bare.latency.median),
            compared=deployed.candidate.role,
            ratio=ratio,
            target=BARE_TARGET,
            meets_target=ratio is not None and ratio <= BARE_TARGET,
        )


def _mtl_lora_vs_mtlora(singles, index):
    """``mtl-lora``'s deployed T task passes (and its batched unmerged pass) against MTLoRA's merged single pass."""
    for m in singles:
        reference, passes = _other(m, index, "mtlora_single_pass"), _other(m, index, "merged")
        if reference is None or passes is None:
            continue
        ms = reference.latency.median
        yield _row(
            m,
            comparison=MTL_LORA_VS_MTLORA,
            tasks=list(m.candidate.tasks),
            task_passes_ms=passes.latency.median,
            unmerged_batched_ms=m.latency.median,
            mtlora_single_pass_ms=ms,
            ratio=_ratio(passes.latency.median, ms),
            unmerged_ratio=_ratio(m.latency.median, ms),
        )


def _head_cost(singles, index):
    for m in singles:
        for key, other in index.items():
            role = key[4]
            if key[:4] == m.key()[:4] and role.startswith("without:"):
                cost = m.latency.median - other.latency.median
                yield _row(
                    m,
                    task=role.split(":", 1)[1],
                    full_ms=m.latency.median,
                    without_task_ms=other.latency.median,
                    head_cost_ms=cost,
                    fraction_of_full=_ratio(cost, m.latency.median),
                )


def _precision(measurements: list[Measurement]) -> list[dict[str, Any]]:
    """Per (family, backend, batch, role): each precision's median and its speedup over fp32."""
    groups: dict[tuple, list[Measurement]] = defaultdict(list)
    for m in measurements:
        c = m.candidate
        if c.role in ("single_pass", "merged", "file", "bare_backbone"):
            groups[(c.family, c.backend, m.batch, c.role)].append(m)
    rows = []
    for (family, backend, batch, role), group in groups.items():
        if len({m.candidate.precision for m in group}) < 2:
            continue
        base = next((m for m in group if m.candidate.precision == "fp32"), group[0])
        rows += [
            {
                "family": family,
                "backend": backend,
                "batch": batch,
                "role": role,
                "source": m.candidate.source,
                "precision": m.candidate.precision,
                "median_ms": m.latency.median,
                "baseline_precision": base.candidate.precision,
                "speedup": _ratio(base.latency.median, m.latency.median),
            }
            for m in group
        ]
    return rows


def _batch_sweep(measurements: list[Measurement]) -> list[dict[str, Any]]:
    """Latency and throughput per batch size for every candidate measured at two or more batch sizes."""
    groups: dict[tuple, list[Measurement]] = defaultdict(list)
    for m in measurements:
        groups[(m.candidate.source, m.candidate.backend, m.candidate.precision, m.candidate.role)].append(m)
    rows = []
    for (source, backend, precision, role), group in groups.items():
        if len(group) < 2:
            continue
        group.sort(key=lambda m: m.batch)
        first = group[0]
        rows += [
            {
                "source": source,
                "backend": backend,
                "precision": precision,
                "role": role,
                "batch": m.batch,
                "median_ms": m.latency.median,
                "throughput_images_per_s": m.throughput,
                "throughput_vs_smallest_batch": _ratio(m.throughput, first.throughput),
            }
            for m in group
        ]
    return rows
