"""fp8 variants: FP8 E4M3 Q/DQ on the inputs of GEMMs and convolutions, from the int8 path's streamed ranges.

The graph is written by ONNX Runtime's ``quantize_static`` (QDQ format, ``QFLOAT8E4M3FN`` activations and weights,
opset 19) with the same selection as the int8 variant: Q/DQ only on MatMul/Gemm/Conv inputs (LayerNorm, Softmax,
GELU and residual adds read float values), weights per output channel, each task head's last GEMM/Conv, the
task-batched (rank-3) weights and ``--exclude`` left in float. Only the scales differ from ONNX Runtime's own FP8
recipe (a Gaussian fit of each tensor's standard deviation, which needs a second, distribution calibration pass):
they are NVIDIA's, ``amax / 448`` (E4M3's largest finite value), with ``amax`` the streamed activation range of
:func:`~mtlora_deploy.calib.ranges.collect_ranges` (shared with int8 through the range cache) and each weight
channel's max ``|w|``, passed to ``quantize_static`` as tensor overrides.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from mtlora_deploy.calib import int8
from mtlora_deploy.calib.graph import GEMM_OPS
from mtlora_deploy.calib.tools import CastResult, package_version
from mtlora_deploy.calib.weight_only import weight_slots, with_opset
from mtlora_deploy.utils.imports import require

E4M3_MAX = 448.0
FP8_OPSET = 19  # QuantizeLinear / DequantizeLinear take float8 types from opset 19
DEFAULT_METHOD = "max"  # FP8's range needs no clipping search (ModelOpt's FP8 default is max calibration too)


def _override(amax: float, zero: np.ndarray, axis: int | None = None) -> dict:
    scale = np.array(amax / E4M3_MAX if amax > 0 else 1.0, dtype=np.float32)
    return {"scale": scale, "zero_point": zero, **({"axis": axis} if axis is not None else {})}


def scale_overrides(model: onnx.ModelProto, ranges: dict[str, list[float]], excluded: list[str]) -> dict[str, list]:
    """``TensorQuantOverrides`` for ``quantize_static``: one ``amax / 448`` scale per activation tensor and per output
    channel of each weight it will quantize (its default per-channel axis: MatMul 1, Gemm by transB, Conv 0)."""
    ml_dtypes = require("ml_dtypes")
    zero = np.array(0, dtype=ml_dtypes.float8_e4m3fn)
    overrides = {name: [_override(max(abs(lo), abs(hi)), zero)] for name, (lo, hi) in ranges.items()}
    values = {i.name: i for i in model.graph.initializer}
    for slot in weight_slots(model, set(excluded)):
        weight = numpy_helper.to_array(values[slot.weight]).astype(np.float32)
        amax = np.abs(np.moveaxis(weight, slot.out_axis, 0)).reshape(weight.shape[slot.out_axis], -1).max(axis=1)
        overrides[slot.weight] = [_override(float(a), zero, slot.out_axis) for a in amax]
    return overrides


def ort_settings() -> dict:
    """The ``quantize_static`` keyword arguments (besides paths, ranges and overrides) of the fp8 writer."""
    q = require("onnxruntime.quantization")
    return {
        "quant_format": q.QuantFormat.QDQ,
        "op_types_to_quantize": list(GEMM_OPS),
        "per_channel": True,
        "activation_type": q.QuantType.QFLOAT8E4M3FN,
        "weight_type": q.QuantType.QFLOAT8E4M3FN,
        "calibrate_method": q.CalibrationMethod.Distribution,  # the only one it accepts for FP8; scales are ours
        "extra_options": {
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
            "OpTypesToExcludeOutputQuantization": list(GEMM_OPS),
        },
    }


def with_onnxruntime(
    source: Path, ranges: dict[str, list[float]], method: str, nodes_to_exclude: list[str]
) -> CastResult:
    """``quantize_static`` writes the FP8 Q/DQ graph with the ``amax / 448`` scales (it never calibrates itself)."""
    q = require("onnxruntime.quantization")
    settings = ort_settings()
    with tempfile.TemporaryDirectory(prefix="mtlora_fp8_") as tmp:
        model, staged, output = (
            with_opset(onnx.load(source), FP8_OPSET),
            Path(tmp) / "opset19.onnx",
            Path(tmp) / "fp8.onnx",
        )
        overrides = scale_overrides(model, ranges, nodes_to_exclude)
        onnx.save(model, staged)  # at opset 19 already: the quantizer's own upgrade would log a warning
        del model
        cache = int8.write_ort_ranges(ranges, method, Path(tmp) / "ranges.json", q.CalibrationMethod.Distribution)
        extra = {**settings["extra_options"], "TensorQuantOverrides": overrides}
        model = int8.quantize_from_cache(staged, output, cache, nodes_to_exclude, {**settings, "extra_options": extra})
    recorded = {
        **settings,
        "quant_format": "QDQ",
        "activation_type": "QFLOAT8E4M3FN",
        "weight_type": "QFLOAT8E4M3FN",
        "calibrate_method": method,
        "scales": f"amax / {E4M3_MAX:g} (activations: the calibrated range; weights: per output channel)",
    }
    return CastResult(
        model,
        "onnxruntime.quantization.quantize_static",
        package_version("onnxruntime"),
        recorded,
        list(nodes_to_exclude),
    )
