"""What a precision conversion returns, and the version of the tool that did it (both go into the ONNX metadata)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import onnx


@dataclass
class CastResult:
    """A converted graph and how it was made.

    Attributes:
        model: the converted graph.
        tool: the converter's module path, e.g. ``onnxruntime.transformers.float16``.
        tool_version: the installed version of the package that provides ``tool``.
        settings: every option that influenced the result (JSON-serialisable).
        high_precision_nodes: nodes deliberately left in float32 (excluded from quantization / kept fp32).
    """

    model: onnx.ModelProto
    tool: str
    tool_version: str
    settings: dict[str, Any] = field(default_factory=dict)
    high_precision_nodes: list[str] = field(default_factory=list)


def package_version(package: str) -> str:
    """Installed version of ``package`` (also tried as ``nvidia-<package>`` and ``<package>-gpu``), or ``unknown``."""
    from importlib.metadata import PackageNotFoundError, version

    for name in (package, f"nvidia-{package}", f"{package}-gpu"):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return "unknown"
