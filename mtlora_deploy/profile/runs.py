"""What is measured: candidates (a model on a backend at a precision), each timed at every batch size.

A ``Candidate`` opens lazily (compiling or loading only when its turn comes, and closing right after), so a
profile with many variants never holds them all in memory at once.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any, Protocol

import torch

from mtlora_deploy.profile.memory import PeakMemory, memory_method
from mtlora_deploy.profile.timing import LatencyStats, make_timer

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
    """

    source: str
    role: str
    backend: str
    precision: str
    open: Callable[[], Predictor]
    family: str = ""
    label: str = ""
    tasks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.family = self.family or self.source
        self.label = self.label or f"{self.source} [{self.role}]"


@dataclass
class RunSettings:
    """How every candidate is timed."""

    device: torch.device
    iterations: int = 50
    warmup: int = 10
    include_copies: bool = False
    seed: int = 0


@dataclass
class Measurement:
    """The numbers for one candidate at one batch size, with the exact settings that produced them."""

    candidate: Candidate
    batch: int
    latency: LatencyStats
    peak_memory_bytes: int | None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.latency.throughput(self.batch)

    def key(self) -> tuple[str, str, str, int, str]:
        c = self.candidate
        return (c.source, c.backend, c.precision, self.batch, c.role)

    def to_dict(self) -> dict[str, Any]:
        c = self.candidate
        return {
            "source": c.source,
            "label": c.label,
            "role": c.role,
            "family": c.family,
            "backend": c.backend,
            "precision": c.precision,
            "tasks": list(c.tasks),
            "batch": self.batch,
            "latency_ms": self.latency.to_dict(),
            "throughput_images_per_s": self.throughput,
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


def measure_candidate(candidate: Candidate, batches: Sequence[int], settings: RunSettings) -> list[Measurement]:
    """Open ``candidate``, time it at every batch size, close it.

    The first call at each batch size (compilation, CUDA-graph capture, allocation) is never timed; then
    ``settings.warmup`` untimed calls and ``settings.iterations`` timed ones follow.
    """
    predictor = candidate.open()
    try:
        described, size = predictor.describe(), int(predictor.image_size)
        return [_measure_batch(candidate, predictor, batch, size, settings, described) for batch in batches]
    finally:
        predictor.close()


def _measure_batch(
    candidate: Candidate,
    predictor: Predictor,
    batch: int,
    image_size: int,
    settings: RunSettings,
    described: dict[str, Any],
) -> Measurement:
    images = make_images(batch, image_size, settings)
    call = timed_call(predictor, images, settings.include_copies)
    call()
    predictor.synchronize()
    timer = make_timer(settings.device)
    with PeakMemory(settings.device) as memory:
        samples = timer.time(call, settings.iterations, settings.warmup)
    run = {
        "device": str(settings.device),
        "batch": batch,
        "iterations": settings.iterations,
        "warmup": settings.warmup,
        "untimed_first_calls": 1,
        "include_copies": settings.include_copies,
        "timer": timer.name,
        "memory_method": memory_method(settings.device),
        "backend": described,
    }
    return Measurement(candidate, batch, LatencyStats.from_samples(samples), memory.peak_bytes, run)


def _package_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return None


def environment_settings(device: torch.device) -> dict[str, Any]:
    """Versions, threads, GPU and numeric flags that change the numbers (printed beside them)."""
    from mtlora_deploy import __version__

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
