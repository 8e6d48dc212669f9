"""int8-wo / int4-wo variants: GEMM and convolution weights stored in 8 or 4 bits and dequantized in front of their
layer, activations in fp16: smaller plans and less memory traffic at batch 1, no calibration images.

The graph is the fp16 variant (LayerNorm and overflowing nodes in fp32, I/O float32) in which each selected weight
initializer ``W`` becomes ``DequantizeLinear(Wq, scale) -> W`` (symmetric: no zero point, which TensorRT requires):

- ``int8-wo``: int8 per output channel (MatMul: the weight's last axis; Gemm: by ``transB``; Conv: axis 0);
- ``int4-wo``: int4 in blocks of ``block_size`` along the reduction axis (opset 21 blocked DequantizeLinear) for
  MatMul/Gemm weights. TensorRT blocks only the last two axes ("The blocking dimension must be the last or second to
  last dimension"), which for a convolution weight ``[out, in, kh, kw]`` are the kernel window, so convolutions get
  int8 per output channel.

ONNX Runtime's quantizer writes no weight-only Q/DQ graph (``quantize_static`` needs activation ranges for every
quantized node; ``MatMulNBitsQuantizer``'s QDQ mode takes rank-2 MatMul weights only, while the merged model also has
Gemm and rank-3 task-batched MatMul weights), so the graph edit is here and the numbers are its ``quant_utils``':
scales (``compute_scale_zp_blocked``) and rounding and clipping (``quantize_nparray``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mtlora_deploy.calib.graph import GEMM_OPS
from mtlora_deploy.calib.tools import CastResult, package_version
from mtlora_deploy.errors import ConfigError
from mtlora_deploy.utils.imports import require

WEIGHT_BITS = {"int8-wo": 8, "int4-wo": 4}
BLOCK_SIZES = (16, 32, 64, 128, 256)
DEFAULT_BLOCK_SIZE = 32  # divides every reduction width of Swin-T (96 * 2^k) and of the decoders
# DequantizeLinear takes fp16 scales from opset 19, int4 values and block_size from opset 21.
OPSETS = {8: 19, 4: 21}


def check_block_size(block_size: int) -> int:
    """``block_size``: one of :data:`BLOCK_SIZES`, checked before any work."""
    if block_size not in BLOCK_SIZES:
        raise ConfigError(
            f"got {block_size}, expected one of {', '.join(map(str, BLOCK_SIZES))} "
            f"(int4 weights per scale along the reduction axis; default {DEFAULT_BLOCK_SIZE})",
            field="block_size",
        )
    return block_size


@dataclass(frozen=True)
class WeightSlot:
    """One GEMM/convolution weight to quantize: its layer, the initializer, and the axes that matter.

    Attributes:
        node: the consuming node's name.
        op_type: ``MatMul``, ``Gemm`` or ``Conv``.
        weight: the initializer's name.
        out_axis: the output-channel axis (one int8 scale per index).
        k_axis: the reduction axis (int4 blocks run along it).
    """

    node: str
    op_type: str
    weight: str
    out_axis: int
    k_axis: int


def _axes(node: onnx.NodeProto, rank: int) -> tuple[int, int] | None:
    """(output-channel axis, reduction axis) of ``node``'s weight input, or None when it has none we handle."""
    if node.op_type == "Conv":
        return 0, 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return (0, 1) if trans_b else (1, 0)
    return (rank - 1, rank - 2) if rank >= 2 else None


