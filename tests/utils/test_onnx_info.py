"""Artefact kinds, precision names and ONNX metadata decoding: defined once in utils, checked on files made here."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mtlora_deploy.utils.artifacts import PLAN_SUFFIXES, PRECISIONS, artifact_kind
from mtlora_deploy.utils.onnx_info import decode_metadata, detect_onnx_precision, engine_fields, metadata_from_proto


def test_artifact_kind_from_the_suffix(tmp_path):
    assert artifact_kind("m.onnx") == "onnx" and artifact_kind(tmp_path) == "checkpoint"
    assert [artifact_kind(f"m{s}") for s in PLAN_SUFFIXES] == ["plan"] * 3
    assert PRECISIONS == ("fp32", "fp16", "bf16", "int8", "fp8", "int8-wo", "int4-wo")


def _graph(path, props):
    node = helper.make_node("Identity", ["image"], ["sal"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("sal", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    model = helper.make_model(graph)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def test_metadata_is_decoded_the_same_way_from_maps_and_protos(tmp_path):
    props = {"mtlora.tasks": json.dumps(["sal"]), "mtlora.input_size": "[3, 8, 8]", "producer": "not json"}
    path = _graph(tmp_path / "g.onnx", props)
    model = onnx.load(str(path))
    expected = {"tasks": ["sal"], "input_size": [3, 8, 8], "producer": "not json"}
    assert decode_metadata(props) == decode_metadata(model.metadata_props) == expected
    assert metadata_from_proto(model) == {"tasks": ["sal"], "input_size": [3, 8, 8]}
    fields = engine_fields(path)
    assert fields["tasks"] == ["sal"] and fields["image_size"] == 8 and fields["onnx_metadata"] == expected


def test_engine_fields_of_a_foreign_graph_with_comma_separated_tasks(tmp_path):
    path = _graph(tmp_path / "f.onnx", {"tasks": "semseg,sal", "image_size": "448"})
    assert engine_fields(path)["tasks"] == ["semseg", "sal"] and engine_fields(path)["image_size"] == 448


@pytest.mark.parametrize(
    "quantized_type, activations, expected",
    [
        (TensorProto.INT8, True, "int8"),
        (TensorProto.FLOAT8E4M3FN, True, "fp8"),
        (TensorProto.INT8, False, "int8-wo"),
        (TensorProto.INT4, False, "int4-wo"),
    ],
)
def test_quantized_graphs_without_metadata_are_told_apart_by_their_content(
    tmp_path, quantized_type, activations, expected
):
    """Q nodes: activations are quantized (int8 or fp8 by the stored type); DQ of weights only: weight-only."""
    weight = helper.make_tensor("wq", quantized_type, [4, 4], np.ones(16, dtype=np.int8).tolist())
    scale = numpy_helper.from_array(np.array(0.5, np.float32), "s")
    nodes = [helper.make_node("DequantizeLinear", ["wq", "s"], ["w"])]
    x = "image"
    if activations:
        nodes += [
            helper.make_node("QuantizeLinear", ["image", "s", "zp"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
        ]
        x = "xd"
    zero = helper.make_tensor("zp", quantized_type, [], [0])
    nodes.append(helper.make_node("MatMul", [x, "w"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weight, scale, zero],
    )
    path = tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(path))
    assert detect_onnx_precision(path) == expected
