"""Lazy imports: optional packages with a one-line install hint (the Polygraphy importer idea), and a package's
attributes imported from their submodules on first use (PEP 562)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from mtlora_deploy.errors import MissingDependencyError

_INSTALL_HINTS = {
    "tensorrt": "pip install 'mtlora-deploy[tensorrt]' (TensorRT 10.x/11.x wheels from NVIDIA's index)",
    "modelopt": "pip install 'mtlora-deploy[int8]' (nvidia-modelopt[onnx])",
    "onnxruntime": "pip install onnxruntime (or onnxruntime-gpu)",
}


def require(module: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise a one-line error naming what to install.

    Args:
        module: dotted module name, e.g. ``"tensorrt"`` or ``"modelopt.onnx.quantization"``.
        extra: the optional-dependency group that provides it, for the message.
    """
    try:
        imported = importlib.import_module(module)
    except ImportError as exc:
        root = module.split(".")[0]
        hint = _INSTALL_HINTS.get(root) or (f"pip install 'mtlora-deploy[{extra}]'" if extra else f"pip install {root}")
        raise MissingDependencyError(f"'{module}' is not importable ({exc}); install it with: {hint}") from exc
    if module.split(".")[0] == "onnxruntime":
        _quiet_onnxruntime()
    return imported


def _quiet_onnxruntime() -> None:
    """ONNX Runtime's C++ log writes its warnings straight to stderr ("[W:onnxruntime:...] Removing initializer
    ..."), past Python's warnings and logging: under the CLI's quiet default only its errors get through."""
    from mtlora_deploy.utils.verbosity import quiet_libraries

    if quiet_libraries():
        importlib.import_module("onnxruntime").set_default_logger_severity(3)


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """A package's PEP 562 ``__getattr__`` and its ``__all__``: each name imports its submodule on first access.

    ``__getattr__, __all__ = lazy_exports(__name__, {"merge_checkpoint": "mtlora_deploy.deploy.merge", ...})`` keeps
    ``import mtlora_deploy.deploy`` cheap (no ONNX stack until an export function is asked for).
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__, list(exports)
