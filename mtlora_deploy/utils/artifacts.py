"""What kind of artefact a path is, and the names every layer shares: graph precisions, int4 block sizes and plan
suffixes.

Defined once here, at the bottom of the package, so ``calib``, ``deploy``, ``engines``, ``profile`` and the CLI agree
without importing each other.
"""

from __future__ import annotations

from pathlib import Path

from mtlora_deploy.errors import ConfigError

# The precisions an ONNX graph (and so a strongly typed engine built from it) can have: float types, Q/DQ of
# activations and weights (int8, fp8: calibrated on images), and weight-only quantized GEMM weights (int8 per output
# channel, int4 block-wise; fp16 activations).
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8", "int8-wo", "int4-wo")
CALIBRATED_PRECISIONS = ("int8", "fp8")
WEIGHT_ONLY_PRECISIONS = ("int8-wo", "int4-wo")
ONNX_SUFFIX = ".onnx"
PLAN_SUFFIXES = (".plan", ".engine", ".trt")
# int4-wo: int4 weights per scale along the reduction axis (calib.weight_only's blocked DequantizeLinear).
BLOCK_SIZES = (16, 32, 64, 128, 256)
DEFAULT_BLOCK_SIZE = 32  # divides every reduction width of Swin-T (96 * 2^k) and of the decoders


def check_block_size(block_size: int) -> int:
    """``block_size``: one of :data:`BLOCK_SIZES`, checked before any work."""
    if block_size not in BLOCK_SIZES:
        raise ConfigError(
            f"got {block_size}, expected one of {', '.join(map(str, BLOCK_SIZES))} "
            f"(int4 weights per scale along the reduction axis; default {DEFAULT_BLOCK_SIZE})",
            field="block_size",
        )
    return block_size


def artifact_kind(path: str | Path) -> str:
    """``onnx``, ``plan`` or ``checkpoint`` (a run or checkpoint folder, or a checkpoint file), from the suffix."""
    suffix = Path(path).suffix
    if suffix == ONNX_SUFFIX:
        return "onnx"
    return "plan" if suffix in PLAN_SUFFIXES else "checkpoint"
