"""What a built plan computes, read from the layer list its builder logs (``capture_log(...).layers``): the
GEMM/convolution layers by the types of their activation inputs, the low-precision weights it stores, its constant
bytes, and when its kernels are chosen; and the precision notes a plan's manifest carries from them.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from mtlora_deploy.engines.runtimes import TENSORRT_RTX
from mtlora_deploy.utils.artifacts import WEIGHT_ONLY_PRECISIONS

RTX_INT8_NOTE = (
    "TensorRT-RTX documents INT8 only as weight-only GEMM quantization (its support matrix: 'INT8 WoQ GEMM'); "
    "this plan keeps the graph's Q/DQ ({int8} of {total} GEMM/convolution layers take int8 activations in the "
    "plan's layer list), but its kernels are chosen when the plan is loaded on the GPU, so INT8 tensor-core "
    "activations are not guaranteed; for those build with full TensorRT (runtime tensorrt)"
)

_COMPUTE = re.compile(r"gemm|conv|correlation|matrixmultiply", re.IGNORECASE)
# Bytes per element of the constant types a layer list names; the low-precision ones are what weight-only stores.
_TYPE_BYTES = {"Float": 4, "Half": 2, "BFloat16": 2, "Int32": 4, "Int64": 8, "Int8": 1, "FP8": 1, "Int4": 0.5}
LOW_PRECISION_TYPES = ("Int8", "FP8", "Int4")
_CONSTANT = re.compile(r"Name: ([^,]+), Dimensions: \[([^\]]*)\][^}]*?Datatype: (\w+)")


@dataclass(frozen=True)
class PlanLayer:
    """One row of the builder's layer list: its name and type, its activation input types, its constants
    (name, element count, type) and its tactic (a ``STUB`` when TensorRT-RTX picks the kernel at load time)."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    constants: tuple[tuple[str, int, str], ...]
    tactic: str = ""

    @property
    def computes(self) -> bool:
        """A GEMM or convolution: a gemm/convolution layer, or a TensorRT-RTX fusion around a fully connected one."""
        return bool(_COMPUTE.search(self.kind)) or (self.kind == "runtime_fusion" and "Fc" in self.name)

    @property
    def low_precision_weights(self) -> tuple[str, ...]:
        return tuple(sorted({dtype for _, _, dtype in self.constants if dtype in LOW_PRECISION_TYPES}))


def _count(dims: str) -> int:
    count = 1
    for dim in filter(None, dims.split(",")):
        count *= max(int(dim), 0)
    return count


def parse_layers(layers: str) -> list[PlanLayer]:
    """The builder's DETAILED layer list (``capture_log(...).layers``) as :class:`PlanLayer` rows."""
    rows = []
    for line in layers.splitlines():
        if not (line.startswith("Name: ") and "LayerType:" in line):
            continue
        head, _, rest = line.partition(", LayerType: ")
        inputs = rest.split("Inputs: [", 1)[1].split("], Constants:", 1)[0] if "Inputs: [" in rest else ""
        constants = rest.split("Constants: [", 1)[1].split("], Outputs:", 1)[0] if "Constants: [" in rest else ""
        rows.append(
            PlanLayer(
                head.removeprefix("Name: "),
                rest.split(",", 1)[0],
                tuple(sorted(set(re.findall(r"Datatype: (\w+)", inputs)))),
                tuple((name, _count(dims), dtype) for name, dims, dtype in _CONSTANT.findall(constants)),
                rest.split("TacticName: ", 1)[-1].split(",", 1)[0] if "TacticName: " in rest else "",
            )
        )
    return rows


def _weights_by_type(rows: list[PlanLayer]) -> dict[str, dict[str, int]]:
    """``{type: {"tensors": n, "bytes": b}}`` of the plan's low-precision constants (each counted once)."""
    seen, found = set(), {}
    for row in rows:
        for name, count, dtype in row.constants:
            if dtype in LOW_PRECISION_TYPES and name not in seen:
                seen.add(name)
                entry = found.setdefault(dtype, {"tensors": 0, "bytes": 0})
                entry["tensors"] += 1
                entry["bytes"] += int(count * _TYPE_BYTES[dtype])
    return found


