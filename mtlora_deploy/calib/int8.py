"""int8 variants: symmetric Q/DQ on GEMM/Conv inputs, calibrated on CPU, heads' last layers left in fp32.

Activation ranges always come from one streaming pass (``ranges.collect_ranges``, bounded memory) or its
cache (``cache``); the Q/DQ graph is then written by NVIDIA ModelOpt ONNX PTQ when installed, else by
ONNX Runtime's ``quantize_static`` from those ranges, with settings chosen for TensorRT's explicit quantization:
QDQ format, int8 symmetric activations and weights (zero points 0), per-channel weights (MatMul along
the output axis), biases left in float, Q/DQ only on the inputs of MatMul/Gemm/Conv (not on their outputs,
so LayerNorm, Softmax, GELU and residual adds read float values), and each task head's final GEMM/Conv
excluded.
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from mtlora_deploy.calib.cache import RangeCache, read_range_cache, write_range_cache, write_tensorrt_cache
from mtlora_deploy.calib.dataset import read_provenance
from mtlora_deploy.calib.graph import GEMM_OPS
from mtlora_deploy.calib.ranges import RANGE_METHODS, RangeSettings, collect_ranges
from mtlora_deploy.calib.tools import CastResult, package_version
from mtlora_deploy.errors import ConfigError
from mtlora_deploy.utils.hashing import file_sha256
from mtlora_deploy.utils.imports import require
from mtlora_deploy.utils.noise import quiet_known_noise

CALIBRATION_METHODS = RANGE_METHODS


def check_method(method: str) -> str:
    """Validate ``calibration_method`` before any work is done."""
    if method not in CALIBRATION_METHODS:
        raise ConfigError(
            f"got {method!r}, expected one of {', '.join(CALIBRATION_METHODS)}", field="calibration_method"
        )
    return method


def with_modelopt(
    source: Path,
    input_name: str,
    sample: np.ndarray,
    ranges: dict[str, list[float]],
    method: str,
    nodes_to_exclude: list[str],
) -> CastResult:
    """ModelOpt ONNX PTQ from the streamed ranges, float32 kept for everything not quantized (ORT CPU runs it).

    ModelOpt's own calibration keeps all images in memory, so it gets the ranges measured by
    :func:`~mtlora_deploy.calib.ranges.collect_ranges` as a TensorRT calibration cache and only ``sample``
    (one small batch) as data. Not exercised on machines without ``nvidia-modelopt``.
    """
    quantization = require("modelopt.onnx.quantization", extra="int8")
    patterns = [f"^{re.escape(name)}$" for name in nodes_to_exclude]  # ModelOpt matches names as regexes
    with tempfile.TemporaryDirectory(prefix="mtlora_int8_") as tmp:
        output = Path(tmp) / "int8.onnx"
        cache = write_tensorrt_cache(Path(tmp) / "calib.cache", ranges, method)
        quantization.quantize(
            onnx_path=str(source),
            quantize_mode="int8",
            calibration_data={input_name: sample},
            calibration_cache_path=str(cache),
            calibration_method="max" if method == "max" else "entropy",
            calibration_eps=["cpu"],
            op_types_to_quantize=list(GEMM_OPS),
            nodes_to_exclude=patterns,
            output_path=str(output),
            high_precision_dtype="fp32",
            use_zero_point=False,
        )
        model = onnx.load(output)
    settings = {
        "calibration_method": method,
        "calibration_eps": ["cpu"],
        "op_types_to_quantize": list(GEMM_OPS),
        "high_precision_dtype": "fp32",
        "use_zero_point": False,
        "ranges": "calibration cache",
    }
    return CastResult(
        model, "modelopt.onnx.quantization", package_version("modelopt"), settings, list(nodes_to_exclude)
    )


def ort_settings(method: str, per_channel: bool = True) -> dict:
    """The ``quantize_static`` keyword arguments (besides model paths and ranges) of the ONNX Runtime writer."""
    q = require("onnxruntime.quantization")
    return {
        "quant_format": q.QuantFormat.QDQ,
        "op_types_to_quantize": list(GEMM_OPS),
        "per_channel": per_channel,
        "activation_type": q.QuantType.QInt8,
        "weight_type": q.QuantType.QInt8,
        "calibrate_method": _ort_method(method),
        "extra_options": {
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
            "CalibTensorRangeSymmetric": True,
            "OpTypesToExcludeOutputQuantization": list(GEMM_OPS),
        },
    }


def _ort_method(method: str):
    q = require("onnxruntime.quantization")
    return {
        "entropy": q.CalibrationMethod.Entropy,
        "max": q.CalibrationMethod.MinMax,
        "percentile": q.CalibrationMethod.Percentile,
    }[method]


def write_ort_ranges(ranges: dict[str, list[float]], method: str, path: Path, ort_method: Any = None) -> Path:
    """The ranges as ONNX Runtime's own calibration cache (``TensorsData`` JSON), which ``quantize_static`` reads;
    ``ort_method`` labels it with another of its methods (its FP8 mode accepts only ``Distribution``)."""
    calibrate = require("onnxruntime.quantization.calibrate")
    data = {
        name: calibrate.TensorData(lowest=np.float32(low), highest=np.float32(high))
        for name, (low, high) in ranges.items()
    }
    calibrate.save_tensors_data(calibrate.TensorsData(ort_method or _ort_method(method), data), path)
    return path


def quantize_from_cache(
    source: Path, output: Path, cache: Path, nodes_to_exclude: list[str], settings: dict[str, Any]
) -> onnx.ModelProto:
    """ONNX Runtime's ``quantize_static`` from ``source`` to ``output`` with the ranges of calibration ``cache`` (no
    data reader: it never calibrates itself), its known log noise held back; returns the written graph."""
    q = require("onnxruntime.quantization")
    with quiet_known_noise():  # its "consider pre-processing" log line is not for our users
        q.quantize_static(
            source,
            output,
            calibration_data_reader=None,
            calibration_cache_path=cache,
            nodes_to_exclude=list(nodes_to_exclude),
            **settings,
        )
    return onnx.load(output)


def with_onnxruntime(
    source: Path, ranges: dict[str, list[float]], method: str, nodes_to_exclude: list[str], per_channel: bool = True
) -> CastResult:
    """``quantize_static`` writes the Q/DQ graph from precomputed ``ranges`` (it never calibrates itself)."""
    settings = ort_settings(method, per_channel)
    with tempfile.TemporaryDirectory(prefix="mtlora_int8_") as tmp:
        output = Path(tmp) / "int8.onnx"
        cache = write_ort_ranges(ranges, method, Path(tmp) / "ranges.json")
        model = quantize_from_cache(source, output, cache, nodes_to_exclude, settings)
    recorded = {
        **settings,
        "quant_format": "QDQ",
        "activation_type": "QInt8",
        "weight_type": "QInt8",
        "calibrate_method": method,
    }
    return CastResult(
        model,
        "onnxruntime.quantization.quantize_static",
        package_version("onnxruntime"),
        recorded,
        list(nodes_to_exclude),
    )


def default_cache_path(source: Path, method: str) -> Path:
    """Where the ranges of ``model.fp32.onnx`` go unless told otherwise: ``model.fp32.ranges-entropy.json``."""
    return source.with_name(f"{source.stem}.ranges-{method}.json")


def calibration_summary(calibration: Path, images: int) -> dict[str, Any]:
    """The calibration set as the cache and the metadata name it: file, digests, count, split, dataset."""
    provenance = read_provenance(calibration) or {}
    return {
        "file": str(calibration),
        "sha256": file_sha256(calibration),
        "images": images,
        "split": provenance.get("split"),
        "array_sha256": provenance.get("array_sha256"),
        "dataset_root": provenance.get("dataset_root"),
        "seed": provenance.get("seed"),
    }


def calibrated_ranges(
    source: Path,
    images: Any,
    calibration: Path | None,
    input_name: str,
    settings: RangeSettings,
    cache_path: Path | None,
    explicit_cache: bool,
    show_progress: bool = True,
) -> tuple[RangeCache, bool]:
    """The int8 ranges of ``source``: from the cache when it matches, else one streaming pass (then cached).

    Returns the cache and whether it was reused. A cache passed explicitly that belongs to another graph,
    calibration set or method is refused; the default cache beside the graph is silently recomputed.
    """
    graph_sha = file_sha256(source)
    calibration_sha = file_sha256(calibration) if calibration is not None else None
    if cache_path is not None and (explicit_cache or cache_path.is_file()):
        if cache_path.is_file():
            cache = read_range_cache(cache_path)
            problems = cache.mismatches(graph_sha, settings.to_dict(), calibration_sha)
            if not problems:
                return cache, True
            if explicit_cache:
                raise ConfigError(
                    f"calibration cache {cache_path} does not fit {source.name}: {problems[0]}; "
                    "pass the matching graph, or delete the cache to recalibrate"
                )
    if images is None:
        raise ConfigError(
            "int8 needs calibration images: pass `calibration` FILE.npz (draw one with: mtlora calibrate "
            "--data DIR --split train -o calib/train.npz) or a matching `calibration_cache`",
            field="calibration",
        )
    start = time.perf_counter()
    ranges = collect_ranges(source, images, input_name, settings, show_progress=show_progress)
    cache = RangeCache(
        graph_sha256=graph_sha,
        settings=settings.to_dict(),
        calibration=calibration_summary(calibration, len(images)) if calibration else {},
        ranges={k: [float(lo), float(hi)] for k, (lo, hi) in ranges.items()},
        images=len(images),
        seconds=time.perf_counter() - start,
        tool=f"mtlora_deploy.calib.ranges + onnxruntime {package_version('onnxruntime')}",
        graph_file=str(source),
    )
    if cache_path is not None:
        write_range_cache(cache_path, cache)
    return cache, False
