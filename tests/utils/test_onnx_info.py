"""Artefact kinds, precision names and ONNX metadata decoding: defined once in utils, checked on files made here."""

import json

import onnx
from onnx import TensorProto, helper

from mtlora_deploy.utils.artifacts import PLAN_SUFFIXES, PRECISIONS, artifact_kind
from mtlora_deploy.utils.onnx_info import decode_metadata, engine_fields, metadata_from_proto


def test_artifact_kind_from_the_suffix(tmp_path):
    assert artifact_kind("m.onnx") == "onnx" and artifact_kind(tmp_path) == "checkpoint"
    assert [artifact_kind(f"m{s}") for s in PLAN_SUFFIXES] == ["plan"] * 3
    assert PRECISIONS == ("fp32", "fp16", "bf16", "int8")


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
