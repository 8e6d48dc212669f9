"""FLOP floors: multiply-accumulates per image, counted the same way for torch modules and ONNX graphs.

Torch modules are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmul, linear, convolution,
scaled-dot-product attention); ONNX graphs from the MatMul / Gemm / Conv / ConvTranspose nodes (and their
quantized forms) with the shapes that ONNX shape inference gives at batch 1. Elementwise work (norms, softmax,
GELU, resizes) is not counted by either: the number is the floor that matrix engines must do, so
``achieved GFLOP/s = 2 * GMAC * images/s`` says how close a runtime comes to the hardware.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

MAC_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv")


def torch_gmac(model: torch.nn.Module, image_size: int, device: torch.device | str = "cpu") -> float:
    """GMAC per image of ``model`` on one (1, 3, S, S) image (FlopCounterMode counts 2 FLOPs per MAC)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    images = torch.zeros(1, 3, image_size, image_size, device=device)
    counter = FlopCounterMode(display=False)
    # the math kernel spells attention as matmuls: FlopCounterMode has no formula for the fused CPU kernels
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), counter:
        model(images)
    return counter.get_total_flops() / 2e9


def predictor_gmac(predictor: Any) -> float | None:
    """GMAC per image of an opened profile predictor: torch backends (also several run one after another) count
    their module; anything else (ONNX Runtime, TensorRT) returns None and is counted from its file instead."""
    parts = getattr(predictor, "predictors", None)
    if parts is not None:
        counts = [predictor_gmac(p) for p in parts]
        return None if any(c is None for c in counts) else sum(counts)
    model = getattr(predictor, "model", None)
    if not isinstance(model, torch.nn.Module):
        return None
    return torch_gmac(model, int(predictor.image_size), getattr(predictor, "device", "cpu"))


def _dims(value_info) -> list[int | None]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def _known(shape: list[int | None] | None) -> bool:
    return shape is not None and len(shape) > 0 and all(d is not None for d in shape)


def _matmul_macs(a: list[int], b: list[int]) -> int:
    if len(a) == 1:
        a = [1, *a]
    if len(b) == 1:
        b = [*b, 1]
    batch = torch.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return math.prod(batch) * a[-2] * a[-1] * b[-1]


def _node_macs(node, shapes: dict[str, list[int | None]]) -> int | None:
    """MACs of one node, or None when a shape it needs is unknown."""
    inputs = [shapes.get(name) for name in node.input]
    if node.op_type in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        a, b = (inputs[0], inputs[1]) if node.op_type != "QLinearMatMul" else (inputs[0], inputs[3])
        return _matmul_macs(a, b) if _known(a) and _known(b) else None
    if node.op_type == "Gemm":
        a, b = inputs[0], inputs[1]
        if not (_known(a) and _known(b)):
            return None
        attrs = {attr.name: attr.i for attr in node.attribute}
        m, k = (a[1], a[0]) if attrs.get("transA") else (a[0], a[1])
        n = b[0] if attrs.get("transB") else b[1]
        return m * k * n
    weight_index = 3 if node.op_type == "QLinearConv" else 1
    weight, out = inputs[weight_index], shapes.get(node.output[0])
    if not (_known(weight) and _known(out)):
        return None
    if node.op_type == "ConvTranspose":  # weight (C_in, C_out / group, *k): every input pixel feeds C_out/g * k
        x = inputs[0]
        return math.prod(x) * weight[1] * math.prod(weight[2:]) if _known(x) else None
    return math.prod(out) * weight[1] * math.prod(weight[2:])  # weight (C_out, C_in / group, *k)


def onnx_gmac(path: str | Path) -> tuple[float | None, int]:
    """GMAC per image of an ONNX graph at batch 1, and how many MAC nodes had a shape that could not be inferred.

    The first input's batch dimension is fixed to 1 and ONNX shape inference (with data propagation) gives every
    MatMul/Gemm/Conv operand its shape. Initializers count as known shapes.
    """
    import onnx

    model = onnx.load(str(path))
    first = model.graph.input[0].type.tensor_type.shape.dim
    if first:
        first[0].Clear()
        first[0].dim_value = 1
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {v.name: _dims(v) for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    shapes.update({t.name: list(t.dims) for t in inferred.graph.initializer})
    total, unknown = 0, 0
    for node in inferred.graph.node:
        if node.op_type not in MAC_OPS:
            continue
        macs = _node_macs(node, shapes)
        if macs is None:
            unknown += 1
        else:
            total += macs
    return total / 1e9, unknown
