"""fp16 / bf16 variants: low precision everywhere except LayerNorm and nodes whose values overflow fp16.

The preferred tool is NVIDIA ModelOpt AutoCast (``modelopt.onnx.autocast``). Without it, ONNX Runtime's
maintained float16 converter (``onnxruntime.transformers.float16``) is used with the same rules: an fp32
op block list (LayerNormalization, plus ops the converter always keeps), a node block list from an
activation-range scan (|x| > ``data_max``) and initializers beyond the fp16 range, and graph I/O kept fp32.
A bf16 graph is that fp16 graph re-typed to bfloat16 (ops whose ONNX schema lacks bf16 stay fp32).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from mtlora_deploy.calib.cleanup import drop_value_info, fold_cast_pairs, topological_sort
from mtlora_deploy.calib.graph import ops_without_dtype
from mtlora_deploy.calib.ranges import ArrayReader, activation_max_abs
from mtlora_deploy.calib.tools import CastResult, package_version
from mtlora_deploy.utils.imports import require

KEEP_FP32_OPS = ("LayerNormalization",)
DEFAULT_DATA_MAX = 512.0  # ModelOpt AutoCast's default threshold on |activation|
FP16_MAX = float(np.finfo(np.float16).max)
LOW_TYPES = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}


def with_modelopt(
    source: Path,
    precision: str,
    keep_fp32_ops: tuple[str, ...],
    nodes_to_exclude: list[str],
    data_max: float,
    calibration: Path | None,
) -> CastResult:
    """ModelOpt AutoCast with the I/O types kept and ``keep_fp32_ops`` excluded."""
    autocast = require("modelopt.onnx.autocast", extra="int8")
    patterns = [f"^{re.escape(name)}$" for name in nodes_to_exclude]  # AutoCast reads names as regexes
    model = autocast.convert_to_mixed_precision(
        onnx_path=str(source),
        low_precision_type=precision,
        nodes_to_exclude=patterns or None,
        op_types_to_exclude=list(keep_fp32_ops),
        data_max=data_max,
        init_max=FP16_MAX,
        keep_io_types=True,
        calibration_data=str(calibration) if calibration else None,
    )
    settings = {
        "op_types_to_exclude": list(keep_fp32_ops),
        "data_max": data_max,
        "init_max": FP16_MAX,
        "keep_io_types": True,
    }
    return CastResult(
        model, "modelopt.onnx.autocast", package_version("modelopt"), settings, _fp32_compute_nodes(model)
    )


def overflow_nodes(model: onnx.ModelProto, max_abs: dict[str, float], data_max: float) -> list[str]:
    """Nodes with an output beyond ``data_max`` or an initializer input beyond the fp16 range."""
    big_inits = {
        i.name
        for i in model.graph.initializer
        if i.data_type == TensorProto.FLOAT and np.abs(numpy_helper.to_array(i)).max(initial=0) > FP16_MAX
    }
    return [
        n.name
        for n in model.graph.node
        if any(max_abs.get(o, 0.0) > data_max for o in n.output) or big_inits.intersection(n.input)
    ]


def with_onnxruntime(
    source: Path,
    precision: str,
    keep_fp32_ops: tuple[str, ...],
    nodes_to_exclude: list[str],
    data_max: float,
    reader: ArrayReader,
) -> CastResult:
    """ONNX Runtime's float16 converter with the same fp32 rules as AutoCast (see the module docstring)."""
    float16 = require("onnxruntime.transformers.float16")
    model = onnx.load(source)
    blocked_ops = sorted({*float16.DEFAULT_OP_BLOCK_LIST, *keep_fp32_ops})
    if precision == "bf16":
        blocked_ops = sorted({*blocked_ops, *ops_without_dtype(model, TensorProto.BFLOAT16)})
    blocked_nodes = sorted({*overflow_nodes(model, activation_max_abs(source, reader), data_max), *nodes_to_exclude})
    converted = float16.convert_float_to_float16(
        onnx.load(source),
        keep_io_types=True,
        op_block_list=blocked_ops,
        node_block_list=blocked_nodes,
    )
    if precision == "bf16":
        converted = retype_float16_to_bfloat16(converted, model)
    drop_value_info(converted)
    topological_sort(converted)
    fold_cast_pairs(converted)
    settings = {
        "op_block_list": [op for op in blocked_ops if op in _op_types(model)],
        "data_max": data_max,
        "init_max": FP16_MAX,
        "keep_io_types": True,
        "range_images": len(reader.images),
        "node_block_list": blocked_nodes,
    }
    return CastResult(
        converted,
        "onnxruntime.transformers.float16",
        package_version("onnxruntime"),
        settings,
        _fp32_compute_nodes(converted),
    )


def _bfloat16_tensor(values: np.ndarray, name: str) -> TensorProto:
    ml_dtypes = require("ml_dtypes")
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32).astype(ml_dtypes.bfloat16), name)


def _float16_tensors(model: onnx.ModelProto):
    """(key, tensor) for every fp16 initializer and tensor attribute; key = the tensor a Constant writes."""
    for init in model.graph.initializer:
        if init.data_type == TensorProto.FLOAT16:
            yield init.name, init
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT16:
                yield (node.output[0] if node.op_type == "Constant" else None), attr.t


def retype_float16_to_bfloat16(converted: onnx.ModelProto, source: onnx.ModelProto) -> onnx.ModelProto:
    """Turn every fp16 type of ``converted`` into bf16, taking constants from the fp32 ``source`` (no fp16 clipping)."""
    originals = {init.name: init for init in source.graph.initializer}
    originals.update(
        {
            n.output[0]: n.attribute[0].t
            for n in source.graph.node
            if n.op_type == "Constant" and n.attribute and n.attribute[0].type == onnx.AttributeProto.TENSOR
        }
    )
    for key, tensor in list(_float16_tensors(converted)):
        values = numpy_helper.to_array(originals.get(key, tensor))
        tensor.CopyFrom(_bfloat16_tensor(values, tensor.name))
    for node in converted.graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT16:
                attr.i = TensorProto.BFLOAT16
    for value in [*converted.graph.value_info, *converted.graph.input, *converted.graph.output]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT16:
            value.type.tensor_type.elem_type = TensorProto.BFLOAT16
    return converted


def _op_types(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


def _fp32_compute_nodes(model: onnx.ModelProto) -> list[str]:
    """Non-trivial nodes that still compute in float32 (for the metadata: what stayed high precision)."""
    from mtlora_deploy.calib.graph import tensor_dtypes

    types, skip = tensor_dtypes(model), {"Cast", "Shape", "Constant", "Reshape", "Transpose", "Unsqueeze", "Squeeze"}
    return [
        n.name for n in model.graph.node if n.op_type not in skip and n.output and types.get(n.output[0]) == "float32"
    ]
