"""``mtlora profile`` as a library call: inputs -> candidates -> measurements -> comparisons -> report files."""

from __future__ import annotations

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
from mtlora_deploy.profile.comparisons import COMPARISONS, TORCH_BACKENDS, compute_comparisons, torch_candidates
from mtlora_deploy.profile.memory import memory_method
from mtlora_deploy.profile.report import build_report, print_report, write_report
from mtlora_deploy.profile.runs import Candidate, Measurement, RunSettings, environment_settings, measure_candidate
from mtlora_deploy.profile.timing import make_timer

BACKENDS = ("torch", "torch-compiled", "onnxruntime", "tensorrt")
DEFAULT_BACKENDS = ("torch", "onnxruntime", "tensorrt")  # each input's natural runtime; compiling is opt-in
PRECISIONS = ("fp32", "fp16", "bf16")
ProfileInput = str | Path | nn.Module | tuple[str, nn.Module]


def _check_options(backends, precisions, batches, iterations, warmup, comparisons) -> None:
    for name, values, allowed in (("--backend", backends, BACKENDS), ("--precision", precisions, PRECISIONS),
                                  ("--comparisons", comparisons, COMPARISONS)):
        bad = [v for v in values if v not in allowed]
        if bad:
            raise ConfigError(f"{name}: got {bad[0]!r}, expected any of {', '.join(allowed)}")
    if not batches or any(int(b) < 1 for b in batches):
        raise ConfigError(f"--batch: got {list(batches)}, expected positive batch sizes such as 1,8,32")
    if iterations < 1 or warmup < 0:
        raise ConfigError(f"--iterations/--warmup: got {iterations}/{warmup}, expected iterations >= 1, warmup >= 0")


def resolve_device(device: str | torch.device) -> torch.device:
    """The profiling device; CUDA must be present when asked for."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MissingDependencyError("--device cuda: torch.cuda.is_available() is False here; profile with --device "
                                     "cpu or run on a machine with an NVIDIA GPU and a CUDA build of torch")
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
    return Candidate(str(path), "file", backend, str(artifact_precision(path)),
                     partial(open_backend, path, backend, device, **options), family=family)


def collect_candidates(inputs: Sequence[ProfileInput], backends: Sequence[str], precisions: Sequence[str],
                       device: torch.device, comparisons: Sequence[str], compile_options: dict[str, Any],
                       use_cuda_graph: bool, notes: list[str]) -> list[Candidate]:
    """Everything to time, in order; inputs that no requested backend can run become notes."""
    out: list[Candidate] = []
    for item in inputs:
        natural = detect_backend(item) if isinstance(item, (str, Path)) else "torch"
        usable = [b for b in backends if (b in TORCH_BACKENDS if natural == "torch" else b == natural)]
        if not usable:
            notes.append(f"{item}: skipped, none of --backend {','.join(backends)} runs it (it needs {natural})")
        elif natural == "tensorrt" and device.type != "cuda":
            notes.append(f"{item}: skipped, TensorRT plans need --device cuda")
        elif natural != "torch":
            out.append(_file_candidate(Path(item), natural, device, use_cuda_graph))
        else:
            source, model = _load_model(item)
            out += torch_candidates(model, source, usable, precisions, device, comparisons, compile_options, notes)
    return out


def measure_all(candidates: Sequence[Candidate], batches: Sequence[int], settings: RunSettings, notes: list[str],
                console: Console | None = None) -> list[Measurement]:
    """Time every candidate at every batch size (with a progress bar); a candidate that cannot open is a note."""
    measurements: list[Measurement] = []
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("profile", total=len(candidates))
        for candidate in candidates:
            bar.update(task, description=f"{candidate.backend} {candidate.precision} {candidate.label}")
            try:
                measurements += measure_candidate(candidate, batches, settings)
            except MTLoRAError as exc:
                notes.append(f"{candidate.label} ({candidate.backend} {candidate.precision}): skipped, {exc}")
            bar.advance(task)
    return measurements


def run_settings_dict(settings: RunSettings, batches: Sequence[int], extra: dict[str, Any]) -> dict[str, Any]:
    """The run's settings as printed with the numbers."""
    return {"device": str(settings.device), "batches": list(batches), "iterations": settings.iterations,
            "warmup": settings.warmup, "untimed_first_calls": 1, "include_copies": settings.include_copies,
            "seed": settings.seed, "timer": make_timer(settings.device).name,
            "memory_method": memory_method(settings.device), **extra}


