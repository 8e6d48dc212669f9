"""Precision variants of an exported ONNX graph and the calibration inputs they are built from.

TensorRT 11 is strongly typed, so precision lives in the ONNX graph itself: ``precision`` makes fp16/bf16
(fp32 islands for LayerNorm) and int8 (symmetric Q/DQ) variants; ``dataset`` draws and loads calibration
images with their provenance; ``graph`` holds the checks every variant must pass. Nothing here imports
onnxruntime or modelopt at module level.
"""

from mtlora_deploy.calib.dataset import draw_calibration_set, load_calibration, read_provenance
from mtlora_deploy.calib.graph import (
    count_qdq_nodes,
    io_dtypes,
    layernorm_input_dtypes,
    tensor_dtypes,
    zero_points_nonzero,
)
from mtlora_deploy.calib.precision import PRECISIONS, make_precision_variant, read_precision_metadata

__all__ = [
    "PRECISIONS",
    "count_qdq_nodes",
    "draw_calibration_set",
    "io_dtypes",
    "layernorm_input_dtypes",
    "load_calibration",
    "make_precision_variant",
    "read_precision_metadata",
    "read_provenance",
    "tensor_dtypes",
    "zero_points_nonzero",
]
