"""Clean-ups of the exported graph that the exporter's own optimizer leaves out.

- Pad nodes with all-zero pads: timm and the multi-stream block always call ``F.pad`` (a no-op when the token
  grid tiles into windows, as the export checks), and the exporter keeps them.
- Constant folding of large initializer-only subgraphs: the exporter folds only inputs below 8,192 elements,
  so weight transposes of bias-free linears and the row slices of the stacked task A's stay as nodes.
- The exact GELU's halving moved last (``reorder_gelu_half``), the order ONNX Runtime fuses into one Gelu kernel.
"""

from __future__ import annotations

from onnxscript import ir, optimizer

FOLD_LIMIT = 1 << 22  # elements (16 MiB in float32): above every weight of Swin-B


def remove_noop_pads(graph: ir.Graph) -> int:
    """Drop every ``Pad`` whose pads are a constant of zeros; returns how many were removed."""
    removed = 0
    for node in list(graph):
        if node.op_type != "Pad" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
            continue
        pads = ir.convenience.get_const_tensor(node.inputs[1]) if node.inputs[1] is not None else None
        if pads is None or pads.numpy().any() or node.outputs[0].is_graph_output():
            continue
        ir.convenience.replace_all_uses_with(node.outputs[0], node.inputs[0])
        graph.remove(node, safe=True)
        removed += 1
    return removed


def simplify_graph(model: ir.Model) -> ir.Model:
    """No-op pads out, then the exporter's own optimisation (torch.onnx ``optimize=True``) with a larger fold limit.

    Runs instead of the exporter's pass (export with ``optimize=False``): the rewriter is the slow part of an export.
    """
    remove_noop_pads(model.graph)
    optimizer.optimize_ir(model, input_size_limit=FOLD_LIMIT, output_size_limit=FOLD_LIMIT)
    from onnxscript.rewriter import onnx_fusions

    onnx_fusions.fuse(model)
    reorder_gelu_half(model.graph)
    return model


def reorder_gelu_half(graph: ir.Graph) -> int:
    """``Mul(0.5, 1 + erf(x / sqrt 2)) -> Mul(x, .)`` becomes ``Mul(x, 1 + erf(..)) -> Mul(., 0.5)``; returns how many.

    The exporter writes the exact GELU with the halving first, which ONNX Runtime's Gelu fusion does not match (it
    matches the halving last), so every GELU ran as five elementwise kernels. Multiplying by 0.5 is exact in binary
    floating point, so both orders give the same bits; TensorRT fuses either.
    """
    changed = 0
    for node in list(graph):
        if not _is_op(node, "Erf"):
            continue
        add = _only_consumer(node.outputs[0], "Add")
        half_mul = _only_consumer(add.outputs[0], "Mul") if add is not None else None
        if half_mul is None or not _is_const(_other_input(half_mul, add.outputs[0]), 0.5):
            continue
        outer = _only_consumer(half_mul.outputs[0], "Mul")
        if outer is None:
            continue
        x = _other_input(outer, half_mul.outputs[0])
        half = _other_input(half_mul, add.outputs[0])
        # half_mul now computes x * (1 + erf), outer computes that * 0.5: same two nodes, inputs swapped
        half_mul.replace_input_with(half_mul.inputs.index(half), x)
        outer.replace_input_with(outer.inputs.index(x), half)
        changed += 1
    return changed


def _is_op(node: ir.Node, op_type: str) -> bool:
    return node.op_type == op_type and node.domain in ("", "ai.onnx")


def _only_consumer(value: ir.Value, op_type: str) -> ir.Node | None:
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output():
        return None
    node = uses[0][0] if isinstance(uses[0], tuple) else uses[0].node
    return node if _is_op(node, op_type) and len(node.inputs) == 2 else None


def _other_input(node: ir.Node, value: ir.Value) -> ir.Value | None:
    others = [v for v in node.inputs if v is not value]
    return others[0] if len(others) == 1 else None


def _is_const(value: ir.Value | None, expected: float) -> bool:
    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    return tensor is not None and tensor.size == 1 and float(tensor.numpy().reshape(())) == expected