def finish_report(measurements: Sequence[Measurement], settings: RunSettings, batches: Sequence[int],
                  notes: list[str], output: str | Path | None = None, metrics: Sequence[str | Path] = (),
                  extra_run: dict[str, Any] | None = None) -> dict[str, Any]:
    """Comparisons, the report dict and (with ``output``) profile.json, profile.md and the PNG plots."""
    comparisons = compute_comparisons(measurements)
    rows = [m.to_dict() for m in measurements]
    metric_records = [_read_metrics(path) for path in metrics]
    report = build_report(environment_settings(settings.device), run_settings_dict(settings, batches, extra_run or {}),
                          rows, comparisons, notes, metric_records)
    if output is not None:
        report["plots"] = _write_plots(report, Path(output), notes)
        report["files"] = {k: str(v) for k, v in write_report(report, output).items()}
    return report


def _read_metrics(path: str | Path) -> dict[str, Any]:
    import json

    path = Path(path)
    try:
        return {"file": str(path), **json.loads(path.read_text())}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--metrics {path}: cannot read it as JSON from mtlora evaluate -o ({exc})") from exc


def _write_plots(report: dict[str, Any], out_dir: Path, notes: list[str]) -> dict[str, str]:
    from mtlora_deploy.profile.plots import accuracy_points, plot_accuracy_vs_latency, plot_latency_vs_batch

    plots = {}
    if report["measurements"]:
        plots["latency_vs_batch"] = str(plot_latency_vs_batch(report["measurements"], out_dir / "latency_vs_batch.png"))
    if report["metrics"]:
        points = accuracy_points(report["metrics"], report["measurements"])
        report["accuracy_vs_latency"] = points
        if points:
            plots["accuracy_vs_latency"] = str(plot_accuracy_vs_latency(points, out_dir / "accuracy_vs_latency.png"))
        else:
            notes.append("--metrics: no evaluate result matched a profiled artefact (by path) with a delta-m; "
                         "accuracy_vs_latency.png not drawn")
    return plots


def run_profile(
    inputs: Sequence[ProfileInput],
    backends: Sequence[str] | None = None,
    precisions: Sequence[str] = ("fp32",),
    batches: Sequence[int] = (1, 8, 32),
    iterations: int = 50,
    warmup: int = 10,
    device: str | torch.device = "cpu",
    include_copies: bool = False,
    output: str | Path | None = None,
    metrics: Sequence[str | Path] = (),
    comparisons: Sequence[str] = COMPARISONS,
    compile_options: dict[str, Any] | None = None,
    use_cuda_graph: bool = False,
    seed: int = 0,
    threads: int | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Profile run/checkpoint folders, in-memory models, ONNX files and TensorRT plans; write the report.

    Args:
        inputs: checkpoints / run folders / models (torch backends), ``.onnx`` files (ONNX Runtime), plans
            (TensorRT). Models may be given as ``(name, module)``.
        backends: any of torch, torch-compiled, onnxruntime, tensorrt (default: each input's natural backend:
            torch, onnxruntime or tensorrt).
        precisions: torch autocast precisions (fp32, fp16, bf16); files keep their own precision.
        batches, iterations, warmup: batch sizes; timed and untimed iterations per batch size.
        device: cpu or cuda[:N]; include_copies: time host->device input and device->host output copies too.
        output: folder for profile.json, profile.md and the PNG plots (nothing written when None).
        metrics: ``mtlora evaluate -o`` JSON files, for the accuracy-vs-latency plot.
        comparisons: which comparison variants torch models bring (per_task, merged, bare_backbone, head_cost).
        compile_options: TorchCompiledBackend options (mode, compile_backend, dynamic).
        use_cuda_graph: TensorRT plans replay a captured CUDA graph.
        seed: seed of the random input images.
        threads: torch intra-op threads during the run (restored afterwards; default: torch's current setting).

    Returns:
        The report dict (what profile.json holds).
    """
    backends = list(backends or DEFAULT_BACKENDS)
    _check_options(backends, precisions, batches, iterations, warmup, comparisons)
    settings = RunSettings(resolve_device(device), iterations, warmup, include_copies, seed)
    notes: list[str] = []
    candidates = collect_candidates(inputs, backends, precisions, settings.device, comparisons,
                                    dict(compile_options or {}), use_cuda_graph, notes)
    if not candidates:
        raise ConfigError("nothing to profile: " + ("; ".join(notes) or "no inputs given"))
    extra = {"backends": backends, "precisions": list(precisions), "comparisons": list(comparisons),
             "compile_options": dict(compile_options or {}), "tensorrt_cuda_graph": use_cuda_graph}
    previous_threads = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(int(threads))
        measurements = measure_all(candidates, [int(b) for b in batches], settings, notes, console)
        report = finish_report(measurements, settings, batches, notes, output, metrics, extra)
    finally:
        torch.set_num_threads(previous_threads)
    if console is not None:
        print_report(report, console)
    return report
