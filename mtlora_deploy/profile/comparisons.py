"""The built-in comparisons: which candidates a torch model brings, and the ratios computed from one run.

Every ratio is between measurements taken in the same process, on the same device, with the same settings, in
interleaved rounds: (1) shared-encoder single pass vs one single-task model per task, (2) merged vs unmerged,
(3) precisions, (4) batch sweep, (5) per-task head cost, and the deployed model against the bare backbone (target:
within 1.05x of their FLOP ratio). Each is a median over paired rounds with its 95% interval (``stats``), a verdict
and the FLOP ratio.
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
from mtlora_deploy.profile.stats import (
    ADDS_TIME,
    MET,
    MISSED,
    cost_verdict,
    difference_estimate,
    ratio_estimate,
    speed_verdict,
    target_verdict,
)
from mtlora_deploy.profile.variants import (
    bare_backbone,
    merged_model,
    mtlora_reference,
    per_task_merged,
    sub_model,
)

TORCH_BACKENDS = ("torch", "torch-compiled")
BARE_TARGET = 1.05
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


def _given(module: torch.nn.Module) -> torch.nn.Module:
    return module


def _open_modules(modules, backend, device, precision, compile_options) -> SequentialPredictors:
    return SequentialPredictors(
        [open_torch(partial(_given, m), backend, device, precision, compile_options) for m in modules]
    )


def _materialize_torch(factory, **options) -> Callable:
    """Build the candidate's module now; the opener it returns carries only that module (see Candidate.portable)."""
    return partial(open_torch, partial(_given, factory()), **options)


def _materialize_per_task(model, backend, device, precision, compile_options) -> Callable:
    modules = [sub_model(model, (t,)) for t in model.tasks]
    return partial(_open_modules, modules, backend, device, precision, compile_options)


def model_roles(model, comparisons: Sequence[str]) -> list[tuple[str, Callable]]:
    """(role, module factory) pairs for one torch model: its single pass and each requested comparison variant."""
    from mtlora_deploy.deploy.merge import is_merged
    from mtlora_deploy.deploy.merge_mtl import needs_per_task_merge

    roles: list[tuple[str, Callable]] = [("single_pass", partial(_given, model))]
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
                    "path); profile it on a CUDA device"
                )
                continue
            options = {"backend": backend, "device": device, "precision": precision, "compile_options": compile_options}
            out += [
                Candidate(
                    source,
                    role,
                    backend,
                    precision,
                    partial(open_torch, factory, **options),
                    tasks=model.tasks,
                    materialize=partial(_materialize_torch, factory, **options),
                )
                for role, factory in model_roles(model, comparisons)
            ]
            if "per_task" in comparisons and len(model.tasks) > 1:
                args = (model, backend, device, precision, compile_options)
                out.append(
                    Candidate(
                        source,
                        "per_task",
                        backend,
                        precision,
                        partial(_open_per_task, *args),
                        tasks=model.tasks,
                        materialize=partial(_materialize_per_task, *args),
                    )
                )
    return out


# -- ratios ------------------------------------------------------------------------------------------------------
def _row(m: Measurement, **extra: Any) -> dict[str, Any]:
    c = m.candidate
    return {"source": c.source, "backend": c.backend, "precision": c.precision, "batch": m.batch, **extra}


def _flop_ratio(baseline: Measurement, subject: Measurement) -> float | None:
    a, b = baseline.gmac_per_image, subject.gmac_per_image
    return a / b if a is not None and b else None


def speedup_row(subject: Measurement, baseline: Measurement, scale: float = 1.0, **extra: Any) -> dict[str, Any]:
    """``value`` = baseline time / subject time (x ``scale``; the median over paired rounds of the per-round ratio),
    its 95% interval, the verdict for the subject, and ``flop_ratio`` = baseline GMAC / subject GMAC per image: the
    speedup the FLOPs alone predict."""
    estimate = ratio_estimate(baseline.round_medians, subject.round_medians, scale)
    return _row(
        subject,
        subject=subject.candidate.role,
        baseline=baseline.candidate.role,
        subject_ms=subject.latency.median,
        baseline_ms=baseline.latency.median,
        unit="x",
        **estimate,
        verdict=speed_verdict(estimate),
        flop_ratio=_flop_ratio(baseline, subject),
        **extra,
    )


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
    """Speedup of the single pass over one single-task model per task."""
    for m in singles:
        per_task = _other(m, index, "per_task")
        if per_task is not None:
            yield speedup_row(m, per_task, tasks=list(m.candidate.tasks))