def _slot(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> WeightSlot | None:
    """The weight slot of a MatMul/Gemm/Conv node whose input B is a float initializer, else None."""
    if node.op_type not in GEMM_OPS or len(node.input) < 2:
        return None
    weight = initializers.get(node.input[1])
    if weight is None or weight.data_type not in (TensorProto.FLOAT, TensorProto.FLOAT16):
        return None
    axes = _axes(node, len(weight.dims))
    return WeightSlot(node.name, node.op_type, weight.name, *axes) if axes else None


def weight_slots(model: onnx.ModelProto, excluded: set[str] | list[str] = ()) -> list[WeightSlot]:
    """The float weight initializers read as input B by MatMul/Gemm/Conv nodes not in ``excluded``."""
    initializers = {i.name: i for i in model.graph.initializer}
    slots = [_slot(node, initializers) for node in model.graph.node if node.name not in excluded]
    return [s for s in slots if s is not None]


def _per_channel(values: np.ndarray, axis: int, quant_type: int) -> tuple[np.ndarray, np.ndarray]:
    """(quantized values, 1-D scales) with one symmetric scale per index of ``axis``."""
    quant_utils = require("onnxruntime.quantization.quant_utils")
    columns = np.moveaxis(values, axis, -1).reshape(-1, values.shape[axis])
    _, scale = quant_utils.compute_scale_zp_blocked(columns, quant_type, 0, columns.shape[0], True)
    shape = [1] * values.ndim
    shape[axis] = -1
    return _quantize(values, scale.reshape(shape), quant_type), scale.reshape(-1)


def _blocked(values: np.ndarray, axis: int, block_size: int, quant_type: int) -> tuple[np.ndarray, np.ndarray]:
    """(quantized values, scales of ``values``' rank with ``ceil(K / block_size)`` along ``axis``)."""
    quant_utils = require("onnxruntime.quantization.quant_utils")
    lead = values.reshape(-1, *values.shape[-2:])  # rank 2 (or task-batched rank 3): blocks within each matrix
    k = axis - values.ndim + 2
    scales = np.stack([quant_utils.compute_scale_zp_blocked(m, quant_type, k, block_size, True)[1] for m in lead])
    scales = scales.reshape(*values.shape[:-2], *scales.shape[1:])
    full = np.repeat(scales, block_size, axis=axis).take(np.arange(values.shape[axis]), axis=axis)
    return _quantize(values, full, quant_type), scales


def _quantize(values: np.ndarray, scale: np.ndarray, quant_type: int) -> np.ndarray:
    quant_utils = require("onnxruntime.quantization.quant_utils")
    zero = np.zeros((), dtype=quant_utils.ONNX_TYPE_TO_NP_TYPE[quant_type])
    return quant_utils.quantize_nparray(quant_type, values, scale, zero)


def _format(slot: WeightSlot, bits: int, shape: tuple[int, ...], block_size: int) -> tuple[int, int, int]:
    """(quant type, axis, block size or 0) of a weight: int4 blocks along the reduction axis of a MatMul/Gemm weight
    when it is one of the last two axes and a whole number of blocks long, int8 per output channel otherwise.

    TensorRT reads the block size as ``K / scales along K``, so a last, partial block (ONNX allows it) would be
    dequantized with the wrong scales there; the parser refuses it only when the division is not exact.
    """
    k = slot.k_axis
    if bits == 4 and slot.op_type != "Conv" and k >= len(shape) - 2 and shape[k] % block_size == 0:
        return TensorProto.INT4, k, block_size
    return TensorProto.INT8, slot.out_axis, 0


def _dequantize_node(
    init: onnx.TensorProto, slot: WeightSlot, bits: int, block_size: int
) -> tuple[onnx.NodeProto, list[onnx.TensorProto], str]:
    """The DequantizeLinear node standing in for ``init``, its two initializers, and a label of its format."""
    values = numpy_helper.to_array(init)
    quant_type, axis, block = _format(slot, bits, values.shape, block_size)
    if block:
        quantized, scale = _blocked(values, axis, block, quant_type)
    else:
        quantized, scale = _per_channel(values, axis, quant_type)
    names = (f"{init.name}_quantized", f"{init.name}_scale")
    attributes = {"axis": axis, **({"block_size": block} if block else {})}
    node = helper.make_node(
        "DequantizeLinear",
        list(names),
        [f"{init.name}_dequantized"],
        name=f"{init.name}_DequantizeLinear",
        **attributes,
    )
    tensors = [
        numpy_helper.from_array(quantized, names[0]),
        numpy_helper.from_array(scale.astype(values.dtype), names[1]),
    ]
    return node, tensors, f"int4 blocks of {block}" if block else "int8 per output channel"


def quantize_weights(
    model: onnx.ModelProto, precision: str, excluded: list[str] | set[str] = (), block_size: int = DEFAULT_BLOCK_SIZE
) -> CastResult:
    """Replace the GEMM/conv weights of ``model`` (the fp16 variant; edited in place and returned) by their
    ``precision`` (``int8-wo`` / ``int4-wo``) form; nodes in ``excluded`` keep float weights."""
    if precision not in WEIGHT_BITS:
        raise ConfigError(f"weight-only precision: got {precision!r}, expected one of {', '.join(WEIGHT_BITS)}")
    bits, block_size = WEIGHT_BITS[precision], check_block_size(block_size)
    model = with_opset(model, OPSETS[bits])
    initializers, excluded = {i.name: i for i in model.graph.initializer}, set(excluded)
    done, dequantize, formats, sizes = {}, [], {}, [0, 0]
    for node in model.graph.node:
        slot = _slot(node, initializers) if node.name not in excluded else None
        if slot is None:
            continue
        if slot.weight not in done:
            init = initializers[slot.weight]
            dq, tensors, label = _dequantize_node(init, slot, bits, block_size)
            dequantize.append(dq)
            model.graph.initializer.extend(tensors)
            done[slot.weight], formats[label] = dq.output[0], formats.get(label, 0) + 1
            sizes[0] += len(init.raw_data) or numpy_helper.to_array(init).nbytes
            sizes[1] += sum(len(t.raw_data) for t in tensors)
        node.input[1] = done[slot.weight]
    nodes = [*dequantize, *model.graph.node]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    _drop_unused_initializers(model, set(done))
    return CastResult(
        model,
        "onnxruntime.quantization.quant_utils",
        package_version("onnxruntime"),
        {
            "weights": formats,
            "block_size": block_size if bits == 4 else None,
            "symmetric": True,
            "activations": "fp16 (the fp16 variant's graph)",
            "weight_bytes": {"float": sizes[0], "quantized_with_scales": sizes[1]},
        },
        sorted({*excluded} & {n.name for n in model.graph.node}),
    )


def with_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """``model`` at default-domain opset ``opset`` or later (ONNX's version converter, as ONNX Runtime's quantizer
    does for blocked weights)."""
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    if current >= opset:
        return model
    return onnx.version_converter.convert_version(model, opset)


def _drop_unused_initializers(model: onnx.ModelProto, names: set[str]) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name not in names or i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
