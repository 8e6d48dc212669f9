"""``mtlora profile`` as a library call: inputs -> candidates -> measurements -> comparisons -> report files."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress
from torch import nn

from mtlora_deploy.engines.registry import detect_backend
from mtlora_deploy.errors import ConfigError, MissingDependencyError, MTLoRAError
from mtlora_deploy.profile.budget import Budget, report_reserve
from mtlora_deploy.profile.comparisons import TORCH_BACKENDS, compute_comparisons, torch_candidates
from mtlora_deploy.profile.console import print_report
from mtlora_deploy.profile.memory import memory_method
from mtlora_deploy.profile.report import build_report, write_report
from mtlora_deploy.profile.rounds import measure_group
from mtlora_deploy.profile.runs import Candidate, Measurement, RunSettings, busy_machine_note, environment_settings
from mtlora_deploy.profile.settings import AUTOCAST_PRECISIONS, BACKENDS, COMPARISONS, DEFAULT_BACKENDS, ProfileSettings
from mtlora_deploy.profile.stats import MIN_ROUNDS, STATISTIC, TOO_FEW
from mtlora_deploy.profile.timing import PERCENTILES, TimingPolicy, make_timer, percentile_min_samples

__all__ = ["BACKENDS", "COMPARISONS", "DEFAULT_BACKENDS", "AUTOCAST_PRECISIONS", "ProfileSettings", "run_profile"]

ProfileInput = str | Path | nn.Module | tuple[str, nn.Module]


def resolve_device(device: str | torch.device) -> torch.device:
    """The profiling device; CUDA must be present when asked for."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MissingDependencyError(
            "`device` cuda: torch.cuda.is_available() is False here; profile with `device` "
            "cpu or run on a machine with an NVIDIA GPU and a CUDA build of torch",
            field="device",
        )
    return device


def _load_model(item: ProfileInput) -> tuple[str, nn.Module]:
    if isinstance(item, tuple):
        return item
    if isinstance(item, nn.Module):
        return f"model:{item.config.backbone}@{item.config.image_size}", item
    from mtlora_deploy import load

    return str(item), load(item)


def _file_candidate(path: Path, backend: str, device: torch.device, use_cuda_graph: bool) -> Candidate:
    from mtlora_deploy.engines.registry import artifact_precision, open_backend

    options = {"use_cuda_graph": use_cuda_graph} if backend == "tensorrt" else {}
    family = "tensorrt plans" if backend == "tensorrt" else f"{backend} files"
    return Candidate(
        str(path),
        "file",
        backend,
        str(artifact_precision(path)),
        partial(open_backend, path, backend, device, **options),
        family=family,
    )


def collect_candidates(
    inputs: Sequence[ProfileInput],
    backends: Sequence[str],
    precisions: Sequence[str],
    device: torch.device,
    comparisons: Sequence[str],
    compile_options: dict[str, Any],
    use_cuda_graph: bool,
    notes: list[str],
) -> list[Candidate]:
    """Everything to time, in order; inputs that no requested backend can run become notes."""
    out: list[Candidate] = []
    for item in inputs:
        natural = detect_backend(item) if isinstance(item, (str, Path)) else "torch"
        usable = [b for b in backends if (b in TORCH_BACKENDS if natural == "torch" else b == natural)]
        if not usable:
            notes.append(
                f"{item}: skipped, none of the backends asked for ({','.join(backends)}) runs it (it needs {natural})"
            )
        elif natural == "tensorrt" and device.type != "cuda":
            notes.append(f"{item}: skipped, TensorRT plans need a CUDA device")
        elif natural != "torch":
            out.append(_file_candidate(Path(item), natural, device, use_cuda_graph))
        else:
            source, model = _load_model(item)
            out += torch_candidates(model, source, usable, precisions, device, comparisons, compile_options, notes)
    return out


def _groups(candidates: Sequence[Candidate]) -> list[list[Candidate]]:
    """Candidates compared with each other (one family on one backend), in order of first appearance."""
    groups: dict[tuple[str, str], list[Candidate]] = {}
    for candidate in candidates:
        groups.setdefault((candidate.family, candidate.backend), []).append(candidate)
    return list(groups.values())