def _merged(singles, index):
    """Speedup of the merged model over the unmerged one."""
    for m in singles:
        merged = _other(m, index, "merged")
        if merged is not None:
            yield speedup_row(merged, m)


def _vs_bare(singles, index):
    """How many times the bare backbone's time the deployed model takes (value = deployed / bare, > 1), against
    the FLOP ratio: within ``BARE_TARGET`` x the FLOP ratio is the target."""
    for m in singles:
        bare = _other(m, index, "bare_backbone")
        if bare is None:
            continue
        deployed = _other(m, index, "merged") or m
        row = speedup_row(bare, deployed, compared=deployed.candidate.role)
        limit = None if row["flop_ratio"] is None else BARE_TARGET * row["flop_ratio"]
        verdict = target_verdict(row, limit)
        row.update(
            verdict=verdict,
            target=f"<= {BARE_TARGET} x the FLOP ratio",
            meets_target={MET: True, MISSED: False}.get(verdict),
        )
        yield row


def _mtl_lora_vs_mtlora(singles, index):
    """``mtl-lora``'s deployed T task passes against MTLoRA's merged single pass (speedup of the latter)."""
    for m in singles:
        reference, passes = _other(m, index, "mtlora_single_pass"), _other(m, index, "merged")
        if reference is None or passes is None:
            continue
        yield speedup_row(
            reference,
            passes,
            comparison=MTL_LORA_VS_MTLORA,
            tasks=list(m.candidate.tasks),
            unmerged_batched_ms=m.latency.median,
        )


def _head_cost(singles, index):
    """What each task adds: the median over paired rounds of full pass minus the model without it (ms), with its
    interval; the verdict says whether it adds time, has no measurable cost or is below zero."""
    for m in singles:
        for key, other in index.items():
            role = key[4]
            if key[:4] != m.key()[:4] or not role.startswith("without:"):
                continue
            estimate = difference_estimate(m.round_medians, other.round_medians)
            verdict = cost_verdict(estimate)
            gmac = (
                None
                if m.gmac_per_image is None or other.gmac_per_image is None
                else (m.gmac_per_image - other.gmac_per_image)
            )
            yield _row(
                m,
                task=role.split(":", 1)[1],
                subject="single_pass",
                baseline=role,
                full_ms=m.latency.median,
                without_task_ms=other.latency.median,
                unit="ms",
                **estimate,
                verdict=verdict,
                fraction_of_full=estimate["value"] / m.latency.median if verdict == ADDS_TIME else None,
                flop_ratio=_flop_ratio(m, other),
                head_gmac_per_image=gmac,
            )


def _precision(measurements: list[Measurement]) -> list[dict[str, Any]]:
    """Per (family, backend, batch, role): each precision's speedup over fp32."""
    groups: dict[tuple, list[Measurement]] = defaultdict(list)
    for m in measurements:
        c = m.candidate
        if c.role in ("single_pass", "merged", "file", "bare_backbone"):
            groups[(c.family, c.backend, m.batch, c.role)].append(m)
    rows = []
    for (family, _, _, role), group in groups.items():
        if len({m.candidate.precision for m in group}) < 2:
            continue
        base = next((m for m in group if m.candidate.precision == "fp32"), group[0])
        rows += [
            speedup_row(
                m,
                base,
                family=family,
                role=role,
                subject_source=m.candidate.source,
                baseline_precision=base.candidate.precision,
            )
            for m in group
            if m is not base
        ]
    return rows


SWEPT_ROLES = ("single_pass", "merged", "file", "bare_backbone", "mtlora_single_pass")
"""The roles whose throughput is compared across batch sizes (the task subsets are there for the head costs)."""


def _batch_sweep(measurements: list[Measurement]) -> list[dict[str, Any]]:
    """Throughput at each batch size over the smallest batch's, for every candidate of ``SWEPT_ROLES`` measured at two
    or more."""
    groups: dict[tuple, list[Measurement]] = defaultdict(list)
    for m in measurements:
        if m.candidate.role not in SWEPT_ROLES:
            continue
        groups[(m.candidate.source, m.candidate.backend, m.candidate.precision, m.candidate.role)].append(m)
    rows = []
    for (_, _, _, role), group in groups.items():
        if len(group) < 2:
            continue
        group.sort(key=lambda m: m.batch)
        first = group[0]
        rows += [
            speedup_row(
                m,
                first,
                scale=m.batch / first.batch,
                role=role,
                baseline_batch=first.batch,
                throughput_images_per_s=m.throughput,
            )
            for m in group[1:]
        ]
    return rows
