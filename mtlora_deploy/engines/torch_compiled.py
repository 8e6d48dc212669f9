"""PyTorch compiled backend: ``torch.compile`` of a (merged or not) model; CUDA graphs on GPU.

On CUDA the default mode is ``reduce-overhead`` (inductor + CUDA graphs: the launch overhead that dominates a
Swin-T at batch 1 disappears); ``max-autotune-no-cudagraphs`` is the alternative without graphs. On the CPU it is
plain inductor, which needs a C++ compiler: without one (or when inductor fails to compile on this machine) it
falls back to ``aot_eager`` with a warning, so the backend still runs everywhere.
"""

from __future__ import annotations

import os
import shutil
import warnings
from typing import Any

import torch
from torch import nn

from mtlora_deploy.engines.torch_eager import TorchEagerBackend
from mtlora_deploy.errors import ConfigError

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
FALLBACK_BACKEND = "aot_eager"


def find_cxx_compiler() -> str | None:
    """The C++ compiler inductor's CPU code generation would use ($CXX, else c++/g++/clang++), or None."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    return next((path for path in map(shutil.which, candidates) if path), None)


def default_mode(device: torch.device) -> str:
    """``reduce-overhead`` (CUDA graphs) on CUDA, ``default`` elsewhere."""
    return "reduce-overhead" if device.type == "cuda" else "default"


def resolve_compile_backend(device: torch.device, backend: str | None) -> str:
    """The torch.compile backend: the caller's, else inductor, else (CPU without a C++ compiler) aot_eager."""
    if backend is not None:
        return backend
    if device.type == "cpu" and find_cxx_compiler() is None:
        warnings.warn(
            f"torch-compiled: no C++ compiler found for inductor on the CPU; using backend="
            f"{FALLBACK_BACKEND!r} (graph capture without code generation)",
            RuntimeWarning,
            stacklevel=3,
        )
        return FALLBACK_BACKEND
    return "inductor"


class TorchCompiledBackend(TorchEagerBackend):
    """``torch.compile(model)`` behind the Backend interface; optional autocast dtype for fp16/bf16 runs.

    Args:
        model: a MultiTaskModel (merged or not), or any module with a ``config`` returning ``{name: tensor}``.
        device: cpu or cuda[:N].
        mode: torch.compile mode (default: ``reduce-overhead`` on CUDA, ``default`` on the CPU).
        dtype: autocast dtype (float16 / bfloat16) or None for float32.
        compile_backend: torch.compile backend (default inductor; aot_eager without a C++ compiler on the CPU).
        dynamic: let torch.compile generate batch-size-generic kernels instead of one graph per batch size.

    Shapes are specialised (``dynamic=False``): each new batch size compiles once, which is what a profile
    per batch size wants. In ``reduce-overhead`` mode outputs live in CUDA-graph memory that the next call
    reuses: consume (or clone) them before calling again.
    """

    name = "torch-compiled"

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "cpu",
        mode: str | None = None,
        dtype: torch.dtype | None = None,
        compile_backend: str | None = None,
        dynamic: bool = False,
    ) -> None:
        super().__init__(model, device, dtype)
        self.mode = mode or default_mode(self.device)
        if self.mode not in MODES:
            raise ConfigError(f"got {self.mode!r}, expected one of {', '.join(MODES)}", field="compile_mode")
        self.compile_backend = resolve_compile_backend(self.device, compile_backend)
        self.dynamic = dynamic
        self._compile()

    def _compile(self) -> None:
        mode = None if self.compile_backend != "inductor" or self.mode == "default" else self.mode
        self.compiled = torch.compile(self.model, mode=mode, backend=self.compile_backend, dynamic=self.dynamic)

    @torch.inference_mode()
    def infer(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        try:
            return self._call(images)
        except Exception as exc:  # inductor failing to build C++ on this machine is not the user's model's fault
            if not self._can_fall_back(exc):
                raise
            warnings.warn(
                f"torch-compiled: inductor failed on the CPU ({type(exc).__name__}); falling back to "
                f"backend={FALLBACK_BACKEND!r}",
                RuntimeWarning,
                stacklevel=2,
            )
            self.compile_backend = FALLBACK_BACKEND
            self._compile()
            return self._call(images)

    def _call(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.compile_backend == "inductor" and self.mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        if self.dtype is None:
            return self.compiled(images)
        with torch.autocast(self.device.type, dtype=self.dtype):
            return self.compiled(images)

    def _can_fall_back(self, exc: Exception) -> bool:
        from torch._dynamo.exc import BackendCompilerFailed

        return (
            self.device.type == "cpu" and self.compile_backend == "inductor" and isinstance(exc, BackendCompilerFailed)
        )

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "compile_mode": self.mode,
            "compile_backend": self.compile_backend,
            "dynamic": self.dynamic,
        }