def measure_all(
    candidates: Sequence[Candidate],
    batches: Sequence[int],
    settings: RunSettings,
    notes: list[str],
    console: Console | None = None,
    budget_s: float | None = None,
    keep_going: bool = False,
    budget: Budget | None = None,
) -> list[Measurement]:
    """Time every group of candidates in interleaved rounds (with a progress bar on ``console``).

    A candidate that cannot open is a note (any exception with ``keep_going``). ``budget`` (else one of
    ``budget_s`` seconds from now) gives each group its deadline: every candidate is measured, with fewer calls
    and rounds when the time is short.
    """
    budget = budget or Budget(budget_s, settings.clock)
    errors: tuple[type[BaseException], ...] = (Exception,) if keep_going else (MTLoRAError,)
    measurements: list[Measurement] = []
    gmac_cache: dict[tuple[str, str], float | None] = {}
    groups, arms_left = _groups(candidates), len(candidates) * len(batches)
    with Progress(console=console, transient=True, disable=console is None) as bar:
        task = bar.add_task("profile", total=len(groups))
        for group in groups:
            first, arms = group[0], len(group) * len(batches)
            bar.update(task, description=f"{first.backend} {Path(first.family).name} (arms: {arms})")
            deadline = budget.share(arms, arms_left)
            measurements += measure_group(group, batches, settings, notes, errors, gmac_cache, deadline)
            arms_left -= arms
            bar.advance(task)
    return measurements


def budget_notes(measurements: Sequence[Measurement], settings: RunSettings, budget: Budget) -> list[str]:
    """What the budget and the round count mean for the numbers: shrunk plans, an overrun, too few rounds."""
    notes, asked, spent = [], settings.timing.rounds, budget.elapsed()
    if budget.limited:
        short = [m for m in measurements if m.latency.rounds < asked]
        if short:
            notes.append(
                f"the budget of {budget.seconds:g} s: {len(short)} of {len(measurements)} measurements got fewer than "
                f"the {asked} rounds asked for (down to {min(m.latency.rounds for m in short)}); each one's rounds "
                "and timed seconds are in the table"
            )
        if spent > budget.seconds:
            notes.append(
                f"the budget of {budget.seconds:g} s: measuring took {spent:.1f} s; the minimum (loading and opening "
                "every candidate, its first call and one timed call per batch size) did not fit"
            )
    few = sum(m.latency.rounds < MIN_ROUNDS for m in measurements)
    if few:
        notes.append(
            f"{few} of {len(measurements)} measurements have fewer than {MIN_ROUNDS} rounds: no 95% interval and "
            f"no verdict for them ('{TOO_FEW}'); ask for more rounds (or a larger budget)"
        )
    return notes


def run_settings_dict(settings: RunSettings, batches: Sequence[int], extra: dict[str, Any]) -> dict[str, Any]:
    """The run's settings as printed with the numbers."""
    timing = settings.timing
    return {
        "device": str(settings.device),
        "batches": list(batches),
        "duration_s": timing.duration_s,
        "min_iterations": timing.min_iterations,
        "warmup": timing.warmup,
        "rounds": timing.rounds,
        "untimed_first_calls": 1,
        "interleaved": "rounds A B ... B A within each group (one source on one backend, or all ONNX files)",
        "statistic": STATISTIC,
        "percentiles": {f"p{q}": f"n >= {percentile_min_samples(q)}" for q in PERCENTILES},
        "include_copies": settings.include_copies,
        "seed": settings.seed,
        "timer": make_timer(settings.device).name,
        "memory_method": memory_method(settings.device, settings.memory),
        **extra,
    }


def finish_report(
    measurements: Sequence[Measurement],
    settings: RunSettings,
    batches: Sequence[int],
    notes: list[str],
    output: str | Path | None = None,
    metrics: Sequence[str | Path] = (),
    extra_run: dict[str, Any] | None = None,
    budget: Budget | None = None,
) -> dict[str, Any]:
    """Comparisons, the report dict and (with ``output``) profile.json, profile.md and the PNG plots (each plot
    only while ``budget`` has time for it)."""
    comparisons = compute_comparisons(measurements)
    rows = [m.to_dict() for m in measurements]
    metric_records = [_read_metrics(path) for path in metrics]
    report = build_report(
        environment_settings(settings.device),
        run_settings_dict(settings, batches, extra_run or {}),
        rows,
        comparisons,
        notes,
        metric_records,
    )
    if output is not None:
        report["plots"] = _write_plots(report, Path(output), report["notes"], budget or Budget(None))
        report["files"] = {k: str(v) for k, v in write_report(report, output).items()}
    return report


def _read_metrics(path: str | Path) -> dict[str, Any]:
    import json

    path = Path(path)
    try:
        return {"file": str(path), **json.loads(path.read_text())}
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"`metrics` {path}: cannot read it as JSON from mtlora evaluate -o ({exc})", field="metrics"
        ) from exc


