"""Small graph clean-ups after a precision conversion, so the result is a valid graph TensorRT parses well.

ONNX Runtime's float16 converter appends the Casts it inserts at the end of the node list (ORT does not
care; onnx.checker and TensorRT's parser want topological order) and, when a graph input feeds a node kept
in float32, emits ``Cast(fp32 -> fp16) -> Cast(fp16 -> fp32)``, which only rounds the input. It also
converts ``value_info`` entries of initializers it leaves in fp32, which fails strict type inference.
"""

from __future__ import annotations

import heapq
from collections import defaultdict

import onnx
from onnx import TensorProto

from mtlora_deploy.calib.graph import producers, tensor_dtypes

LOW_FLOATS = (TensorProto.FLOAT16, TensorProto.BFLOAT16)


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None


def fold_cast_pairs(model: onnx.ModelProto) -> int:
    """Bypass ``Cast(fp32 -> low) -> Cast(low -> fp32)``: consumers read the fp32 tensor; returns how many."""
    types, by_output, folded = tensor_dtypes(model), producers(model), 0
    renames = {}
    for node in model.graph.node:
        first = by_output.get(node.input[0]) if _cast_to(node) == TensorProto.FLOAT else None
        if first is not None and _cast_to(first) in LOW_FLOATS and types.get(first.input[0]) == "float32":
            renames[node.output[0]] = first.input[0]
    graph_outputs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name in renames and renames[name] not in graph_outputs:
                node.input[index] = renames[name]
                folded += 1
    remove_dead_nodes(model)
    return folded


def drop_value_info(model: onnx.ModelProto) -> None:
    """Remove the optional ``value_info`` annotations, which converters leave stale (e.g. an fp16 type on an
    initializer kept in fp32); ONNX Runtime and TensorRT infer types themselves."""
    del model.graph.value_info[:]


def remove_dead_nodes(model: onnx.ModelProto) -> None:
    """Drop nodes none of whose outputs is used by another node or the graph output."""
    while True:
        used = {o.name for o in model.graph.output} | {i for n in model.graph.node for i in n.input}
        alive = [n for n in model.graph.node if any(o in used for o in n.output)]
        if len(alive) == len(model.graph.node):
            return
        del model.graph.node[:]
        model.graph.node.extend(alive)


def topological_sort(model: onnx.ModelProto) -> None:
    """Reorder nodes so each comes after the producers of its inputs (stable for an already-sorted graph)."""
    nodes, by_output = list(model.graph.node), {}
    for index, node in enumerate(nodes):
        by_output.update({o: index for o in node.output})
    waiting, users = [0] * len(nodes), defaultdict(list)
    for index, node in enumerate(nodes):
        deps = {by_output[i] for i in node.input if i in by_output}
        waiting[index] = len(deps)
        for dep in deps:
            users[dep].append(index)
    ready, order = [i for i, count in enumerate(waiting) if count == 0], []
    while ready:  # a heap on the original index keeps the original order wherever it is already valid
        index = heapq.heappop(ready)
        order.append(nodes[index])
        for user in users[index]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    if len(order) != len(nodes):
        raise ValueError(f"graph has a cycle: {len(nodes) - len(order)} nodes cannot be ordered")
    del model.graph.node[:]
    model.graph.node.extend(order)
