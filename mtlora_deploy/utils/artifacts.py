"""What kind of artefact a path is, and the names every layer shares: graph precisions and plan suffixes.

Defined once here, at the bottom of the package, so ``calib``, ``deploy``, ``engines``, ``profile`` and the CLI agree
without importing each other.
"""

from __future__ import annotations

from pathlib import Path

# The precisions an ONNX graph (and so a strongly typed engine built from it) can have.
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
ONNX_SUFFIX = ".onnx"
PLAN_SUFFIXES = (".plan", ".engine", ".trt")


def artifact_kind(path: str | Path) -> str:
    """``onnx``, ``plan`` or ``checkpoint`` (a run or checkpoint folder, or a checkpoint file), from the suffix."""
    suffix = Path(path).suffix
    if suffix == ONNX_SUFFIX:
        return "onnx"
    return "plan" if suffix in PLAN_SUFFIXES else "checkpoint"
