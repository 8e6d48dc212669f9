"""Open any model artefact as a Backend: checkpoints/run folders (torch), .onnx (ONNX Runtime), plans (TensorRT)."""

from __future__ import annotations

from pathlib import Path

import torch

from mtlora_deploy.engines.base import Backend
from mtlora_deploy.errors import ConfigError

BACKENDS = ("auto", "torch", "torch-compiled", "onnxruntime", "tensorrt")
PLAN_SUFFIXES = (".plan", ".engine", ".trt")


def detect_backend(path: Path) -> str:
    """The natural backend of an artefact, from its suffix."""
    if path.suffix == ".onnx":
        return "onnxruntime"
    if path.suffix in PLAN_SUFFIXES:
        return "tensorrt"
    return "torch"


def open_backend(path: str | Path, backend: str = "auto", device: str = "cpu", **options) -> Backend:
    """Load ``path`` on ``backend`` (``auto`` picks it from the suffix) and ``device``."""
    path = Path(path)
    if backend not in BACKENDS:
        raise ConfigError(f"--backend: got {backend!r}, expected one of {', '.join(BACKENDS)}")
    if not path.exists():
        raise ConfigError(f"{path} does not exist (expected a checkpoint, run folder, .onnx file or TensorRT plan)")
    backend = detect_backend(path) if backend == "auto" else backend
    if backend in ("torch", "torch-compiled"):
        return _open_torch(path, backend, device, **options)
    if backend == "onnxruntime":
        from mtlora_deploy.engines.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, device=device, **options)
    from mtlora_deploy.engines.tensorrt import TensorRTBackend

    return TensorRTBackend(path, device=device, **options)


def _open_torch(path: Path, backend: str, device: str, **options) -> Backend:
    from mtlora_deploy import load
    from mtlora_deploy.engines.torch_eager import TorchEagerBackend

    if path.suffix == ".onnx" or path.suffix in PLAN_SUFFIXES:
        raise ConfigError(f"--backend {backend}: {path} is not a PyTorch checkpoint; use onnxruntime or tensorrt")
    model = load(path, device=device)
    if backend == "torch-compiled":
        from mtlora_deploy.engines.torch_compiled import TorchCompiledBackend

        return TorchCompiledBackend(model, device=device, **options)
    dtype = options.pop("dtype", None)
    return TorchEagerBackend(model, device=device, dtype=dtype if isinstance(dtype, torch.dtype) else None)
