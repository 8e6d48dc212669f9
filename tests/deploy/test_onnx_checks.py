"""The checks every export runs, on hand-built graphs: TensorRT op support, ONNX validity, parity arithmetic."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mtlora_deploy.deploy.onnx_checks import (
    ExportCheckError,
    _relative,
    check_onnx_model,
    check_tensorrt_ops,
    tensorrt_op_table,
)


def _model(op_type: str, domain: str = "", opset: int = 18, shape=(1, 1, 2, 2)) -> onnx.ModelProto:
    node = helper.make_node(op_type, ["x"], ["y"], name=f"my_{op_type.lower()}", domain=domain)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
    )
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets)


def test_op_table_is_data_with_its_source():
    table = tensorrt_op_table()
    assert "onnx-tensorrt" in table["source"] and "operators.md" in table["source"] and table["tensorrt_version"]
    assert {"LayerNormalization", "MatMul", "Softmax", "Resize", "ArgMax", "Cast"} <= set(table["supported"])
    assert not set(table["supported"]) & set(table["unsupported"]) and "Det" in table["unsupported"]
    assert table["opset_range"][0] <= 18 <= table["opset_range"][1]


def test_supported_graph_passes_and_lists_its_ops():
    assert check_tensorrt_ops(_model("Relu")) == ["Relu"]


@pytest.mark.parametrize(
    ("op", "domain", "shown"),
    [("Det", "", "Det"), ("Unique", "", "Unique"), ("Gelu", "com.microsoft", "com.microsoft::Gelu")],
)
def test_unsupported_op_is_refused_naming_op_and_node(op, domain, shown):
    with pytest.raises(
        ExportCheckError, match=rf"^op {shown} \(node my_{op.lower()}\) is not supported by the TensorRT"
    ):
        check_tensorrt_ops(_model(op, domain))


def test_opset_outside_the_parser_range_is_refused():
    with pytest.raises(ExportCheckError, match="opset 8: TensorRT .* parses opsets 9-"):
        check_tensorrt_ops(_model("Relu", opset=8))


def test_checker_accepts_valid_and_refuses_broken_graphs():
    check_onnx_model(_model("Relu"))
    broken = _model("Relu")
    broken.graph.node[0].input[0] = "undefined"
    with pytest.raises(ExportCheckError, match="not valid ONNX"):
        check_onnx_model(broken)
    with pytest.raises(ExportCheckError, match=r"output y: inferred shape \[1, 4\], expected \(batch, C, H, W\)"):
        check_onnx_model(_model("Relu", shape=(1, 4)))


def test_relative_error_for_floats_and_label_maps():
    ref = np.array([[1.0, -4.0]], dtype=np.float32)
    assert _relative(ref + np.float32(0.002), ref) == pytest.approx((0.002, 0.0005), rel=1e-3)
    labels = np.array([[1, 2, 3, 4]], dtype=np.uint8)
    assert _relative(np.array([[1, 2, 3, 5]], dtype=np.uint8), labels) == (1.0, 0.25)
    with pytest.raises(ExportCheckError, match="output shape"):
        _relative(ref[:, :1], ref)
