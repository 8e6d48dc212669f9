"""Checks run after every export (docs/deploy.md, "Export"): ONNX validity, TensorRT op support, ONNX Runtime parity.

Each check raises ``ExportCheckError`` with one line naming what failed, so the exporter can drop the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from mtlora_deploy.errors import MTLoRAError
from mtlora_deploy.utils.imports import require

DEFAULT_DOMAINS = ("", "ai.onnx")


class ExportCheckError(MTLoRAError):
    """An exported graph failed a check (invalid ONNX, unsupported op, or outputs that differ from PyTorch)."""


@dataclass(frozen=True)
class TaskParity:
    """ONNX Runtime vs PyTorch for one output: ``relative = max_abs / max|ref|`` (mismatch share for labels)."""

    task: str
    max_abs: float
    relative: float
    tolerance: float
    dtype: str

    @property
    def ok(self) -> bool:
        return self.relative <= self.tolerance


def check_onnx_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """``onnx.checker`` (full check) and strict shape inference; returns the shape-inferred model."""
    try:
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportCheckError(f"exported graph is not valid ONNX: {str(exc).splitlines()[0]}") from exc
    for output in inferred.graph.output:
        dims = output.type.tensor_type.shape.dim
        if len(dims) != 4 or not all(d.HasField("dim_value") for d in dims[1:]):
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
            raise ExportCheckError(
                f"output {output.name}: inferred shape {shape}, expected (batch, C, H, W) with static C/H/W"
            )
    return inferred


@lru_cache(maxsize=1)
def tensorrt_op_table() -> dict[str, Any]:
    """The TensorRT ONNX parser's operator matrix shipped as package data (see its ``source`` field)."""
    text = resources.files("mtlora_deploy").joinpath("data/trt_onnx_ops.json").read_text()
    return json.loads(text)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), 0)


def check_tensorrt_ops(model: onnx.ModelProto, table: dict[str, Any] | None = None) -> list[str]:
    """Refuse ops (and an opset) the TensorRT ONNX parser does not support; returns the sorted op types used."""
    table = table or tensorrt_op_table()
    supported, version = set(table["supported"]), table["tensorrt_version"]
    low, high = table["opset_range"]
    if not low <= _opset(model) <= high:
        raise ExportCheckError(
            f"opset {_opset(model)}: TensorRT {version} parses opsets {low}-{high}; re-export with another `opset`"
        )
    for node in model.graph.node:
        if node.domain not in DEFAULT_DOMAINS or node.op_type not in supported:
            op = f"{node.domain}::{node.op_type}" if node.domain not in DEFAULT_DOMAINS else node.op_type
            raise ExportCheckError(
                f"op {op} (node {node.name or '?'}) is not supported by the TensorRT {version} ONNX parser"
            )
    return sorted({n.op_type for n in model.graph.node})


def _relative(ort_out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Float outputs: (max abs, max abs / max|ref|); integer label maps: (max abs, share of differing pixels)."""
    if ort_out.shape != ref.shape:
        raise ExportCheckError(f"ONNX Runtime output shape {ort_out.shape} differs from PyTorch {ref.shape}")
    diff = np.abs(ort_out.astype(np.float64) - ref.astype(np.float64))
    max_abs = float(diff.max()) if diff.size else 0.0
    if np.issubdtype(ref.dtype, np.integer):
        return max_abs, float((diff > 0).mean()) if diff.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    return max_abs, max_abs / scale if scale > 0 else max_abs


def compare_with_onnxruntime(
    onnx_path: str | Path,
    module: nn.Module,
    tasks: tuple[str, ...],
    images: torch.Tensor,
    rtol: float = 1e-4,
    label_tolerance: float = 1e-3,
) -> list[TaskParity]:
    """Run ``images`` through ONNX Runtime (CPU EP) and ``module`` (the exported torch module); one row per task."""
    ort = require("onnxruntime")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    try:
        ort_outs = session.run(list(tasks), {"image": images.numpy()})
    except Exception as exc:  # noqa: BLE001 - any ORT failure here means the graph is wrong, not the input
        raise ExportCheckError(
            f"{onnx_path}: ONNX Runtime cannot run the exported graph at batch {images.shape[0]} (another batch than "
            f"the export's example: its batch axis is not really dynamic): {str(exc).splitlines()[0][:200]}"
        ) from exc
    with torch.no_grad():
        refs = [t.detach().cpu().numpy() for t in module(images)]
    rows = []
    for task, ort_out, ref in zip(tasks, ort_outs, refs, strict=True):
        max_abs, rel = _relative(ort_out, ref)
        tol = label_tolerance if np.issubdtype(ref.dtype, np.integer) else rtol
        rows.append(TaskParity(task, max_abs, rel, tol, str(ref.dtype)))
    return rows


def raise_on_parity_failure(rows: list[TaskParity]) -> None:
    """One line naming every task whose ONNX Runtime output differs from PyTorch beyond tolerance."""
    bad = [r for r in rows if not r.ok]
    if bad:
        detail = ", ".join(f"{r.task} rel {r.relative:.2e} > {r.tolerance:.0e}" for r in bad)
        raise ExportCheckError(f"ONNX Runtime differs from PyTorch: {detail}")
