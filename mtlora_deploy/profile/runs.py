"""What is measured: candidates (a model on a backend at a precision), each timed at every batch size (an arm),
and the measurements they give (how the arms are timed: ``rounds``)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any, Protocol

import torch

from mtlora_deploy.profile.timing import LatencyStats, TimingPolicy

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
    clock: Callable[[], float] = time.perf_counter  # wall clock of the budget and of CPU timing (tests: a fake one)


@dataclass
class Measurement:
    """The numbers for one candidate at one batch size, with the exact settings that produced them.

    ``round_medians`` (one per interleaved round): the latency is their median, a comparison pairs them round by
    round. ``seconds``: what the arm got (``open``: opening its candidate, shared by its batch sizes; ``prepare``:
    first call and warm-up; ``timed``: the timed rounds).
    """

    candidate: Candidate
    batch: int
    latency: LatencyStats
    peak_memory_bytes: int | None
    settings: dict[str, Any] = field(default_factory=dict)
    round_medians: list[float] = field(default_factory=list)
    gmac_per_image: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)

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
            "calls_per_round": self.settings.get("calls_per_round"),
            **{f"{k}_s": v for k, v in self.seconds.items()},
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


def _package_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return None


def busy_machine_note() -> str | None:
    """A note when more processes want the CPU than it has cores (Unix load average): timings are then inflated,
    and torch with several threads most of all (a thread that waits for a descheduled one stalls the call)."""
    try:
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
    except (AttributeError, OSError):
        return None
    if load <= cores:
        return None
    return (
        f"the machine was busy when the profile started (1-minute load {load:.1f} on {cores} cores): absolute times "
        "are inflated and noisy, ratios of one group's rounds less so; torch with several threads suffers most "
        "(one torch thread keeps its calls from stalling)"
    )


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
        "tensorrt_rtx": _package_version("tensorrt-rtx", "tensorrt-rtx-cu13", "tensorrt-rtx-cu12"),
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
