"""Graph queries and checks on ONNX precision variants (pure ``onnx``; no runtime needed).

Each check is something TensorRT or accuracy depends on: non-zero zero points make TensorRT refuse a
Q/DQ graph, an fp16 LayerNorm is the classic Swin accuracy failure, and changed I/O dtypes would break
every caller that feeds float32 images.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from mtlora_deploy.errors import ConfigError

GEMM_OPS = ("MatMul", "Gemm", "Conv")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def dtype_name(elem_type: int) -> str:
    """ONNX element type -> numpy-style name (``1`` -> ``float32``, ``10`` -> ``float16``, ``16`` -> ``bfloat16``)."""
    return "bfloat16" if elem_type == TensorProto.BFLOAT16 else str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))


def io_dtypes(model: onnx.ModelProto) -> dict[str, str]:
    """``{name: dtype}`` of every graph input and output (a variant must keep the fp32 graph's)."""
    values = [*model.graph.input, *model.graph.output]
    return {v.name: dtype_name(v.type.tensor_type.elem_type) for v in values}


def tensor_dtypes(model: onnx.ModelProto) -> dict[str, str]:
    """``{tensor: dtype}`` for every tensor shape inference can type (inputs, outputs, initializers, values).

    Inference starts from a copy without ``value_info``: converters leave stale annotations behind.
    """
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]
    graph = onnx.shape_inference.infer_shapes(bare).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    types.update({init.name: init.data_type for init in graph.initializer})
    for node in graph.node:  # Constant outputs are not always in value_info
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR:
            types.setdefault(node.output[0], node.attribute[0].t.data_type)
    return {name: dtype_name(t) for name, t in types.items() if t}


def layernorm_input_dtypes(model: onnx.ModelProto) -> dict[str, str]:
    """``{LayerNormalization node: dtype of its data input}`` (must be float32 in fp16/bf16 graphs)."""
    types = tensor_dtypes(model)
    return {
        n.name or n.output[0]: types.get(n.input[0], "unknown")
        for n in model.graph.node
        if n.op_type == "LayerNormalization"
    }


def count_qdq_nodes(model: onnx.ModelProto) -> dict[str, int]:
    """Number of QuantizeLinear and DequantizeLinear nodes."""
    counts = Counter(n.op_type for n in model.graph.node if n.op_type in QDQ_OPS)
    return {op: counts.get(op, 0) for op in QDQ_OPS}


def _constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR:
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def zero_points_nonzero(model: onnx.ModelProto) -> list[str]:
    """Q/DQ nodes whose zero point is non-zero or not a constant (TensorRT accepts only symmetric Q/DQ).

    A missing zero-point input means 0 and is fine.
    """
    values, bad = _constant_values(model), []
    for node in model.graph.node:
        if node.op_type not in QDQ_OPS or len(node.input) < 3 or not node.input[2]:
            continue
        zero_point = values.get(node.input[2])
        if zero_point is None or np.any(zero_point != 0):
            bad.append(node.name or node.output[0])
    return bad


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """``{tensor: node that writes it}``."""
    return {out: node for node in model.graph.node for out in node.output}


def batched_weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMul nodes whose constant operand has rank > 2 (the task-batched (T, C, w) weights of the merged model).

    Per-channel INT8 of a MatMul weight is per output column of a 2-D matrix (ONNX Runtime's MatMulIntegerToFloat
    refuses other zero-point shapes, TensorRT's per-channel scales are per column too), so these stay float.
    """
    values, by_output, found = _constant_values(model), producers(model), []
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        for name in node.input:
            source = by_output.get(name)
            while source is not None and source.op_type in ("Transpose", "Reshape", "Unsqueeze") and name not in values:
                name = source.input[0]
                source = by_output.get(name)
            if name in values and values[name].ndim > 2:
                found.append(node.name or node.output[0])
                break
    return found


def last_gemm_nodes(
    model: onnx.ModelProto, outputs: Iterable[str] | None = None, op_types: tuple[str, ...] = GEMM_OPS
) -> dict[str, list[str]]:
    """``{output: names of the last MatMul/Gemm/Conv on its paths}``: each task head's final layer(s).

    Found by walking back from the graph output through non-GEMM ops (Resize, Concat, Slice, activations...) and
    stopping at every GEMM reached, so it does not depend on how an exporter names nodes, and a merged model whose
    per-task final layers are concatenated before one shared resize names all of them for every output. Shape
    computations (``Shape``/``Size``) are not followed: they read no values.
    """
    by_output, found = producers(model), {}
    for output in outputs or [o.name for o in model.graph.output]:
        frontier, seen, last = [output], set(), []
        while frontier:
            node = by_output.get(frontier.pop(0))
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type in op_types:
                last.append(node.name)
            elif node.op_type not in ("Shape", "Size"):
                frontier.extend(i for i in node.input if i)
        found[output] = last
    return found


def head_layers(model: onnx.ModelProto) -> list[str]:
    """Every task head's final GEMM/Conv (:func:`last_gemm_nodes` of all outputs), sorted."""
    return sorted({name for names in last_gemm_nodes(model).values() for name in names})


def ops_without_dtype(model: onnx.ModelProto, elem_type: int) -> list[str]:
    """Op types of the graph whose schema, at the graph's opset, does not accept ``elem_type`` for its data.

    E.g. Conv only accepts bfloat16 from opset 22; such ops must stay in float32 in a bf16 graph.
    """
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    wanted, missing = onnx.helper.tensor_dtype_to_string(elem_type).replace("TensorProto.", ""), []
    for op_type in sorted({n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")}):
        schema = onnx.defs.get_schema(op_type, opset)
        float_constraints = [c for c in schema.type_constraints if "tensor(float)" in c.allowed_type_strs]
        if float_constraints and not any(f"tensor({wanted.lower()})" in c.allowed_type_strs for c in float_constraints):
            missing.append(op_type)
    return missing


def select_nodes(model: onnx.ModelProto, patterns: Iterable[str], field: str = "nodes_to_exclude") -> list[str]:
    """Names of the nodes ``patterns`` pick: each is an exact node name, an op type (``Conv``), or a regular
    expression matched against whole node names (``.*attn.*MatMul.*``). A pattern that picks nothing is an
    error naming the closest node names, so a typo never silently quantizes what was meant to stay fp32.
    """
    import difflib
    import re

    names = [n.name for n in model.graph.node if n.name]
    op_types = {n.op_type for n in model.graph.node}
    picked: list[str] = []
    for pattern in patterns:
        if pattern in op_types:
            found = [n.name for n in model.graph.node if n.op_type == pattern and n.name]
        else:
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise ConfigError(
                    f"`{field}` {pattern!r}: not a node name, op type or valid regex ({exc})", field=field
                ) from exc
            found = [name for name in names if regex.fullmatch(name)]
        if not found:
            close = difflib.get_close_matches(pattern, [*names, *sorted(op_types)], n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see the node names with Netron or onnx"
            raise ConfigError(f"`{field}` {pattern!r} matches no node of the graph{hint}", field=field)
        picked.extend(found)
    return list(dict.fromkeys(picked))