def _write_plots(report: dict[str, Any], out_dir: Path, notes: list[str], budget: Budget) -> dict[str, str]:
    from mtlora_deploy.profile import plots as draw

    rows, wanted = report["measurements"], {}
    if rows:
        wanted["latency_per_image"] = partial(draw.plot_latency_per_image, rows)
        wanted["throughput_vs_batch"] = partial(draw.plot_throughput_vs_batch, rows)
    if any(m["gflops_per_s"] is not None for m in rows):
        wanted["gflops_per_variant"] = partial(draw.plot_gflops_per_variant, rows)
    if report["metrics"]:
        points = draw.accuracy_points(report["metrics"], rows)
        report["accuracy_vs_latency"] = points
        if points:
            wanted["accuracy_vs_latency"] = partial(draw.plot_accuracy_vs_latency, points)
        else:
            notes.append(
                "the metrics given: no evaluate result matched a profiled artefact (by path) with a delta-m; "
                "accuracy_vs_latency.png not drawn"
            )
    plots = {}
    for name, plot in wanted.items():
        if not budget.has_time_for_a_plot():
            notes.append(f"{name}.png not drawn: the budget of {budget.seconds:g} s is spent")
            continue
        plots[name] = str(plot(out_dir / f"{name}.png"))
    return plots


def _import_early(plots: bool) -> None:
    """Import scipy.stats (the intervals) and matplotlib (the plots) now: seconds each on a busy machine, inside the
    budget before its shares are worked out rather than after a group's deadline."""
    from mtlora_deploy.profile.stats import MIN_ROUNDS, interval_ranks

    interval_ranks(MIN_ROUNDS)
    if plots:
        from mtlora_deploy.profile.plots import pyplot

        pyplot()


@contextlib.contextmanager
def _recompile_room(candidates: Sequence[Candidate]):
    """A group of compiled models is open at once, and every model instance x batch size compiles the same forward
    code again: raise dynamo's recompile limit (8) for the run so that none silently falls back to eager."""
    compiled = sum(c.backend == "torch-compiled" for c in candidates)
    if not compiled:
        yield
        return
    import torch._dynamo.config as dynamo

    name = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
    previous = getattr(dynamo, name)
    setattr(dynamo, name, max(previous, 64 * compiled))
    try:
        yield
    finally:
        setattr(dynamo, name, previous)


def _chosen_settings(settings: ProfileSettings, extra_run: dict[str, Any]) -> dict[str, Any]:
    """What the report's ``run`` section records of ``settings`` besides the timing (and a driver's own)."""
    return {
        "backends": list(settings.backends),
        "precisions": list(settings.precisions),
        "comparisons": list(settings.comparisons),
        "compile_options": dict(settings.compile_options),
        "tensorrt_cuda_graph": settings.use_cuda_graph,
        "budget_s": settings.budget_s,
        **extra_run,
    }


def run_profile(
    inputs: Sequence[ProfileInput],
    settings: ProfileSettings | None = None,
    *,
    output: str | Path | None = None,
    metrics: Sequence[str | Path] = (),
    console: Console | None = None,
    extra_run: dict[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Profile run/checkpoint folders, in-memory models, ONNX files and TensorRT plans; write the report.

    Args:
        inputs: checkpoints / run folders / models (torch backends), ``.onnx`` files (ONNX Runtime), plans
            (TensorRT). Models may be given as ``(name, module)``.
        settings: what to measure and how (``ProfileSettings``; its defaults when None).
        output: folder for profile.json, profile.md and the PNG plots (nothing written when None).
        metrics: ``mtlora evaluate -o`` JSON files, for the accuracy-vs-latency plot.
        console: where the compact summary is printed (nothing printed when None).
        extra_run: more settings to record in the report's ``run`` section (a driver's own).
        overrides: ``ProfileSettings`` fields replacing those of ``settings`` (e.g. ``batches=[1]``).

    Returns:
        The report dict (what profile.json holds).
    """
    settings = (settings or ProfileSettings()).updated(**overrides)
    device = resolve_device(settings.device)
    run = RunSettings(
        device,
        TimingPolicy(settings.warmup, settings.duration, settings.iterations, settings.rounds),
        settings.include_copies,
        settings.seed,
        settings.memory and device.type == "cpu",
    )
    budget = Budget(settings.budget_s, run.clock, report_reserve(settings.budget_s, output is not None, bool(metrics)))
    if budget.limited:
        _import_early(plots=output is not None)
    notes = [note] if (note := busy_machine_note()) else []
    candidates = collect_candidates(
        inputs,
        settings.backends,
        settings.precisions,
        device,
        settings.comparisons,
        dict(settings.compile_options),
        settings.use_cuda_graph,
        notes,
    )
    if not candidates:
        raise ConfigError("nothing to profile: " + ("; ".join(notes) or "no inputs given"))
    extra = _chosen_settings(settings, extra_run or {})
    previous_threads = torch.get_num_threads()
    try:
        if settings.threads:
            torch.set_num_threads(int(settings.threads))
        with _recompile_room(candidates):
            measurements = measure_all(
                candidates, settings.batches, run, notes, console, keep_going=settings.keep_going, budget=budget
            )
        notes += budget_notes(measurements, run, budget)
        extra["measure_s"] = round(budget.elapsed(), 3)
        report = finish_report(measurements, run, settings.batches, notes, output, metrics, extra, budget)
    finally:
        torch.set_num_threads(previous_threads)
    if console is not None:
        print_report(report, console)
    return report
