"""What is measured: candidates (a model on a backend at a precision), each timed at every batch size.

Candidates that are compared with each other form a group (one source on one backend, or all ONNX files): a
group opens together, and its (candidate, batch) pairs are timed in interleaved rounds A B ... B A, so that
a ratio between two of them compares samples taken seconds apart, not minutes. A group is closed before the
next one opens.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any, Protocol

import torch

from mtlora_deploy.profile.memory import PeakMemory, measure_cpu_peaks, memory_method, weight_bytes
from mtlora_deploy.profile.timing import LatencyStats, TimingPolicy, make_timer, percentile, warm_up

PRECISION_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


class Predictor(Protocol):
    """What a candidate opens to: a Backend, or anything with ``image_size`` and the same four methods."""

    image_size: int

    def infer(self, images: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def synchronize(self) -> None: ...

    def close(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass
class Candidate:
    """One thing to time.

    Attributes:
        source: the input it comes from (a path, or a model's name).
        role: its part in the comparisons: ``single_pass``, ``merged``, ``per_task``, ``bare_backbone``,
            ``without:TASK`` (head cost) or ``file`` (an ONNX file / plan as given).
        backend, precision: runtime and numeric precision.
        open: builds the predictor (called once, closed after all batch sizes).
        family: candidates compared across precisions share it (a torch source, or all files of one backend).
        tasks: the tasks the source model predicts.
        materialize: builds the candidate's modules here and returns an opener carrying just them (torch).
    """

    source: str
    role: str
    backend: str
    precision: str
    open: Callable[[], Predictor]
    family: str = ""
    label: str = ""
    tasks: tuple[str, ...] = ()
    materialize: Callable[[], Callable[[], Predictor]] | None = None

    def __post_init__(self) -> None:
        self.family = self.family or self.source
        self.label = self.label or f"{self.source} [{self.role}]"

    def portable(self) -> Callable[[], Predictor]:
        """A picklable opener that carries only what this candidate needs (its own built modules, not the source
        model it was derived from): what a fresh subprocess opens to measure its memory."""
        return self.materialize() if self.materialize is not None else self.open


@dataclass
class RunSettings:
    """How every candidate is timed (``timing``) and what the timed call includes."""

    device: torch.device
    timing: TimingPolicy = field(default_factory=TimingPolicy)
    include_copies: bool = False
    seed: int = 0
    memory: bool = False  # CPU only: peak RSS of each candidate in a fresh subprocess (CUDA: always measured)


@dataclass
class Measurement:
    """The numbers for one candidate at one batch size, with the exact settings that produced them.

    ``round_medians`` (one per interleaved round) are what the comparisons' paired bootstrap resamples.
    """

    candidate: Candidate
    batch: int
    latency: LatencyStats
    peak_memory_bytes: int | None
    settings: dict[str, Any] = field(default_factory=dict)
    round_medians: list[float] = field(default_factory=list)
    gmac_per_image: float | None = None

    @property
    def throughput(self) -> float:
        return self.latency.throughput(self.batch)

    @property
    def gflops_per_s(self) -> float | None:
        """Achieved GFLOP/s at the median latency (2 FLOPs per multiply-accumulate)."""
        return None if self.gmac_per_image is None else 2.0 * self.gmac_per_image * self.throughput

    def key(self) -> tuple[str, str, str, int, str]:
        c = self.candidate
        return (c.source, c.backend, c.precision, self.batch, c.role)

    def to_dict(self) -> dict[str, Any]:
        c, lat = self.candidate, self.latency
        return {
            "source": c.source,
            "label": c.label,
            "role": c.role,
            "family": c.family,
            "backend": c.backend,
            "precision": c.precision,
            "tasks": list(c.tasks),
            "batch": self.batch,
            "n": lat.count,
            "rounds": lat.rounds,
            "median_ms": lat.median,
            "ci_low_ms": lat.ci_low,
            "ci_high_ms": lat.ci_high,
            "median_ms_per_image": lat.median / self.batch,
            "latency_ms": lat.to_dict(),
            "round_medians_ms": list(self.round_medians),
            "throughput_images_per_s": self.throughput,
            "gmac_per_image": self.gmac_per_image,
            "gflops_per_s": self.gflops_per_s,
            "peak_memory_bytes": self.peak_memory_bytes,
            "settings": self.settings,
        }


class SequentialPredictors:
    """Several predictors run one after the other on the same batch (T single-task models)."""

    def __init__(self, predictors: Sequence[Predictor]) -> None:
        self.predictors = list(predictors)
        self.image_size = predictors[0].image_size

    def infer(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for predictor in self.predictors:
            out.update(predictor.infer(images))
        return out

    def synchronize(self) -> None:
        for predictor in self.predictors:
            predictor.synchronize()

    def close(self) -> None:
        for predictor in self.predictors:
            predictor.close()

    def describe(self) -> dict[str, Any]:
        parts = [p.describe() for p in self.predictors]
        return {"backend": parts[0].get("backend"), "models": len(parts), "sequential": parts}


def make_images(batch: int, image_size: int, settings: RunSettings) -> torch.Tensor:
    """Seeded random images: on the device, or pinned host memory when copies are part of the timing."""
    images = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(settings.seed))
    if settings.device.type != "cuda":
        return images
    return images.pin_memory() if settings.include_copies else images.to(settings.device)


def timed_call(predictor: Predictor, images: torch.Tensor, include_copies: bool) -> Callable[[], object]:
    """The callable a timer runs: inference, plus copying every output back to the host when asked."""
    if not include_copies:
        return lambda: predictor.infer(images)
    return lambda: {k: v.to("cpu") for k, v in predictor.infer(images).items()}


@dataclass
class _Arm:
    """One (candidate, batch) inside an interleaved group, collecting its samples round by round."""

    candidate: Candidate
    predictor: Predictor
    batch: int
    call: Callable[[], object]
    calls_per_round: int
    gmac: float | None
    described: dict[str, Any]
    weights: int
    samples: list[float] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)
    peak: int | None = None

    def add(self, samples: list[float], peak: int | None) -> None:
        self.samples += samples
        self.round_medians.append(percentile(samples, 50))
        if peak is not None:
            self.peak = max(self.peak or 0, peak)


def _prepare_arm(
    candidate: Candidate, predictor: Predictor, batch: int, settings: RunSettings, opened: OpenedInfo
) -> _Arm:
    """Inputs, the untimed first call (compilation, graph capture, allocation) and warm-up, which sizes a round."""
    images = make_images(batch, int(predictor.image_size), settings)
    call = timed_call(predictor, images, settings.include_copies)
    call()
    seconds = warm_up(call, settings.timing.warmup, predictor.synchronize)
    return _Arm(candidate, predictor, batch, call, settings.timing.calls_per_round(seconds), opened[1], *opened[::2])


OpenedInfo = tuple[dict[str, Any], float | None, int]


def _open(
    candidate: Candidate, notes: list[str], gmac_cache: dict[tuple[str, str], float | None]
) -> tuple[Predictor, OpenedInfo]:
    """The opened predictor with (its description, GMAC per image or None, bytes of its torch weights).

    GMAC depend on the source and role only (not on backend or precision): ``gmac_cache`` counts each once.
    """
    predictor = candidate.open()
    key = (candidate.source, candidate.role)
    if key not in gmac_cache:
        gmac_cache[key] = _count_gmac(candidate, predictor, notes)
    return predictor, (predictor.describe(), gmac_cache[key], weight_bytes(predictor))


def _count_gmac(candidate: Candidate, predictor: Predictor, notes: list[str]) -> float | None:
    from mtlora_deploy.profile.flops import onnx_gmac, predictor_gmac

    try:
        gmac = predictor_gmac(predictor)
        if gmac is None and candidate.backend == "onnxruntime":
            gmac, unknown = onnx_gmac(candidate.source)
            if unknown:
                notes.append(
                    f"{candidate.source}: {unknown} MatMul/Conv nodes without inferred shapes are not in its GMAC count"
                )
    except Exception as exc:  # noqa: BLE001  (a FLOP count is extra information; the timing goes on)
        notes.append(f"{candidate.label}: no FLOP count ({type(exc).__name__}: {exc})")
        gmac = None
    return gmac


def _interleave(arms: list[_Arm], settings: RunSettings) -> None:
    """``rounds`` rounds over all arms, alternating the order (A B C, C B A, ...) so drift hits all alike."""
    timer = make_timer(settings.device)
    for index in range(settings.timing.rounds):
        for arm in arms if index % 2 == 0 else arms[::-1]:
            with PeakMemory(settings.device) as memory:
                samples = timer.run(arm.call, arm.calls_per_round)
            arm.add(samples, memory.peak_bytes)


def _measurement(arm: _Arm, settings: RunSettings, cpu_peaks: dict[tuple[int, int], int]) -> Measurement:
    timing = settings.timing
    run = {
        "device": str(settings.device),
        "batch": arm.batch,
        "warmup": timing.warmup,
        "untimed_first_calls": 1,
        "duration_s": timing.duration_s,
        "min_iterations": timing.min_iterations,
        "rounds": timing.rounds,
        "calls_per_round": arm.calls_per_round,
        "include_copies": settings.include_copies,
        "timer": make_timer(settings.device).name,
        "memory_method": memory_method(settings.device, settings.memory),
        "backend": arm.described,
    }
    if settings.device.type == "cuda":
        peak = None if arm.peak is None else arm.peak + arm.weights
    else:
        peak = cpu_peaks.get((id(arm.candidate), arm.batch))
    stats = LatencyStats.from_samples(arm.samples, arm.round_medians)
    return Measurement(arm.candidate, arm.batch, stats, peak, run, list(arm.round_medians), arm.gmac)


def measure_group(
    candidates: Sequence[Candidate],
    batches: Sequence[int],
    settings: RunSettings,
    notes: list[str],
    errors: tuple[type[BaseException], ...],
    gmac_cache: dict[tuple[str, str], float | None] | None = None,
) -> list[Measurement]:
    """Open every candidate of a group, time all (candidate, batch) pairs in interleaved rounds, close them.

    A candidate (or one of its batch sizes) that raises one of ``errors`` becomes a note and the rest go on.
    ``gmac_cache`` ((source, role) -> GMAC per image) is shared between the groups of one run.
    """
    gmac_cache = {} if gmac_cache is None else gmac_cache
    opened: list[tuple[Candidate, Predictor, OpenedInfo]] = []
    arms: list[_Arm] = []
    try:
        for candidate in candidates:
            try:
                opened.append((candidate, *_open(candidate, notes, gmac_cache)))
            except errors as exc:
                notes.append(f"{candidate.label} ({candidate.backend} {candidate.precision}): skipped, {_why(exc)}")
        for candidate, predictor, info in opened:
            for batch in batches:
                try:
                    arms.append(_prepare_arm(candidate, predictor, batch, settings, info))
                except errors as exc:
                    notes.append(
                        f"{candidate.label} ({candidate.backend} {candidate.precision}) batch {batch}: "
                        f"skipped, {_why(exc)}"
                    )
        _interleave(arms, settings)
    finally:
        for _, predictor, _ in opened:
            predictor.close()
    cpu_peaks = measure_cpu_peaks([c for c, *_ in opened], batches, settings, notes) if settings.memory else {}
    return [_measurement(arm, settings, cpu_peaks) for arm in arms]


def _why(exc: BaseException) -> str:
    from mtlora_deploy.errors import MTLoRAError

    text = " ".join(str(exc).split())[:300]
    return text if isinstance(exc, MTLoRAError) else f"{type(exc).__name__}: {text}"


def _package_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return None


def environment_settings(device: torch.device) -> dict[str, Any]:
    """Versions, threads, GPU and numeric flags that change the numbers (printed beside them)."""
    from mtlora_deploy._version import __version__

    env: dict[str, Any] = {
        "toolkit_version": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "onnxruntime": _package_version("onnxruntime", "onnxruntime-gpu"),
        "tensorrt": _package_version("tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu": platform.processor() or platform.machine(),
        "device": str(device),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if device.type == "cuda":
        env.update(
            gpu=torch.cuda.get_device_name(device),
            compute_capability=".".join(map(str, torch.cuda.get_device_capability(device))),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
        )
    return env
