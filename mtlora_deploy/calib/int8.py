"""int8 variants: symmetric Q/DQ on GEMM/Conv inputs, calibrated on CPU, heads' last layers left in fp32.

The preferred tool is NVIDIA ModelOpt ONNX PTQ (``modelopt.onnx.quantization.quantize``). Without it,
ONNX Runtime's ``quantize_static`` is used with settings chosen for TensorRT's explicit quantization:
QDQ format, int8 symmetric activations and weights (zero points 0), per-channel weights (MatMul along
the output axis), biases left in float, Q/DQ only on the inputs of MatMul/Gemm/Conv (not on their outputs,
so LayerNorm, Softmax, GELU and residual adds read float values), and each task head's final GEMM/Conv
excluded.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import onnx

from mtlora_deploy.calib.graph import GEMM_OPS
from mtlora_deploy.calib.ranges import ArrayReader
from mtlora_deploy.calib.tools import CastResult, package_version
from mtlora_deploy.errors import ConfigError
from mtlora_deploy.utils.imports import require
from mtlora_deploy.utils.noise import quiet_known_noise

CALIBRATION_METHODS = ("entropy", "max")
ENTROPY_BINS = (2048, 128)  # histogram bins, quantized bins: TensorRT's entropy calibrator uses the same


def check_method(method: str) -> str:
    """Validate ``calibration_method`` before any work is done."""
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"calibration_method: got {method!r}, expected one of {', '.join(CALIBRATION_METHODS)}")
    return method


def with_modelopt(source: Path, input_name: str, images: np.ndarray, method: str,
                  nodes_to_exclude: list[str]) -> CastResult:
    """ModelOpt ONNX PTQ on the CPU EP, float32 kept for everything not quantized (so ORT CPU runs it)."""
    quantization = require("modelopt.onnx.quantization", extra="int8")
    patterns = [f"^{re.escape(name)}$" for name in nodes_to_exclude]  # ModelOpt matches names as regexes
    with tempfile.TemporaryDirectory(prefix="mtlora_int8_") as tmp:
        output = Path(tmp) / "int8.onnx"
        quantization.quantize(
            onnx_path=str(source), quantize_mode="int8", calibration_data={input_name: images},
            calibration_method=method, calibration_eps=["cpu"], op_types_to_quantize=list(GEMM_OPS),
            nodes_to_exclude=patterns, output_path=str(output), high_precision_dtype="fp32", use_zero_point=False,
        )
        model = onnx.load(output)
    settings = {"calibration_method": method, "calibration_eps": ["cpu"], "op_types_to_quantize": list(GEMM_OPS),
                "high_precision_dtype": "fp32", "use_zero_point": False}
    return CastResult(model, "modelopt.onnx.quantization", package_version("modelopt"), settings,
                      list(nodes_to_exclude))


def ort_settings(method: str) -> dict:
    """The ``quantize_static`` keyword arguments (besides model paths and data) of the fallback."""
    q = require("onnxruntime.quantization")
    return {
        "quant_format": q.QuantFormat.QDQ, "op_types_to_quantize": list(GEMM_OPS), "per_channel": True,
        "activation_type": q.QuantType.QInt8, "weight_type": q.QuantType.QInt8,
        "calibrate_method": q.CalibrationMethod.Entropy if method == "entropy" else q.CalibrationMethod.MinMax,
        "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                       "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}, "CalibTensorRangeSymmetric": True,
                          "OpTypesToExcludeOutputQuantization": list(GEMM_OPS)},
    }


def entropy_cache(source: Path, reader: ArrayReader, cache: Path) -> Path:
    """Entropy (KL) ranges with 2048 histogram bins, stored as ONNX Runtime's calibration cache.

    ``quantize_static`` would calibrate entropy with 128 bins for 128 quantized levels, which leaves a
    single candidate threshold (the max); computing the ranges here gives the real entropy thresholds.
    """
    q = require("onnxruntime.quantization")
    num_bins, num_quantized_bins = ENTROPY_BINS
    calibrator = q.create_calibrator(
        source, list(GEMM_OPS), augmented_model_path=cache.with_name("augmented.onnx"),
        calibrate_method=q.CalibrationMethod.Entropy, providers=["CPUExecutionProvider"],
        extra_options={"num_bins": num_bins, "num_quantized_bins": num_quantized_bins, "symmetric": True},
    )
    calibrator.collect_data(reader)
    q.save_tensors_data(calibrator.compute_data(), cache)
    return cache


def with_onnxruntime(source: Path, reader: ArrayReader, method: str, nodes_to_exclude: list[str]) -> CastResult:
    """``quantize_static`` with the TensorRT-friendly settings of :func:`ort_settings`."""
    q = require("onnxruntime.quantization")
    settings = ort_settings(method)
    with tempfile.TemporaryDirectory(prefix="mtlora_int8_") as tmp:
        output, data = Path(tmp) / "int8.onnx", {"calibration_data_reader": reader}
        if method == "entropy":
            data = {"calibration_cache_path": entropy_cache(source, reader, Path(tmp) / "ranges.json")}
        with quiet_known_noise():  # its "consider pre-processing" log line is not for our users
            q.quantize_static(source, output, nodes_to_exclude=list(nodes_to_exclude),
                              calibration_providers=["CPUExecutionProvider"], **data, **settings)
        model = onnx.load(output)
    recorded = {**settings, "quant_format": "QDQ", "activation_type": "QInt8", "weight_type": "QInt8",
                "calibrate_method": method}
    if method == "entropy":
        recorded["entropy_bins"] = list(ENTROPY_BINS)
    return CastResult(model, "onnxruntime.quantization.quantize_static", package_version("onnxruntime"), recorded,
                      list(nodes_to_exclude))
