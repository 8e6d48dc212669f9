"""Exported-graph clean-ups: the exact GELU in the order ONNX Runtime fuses, with the same numbers."""

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from onnxscript import ir

from mtlora_deploy.deploy.export import export_graph
from mtlora_deploy.deploy.graph_passes import reorder_gelu_half

ort = pytest.importorskip("onnxruntime")


def _optimized_ops(model: onnx.ModelProto, tmp_path) -> list[str]:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]


def _run(model: onnx.ModelProto, x: np.ndarray, fused: bool = True) -> np.ndarray:
    options = ort.SessionOptions()
    if not fused:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


class _Mlp(torch.nn.Module):
    tasks = ("out",)

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 8), torch.nn.GELU()
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image)


def test_exported_gelu_is_reordered_and_fused_by_onnx_runtime(tmp_path):
    """torch's exact GELU exports as 0.5 * (1 + erf) first; after the clean-up ORT runs one Gelu kernel per GELU."""
    torch.manual_seed(0)
    mlp = _Mlp().eval().requires_grad_(False)
    x = torch.randn(3, 8)
    exported = export_graph(mlp, x, 18, "torch.export")
    ops = _optimized_ops(exported, tmp_path)
    assert ops.count("Gelu") + ops.count("BiasGelu") == 2 and "Erf" not in ops
    assert reorder_gelu_half(ir.serde.deserialize_model(exported).graph) == 0  # nothing left to reorder
    np.testing.assert_allclose(_run(exported, x.numpy()), mlp(x).numpy(), rtol=1e-5, atol=1e-6)


def _gelu_graph(half_first: bool) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Div", ["x", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["a"]),
    ]
    if half_first:
        nodes += [helper.make_node("Mul", ["half", "a"], ["m"]), helper.make_node("Mul", ["x", "m"], ["y"])]
    else:
        nodes += [helper.make_node("Mul", ["x", "a"], ["m"]), helper.make_node("Mul", ["m", "half"], ["y"])]
    consts = {"sqrt2": np.sqrt(2.0), "one": 1.0, "half": 0.5}
    inits = [onnx.numpy_helper.from_array(np.array(v, np.float32), k) for k, v in consts.items()]
    graph = helper.make_graph(
        nodes,
        "gelu",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [64])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def test_reorder_gives_the_same_bits_and_a_fused_gelu(tmp_path):
    model = ir.serde.deserialize_model(_gelu_graph(half_first=True))
    assert reorder_gelu_half(model.graph) == 1
    reordered = ir.serde.serialize_model(model)
    x = np.random.default_rng(0).standard_normal(64).astype(np.float32) * 4
    original = _gelu_graph(half_first=True)
    # unfused, the two orders are the same bits (halving is exact); fused, ORT's Gelu kernel within float rounding
    np.testing.assert_array_equal(_run(reordered, x, fused=False), _run(original, x, fused=False))
    np.testing.assert_allclose(_run(reordered, x), _run(original, x, fused=False), rtol=1e-6, atol=1e-7)
    assert _optimized_ops(original, tmp_path) == ["Div", "Erf", "Add", "Mul", "Mul"]
    assert _optimized_ops(reordered, tmp_path) == ["Gelu"]


def test_reorder_leaves_other_erf_uses_alone():
    graph = _gelu_graph(half_first=True)
    graph.graph.node[3].input[0] = "one"  # Mul(1, a): not the GELU halving
    model = ir.serde.deserialize_model(graph)
    assert reorder_gelu_half(model.graph) == 0
