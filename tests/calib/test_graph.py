"""Graph checks on small hand-built ONNX graphs whose answers are known."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mtlora_deploy.calib.cleanup import fold_cast_pairs, topological_sort
from mtlora_deploy.calib.graph import (
    count_qdq_nodes,
    head_layers,
    io_dtypes,
    last_gemm_nodes,
    layernorm_input_dtypes,
    ops_without_dtype,
    zero_points_nonzero,
)


def _qdq_model(zero_point: int) -> onnx.ModelProto:
    inits = [
        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
        numpy_helper.from_array(np.array(zero_point, np.int8), "zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q0"),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq0"),
        helper.make_node("DequantizeLinear", ["q", "s"], ["z"], name="dq_no_zp"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [2]),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_zero_points_nonzero_names_asymmetric_nodes():
    assert zero_points_nonzero(_qdq_model(0)) == []
    assert zero_points_nonzero(_qdq_model(3)) == ["q0", "dq0"]
    assert count_qdq_nodes(_qdq_model(0)) == {"QuantizeLinear": 1, "DequantizeLinear": 2}


def _head_model(ln_dtype: int) -> onnx.ModelProto:
    """x -> Cast -> LayerNorm -> MatMul(w) -> Relu -> Conv-free tail -> Resize-like Identity -> out."""
    inits = [
        numpy_helper.from_array(np.ones(4, np.float32 if ln_dtype == TensorProto.FLOAT else np.float16), n)
        for n in ("g", "b")
    ] + [numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")]
    nodes = [
        helper.make_node("Cast", ["x"], ["xc"], to=ln_dtype, name="cast_in"),
        helper.make_node("LayerNormalization", ["xc", "g", "b"], ["ln"], name="ln0"),
        helper.make_node("Cast", ["ln"], ["ln32"], to=TensorProto.FLOAT, name="cast_out"),
        helper.make_node("MatMul", ["ln32", "w"], ["mm"], name="head_last"),
        helper.make_node("Relu", ["mm"], ["r"], name="relu"),
        helper.make_node("Identity", ["r"], ["out"], name="tail"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_layernorm_input_dtype_and_io():
    assert layernorm_input_dtypes(_head_model(TensorProto.FLOAT)) == {"ln0": "float32"}
    assert layernorm_input_dtypes(_head_model(TensorProto.FLOAT16)) == {"ln0": "float16"}
    assert io_dtypes(_head_model(TensorProto.FLOAT16)) == {"x": "float32", "out": "float32"}


def test_last_gemm_walks_back_through_activations():
    assert last_gemm_nodes(_head_model(TensorProto.FLOAT)) == {"out": ["head_last"]}


def test_last_gemm_names_every_head_concatenated_before_a_shared_op():
    """The merged model's heads: per-task final layers, concatenated, resized once, then sliced per task."""
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["trunk"], name="trunk"),
        helper.make_node("MatMul", ["trunk", "w"], ["a"], name="head_a"),
        helper.make_node("MatMul", ["trunk", "w"], ["b"], name="head_b"),
        helper.make_node("Concat", ["a", "b"], ["ab"], axis=1, name="cat"),
        helper.make_node("Shape", ["trunk"], ["shape"], name="shape"),  # read for its shape only: not followed
        helper.make_node("Reshape", ["ab", "shape2"], ["r"], name="reshape"),
        helper.make_node("Identity", ["r"], ["out1"], name="o1"),
        helper.make_node("Identity", ["r"], ["out2"], name="o2"),
    ]
    shape2 = numpy_helper.from_array(np.array([2, 8], np.int64), "shape2")
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [2, 8]) for o in ("out1", "out2")],
        [w, shape2],
    )
    model = helper.make_model(graph)
    assert last_gemm_nodes(model) == {"out1": ["head_a", "head_b"], "out2": ["head_a", "head_b"]}
    assert head_layers(model) == ["head_a", "head_b"]


def test_ops_without_bf16_follow_the_opset():
    model = _head_model(TensorProto.FLOAT)
    model.graph.node.append(helper.make_node("Conv", ["a", "b"], ["c"]))
    assert "Conv" in ops_without_dtype(model, TensorProto.BFLOAT16)
    assert "MatMul" not in ops_without_dtype(model, TensorProto.BFLOAT16)
    model.opset_import[0].version = 22
    assert "Conv" not in ops_without_dtype(model, TensorProto.BFLOAT16)


def _cast_pair_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Relu", ["back"], ["out"], name="relu"),  # out of order on purpose
        helper.make_node("Cast", ["x"], ["low"], to=TensorProto.FLOAT16, name="down"),
        helper.make_node("Cast", ["low"], ["back"], to=TensorProto.FLOAT, name="up"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_topological_sort_orders_producers_first():
    model = _cast_pair_model()
    topological_sort(model)
    assert [n.name for n in model.graph.node] == ["down", "up", "relu"]
    onnx.checker.check_model(model)


def test_fold_cast_pairs_bypasses_a_lossy_round_trip():
    model = _cast_pair_model()
    topological_sort(model)
    assert fold_cast_pairs(model) == 1
    assert [(n.name, list(n.input)) for n in model.graph.node] == [("relu", ["x"])]
