"""The one opener of model artefacts: checkpoints/run folders (torch), .onnx (ONNX Runtime), plans (TensorRT or
TensorRT-RTX, from the plan's manifest). ``evaluate``, ``predict`` and ``profile`` all open through here."""

from __future__ import annotations

from pathlib import Path

import torch

from mtlora_deploy.engines.base import Backend
from mtlora_deploy.errors import ConfigError
from mtlora_deploy.utils.artifacts import artifact_kind

BACKENDS = ("auto", "torch", "torch-compiled", "onnxruntime", "tensorrt")
NATURAL_BACKENDS = {"onnx": "onnxruntime", "plan": "tensorrt", "checkpoint": "torch"}


def detect_backend(path: str | Path) -> str:
    """The natural backend of an artefact, from its suffix (plans of both TensorRT flavours: ``tensorrt``)."""
    return NATURAL_BACKENDS[artifact_kind(path)]


def artifact_precision(path: str | Path) -> str | None:
    """The precision a file carries (ONNX: its graph; plan: its manifest); None for checkpoints (chosen at run time)."""
    kind = artifact_kind(path)
    if kind == "onnx":
        from mtlora_deploy.utils.onnx_info import detect_onnx_precision

        return detect_onnx_precision(path)
    if kind == "plan":
        from mtlora_deploy.engines.manifest import read_manifest

        return str(read_manifest(path).get("precision"))
    return None


def open_backend(path: str | Path, backend: str = "auto", device: str = "cpu", **options) -> Backend:
    """Load ``path`` on ``backend`` (``auto`` picks it from the suffix) and ``device``."""
    path = Path(path)
    if backend not in BACKENDS:
        raise ConfigError(f"got {backend!r}, expected one of {', '.join(BACKENDS)}", field="backend")
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

    if artifact_kind(path) != "checkpoint":
        raise ConfigError(
            f"`backend` {backend}: {path} is not a PyTorch checkpoint; use onnxruntime or tensorrt", field="backend"
        )
    model = load(path, device=device)
    if backend == "torch-compiled":
        from mtlora_deploy.engines.torch_compiled import TorchCompiledBackend

        return TorchCompiledBackend(model, device=device, **options)
    dtype = options.pop("dtype", None)
    return TorchEagerBackend(model, device=device, dtype=dtype if isinstance(dtype, torch.dtype) else None)
