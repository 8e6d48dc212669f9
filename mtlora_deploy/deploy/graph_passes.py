"""Clean-ups of the exported graph that the exporter's own optimizer leaves out.

- Pad nodes with all-zero pads: timm and the multi-stream block always call ``F.pad`` (a no-op when the token
  grid tiles into windows, as the export checks), and the exporter keeps them.
- Constant folding of large initializer-only subgraphs: the exporter folds only inputs below 8,192 elements,
  so weight transposes of bias-free linears and the row slices of the stacked task A's stay as nodes.
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
    return model