def layer_summary(layers: str) -> dict[str, Any] | None:
    """What the plan computes, from the layer list the builder logs: its GEMM/convolution layers by the types of
    their activation inputs, the low-precision weights it stores (and how many of them a GEMM/convolution reads
    itself rather than a separate dequantizing kernel), all constant bytes, and whether kernels were chosen at build
    or at load time."""
    rows = parse_layers(layers)
    if not rows:
        return None
    compute = [r for r in rows if r.computes]
    tactics = [r.tactic for r in compute if r.tactic]  # TensorRT-RTX's fusions name none
    names = {name for r in rows for name, _, _ in r.constants}
    sizes = {name: int(count * _TYPE_BYTES.get(dtype, 4)) for r in rows for name, count, dtype in r.constants}
    return {
        "layers": len(rows),
        "compute_layers": len(compute),
        "compute_layers_with_int8_inputs": sum("Int8" in r.inputs for r in compute),
        "compute_input_types": dict(Counter("+".join(r.inputs) or "none" for r in compute)),
        "compute_layers_with_low_precision_inputs": {
            t: n for t in LOW_PRECISION_TYPES if (n := sum(t in r.inputs for r in compute))
        },
        "compute_layers_with_low_precision_weights": sum(bool(r.low_precision_weights) for r in compute),
        "low_precision_weights": _weights_by_type(rows),
        "constant_bytes": sum(sizes[n] for n in names),
        "tactics_at": "load (JIT on the GPU)" if tactics and all("STUB" in t for t in tactics) else "build",
    }


def _mib(count: int) -> str:
    return f"{count / 2**20:.1f} MiB"


def _weights_note(summary: dict[str, Any], precision: str) -> str:
    """What a weight-only plan stores, from its layer list (never from the graph it was meant to be)."""
    weights = summary.get("low_precision_weights") or {}
    stored = [
        f"{w['tensors']} weight tensors as {t.lower()} ({_mib(w['bytes'])})"
        for t, w in weights.items()
        if t in ("Int8", "Int4")
    ]
    types = ", ".join(f"{n} {t}" for t, n in (summary.get("compute_input_types") or {}).items())
    if not stored:
        return (
            f"{precision}: the plan stores no int8/int4 weight (its layer list shows none): the builder dequantized "
            f"the weights while building, so this plan is as large as an fp16 one; GEMM/convolution inputs: {types}"
        )
    return (
        f"weight-only: the plan stores {' and '.join(stored)}, dequantized to 16-bit floats in front "
        f"of their layer ({summary['compute_layers_with_low_precision_weights']} of {summary['compute_layers']} "
        f"GEMM/convolution layers read them directly); activations are not quantized (GEMM/convolution inputs: "
        f"{types})"
    )


def _fp8_note(summary: dict[str, Any]) -> str:
    fp8 = (summary.get("compute_layers_with_low_precision_inputs") or {}).get("FP8", 0)
    weights = (summary.get("low_precision_weights") or {}).get("FP8", {"tensors": 0, "bytes": 0})
    types = ", ".join(f"{n} {t}" for t, n in (summary.get("compute_input_types") or {}).items())
    return (
        f"fp8: {fp8} of {summary['compute_layers']} GEMM/convolution layers take FP8 activations, "
        f"{weights['tensors']} FP8 weight tensors ({_mib(weights['bytes'])}); GEMM/convolution inputs: {types}; "
        "everything else computes in the graph's own float types"
    )


def precision_notes(runtime: str, precision: str, summary: dict[str, Any] | None) -> list[str]:
    """What the manifest (and a build-time warning for int8 on TensorRT-RTX) says the plan really computes, read from
    its layer list."""
    summary = summary or {}
    if runtime == TENSORRT_RTX and precision == "int8":
        return [
            RTX_INT8_NOTE.format(
                int8=summary.get("compute_layers_with_int8_inputs", "?"), total=summary.get("compute_layers", "?")
            )
        ]
    if not summary:
        return []
    if precision in WEIGHT_ONLY_PRECISIONS:
        return [_weights_note(summary, precision)]
    if precision == "fp8":
        return [_fp8_note(summary)]
    return []
