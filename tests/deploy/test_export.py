"""ONNX export of the tiny model: ORT parity with dynamic batch, labels mode, metadata, resizing, bad inputs."""

import numpy as np
import onnx
import pytest
import torch

import mtlora_deploy
from mtlora_deploy.deploy import export as export_module
from mtlora_deploy.deploy.export import export_onnx, node_budget, resize_model
from mtlora_deploy.deploy.merge import merge_task_agnostic
from mtlora_deploy.deploy.metadata import read_onnx_metadata
from mtlora_deploy.deploy.onnx_checks import ExportCheckError, check_tensorrt_ops, tensorrt_op_table
from mtlora_deploy.errors import ConfigError, WeightsError
from mtlora_deploy.model.config import ALL_TASKS, ModelConfig
from tests.conftest import randomize_lora, run_ort, tiny_model


def _random_model(preset="mtlora-r16", **overrides):
    model = tiny_model(preset, **overrides).eval()
    randomize_lora(model)
    return model


@pytest.fixture(scope="module")
def logits_export(tmp_path_factory):
    model = _random_model()
    report = export_onnx(model, tmp_path_factory.mktemp("logits") / "model.onnx")
    return model, report


@pytest.fixture(scope="module")
def labels_export(tmp_path_factory):
    """All five tasks, labels mode, rebuilt at 128 (the tiny model is configured at 64)."""
    model = _random_model(tasks=ALL_TASKS)
    report = export_onnx(model, tmp_path_factory.mktemp("labels") / "labels.onnx", image_size=128, outputs="labels")
    return model, report


def test_export_writes_one_checked_graph(logits_export):
    model, report = logits_export
    assert report.exporter == "torch.export" and report.opset == 18 and report.tasks == model.tasks
    assert [r.task for r in report.parity] == list(model.tasks) and all(r.ok for r in report.parity)
    assert report.warnings == [] and report.node_count <= node_budget(model.config)
    assert "Pad" not in report.op_types and set(report.op_types) <= set(tensorrt_op_table()["supported"])
    assert sorted(p.name for p in report.path.parent.iterdir()) == ["model.onnx"]
    graph = onnx.load(str(report.path)).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == list(model.tasks)
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 64, 64]
    assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in graph.initializer)


@pytest.mark.parametrize("batch", [1, 3])
def test_dynamic_batch_matches_pytorch(logits_export, batch):
    model, report = logits_export
    images = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
    outs = run_ort(report.path, images)
    with torch.no_grad():
        ref = model(images)
    for task in model.tasks:
        assert outs[task].shape == tuple(ref[task].shape)
        assert np.abs(outs[task] - ref[task].numpy()).max() / ref[task].abs().max().item() <= 1e-4


def test_metadata_round_trip(logits_export):
    model, report = logits_export
    meta = read_onnx_metadata(report.path)
    assert meta["tasks"] == list(model.tasks)
    assert meta["classes"] == {"semseg": 21, "human_parts": 7, "sal": 1, "normals": 3}
    assert meta["input_size"] == [3, 64, 64] and meta["image_size"] == 64 and meta["input_name"] == "image"
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["std"] == [0.229, 0.224, 0.225]
    assert meta["outputs"] == "logits" and set(meta["output_dtypes"].values()) == {"float32"}
    assert meta["toolkit_version"] == mtlora_deploy.__version__ and meta["source"].startswith("<in-memory")
    assert meta["exporter"] == "torch.export" and meta["opset"] == 18
    assert ModelConfig.from_dict(meta["model_config"]) == model.config


def test_metadata_of_a_foreign_file_is_refused(tmp_path):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    onnx.save(onnx.helper.make_model(graph), str(tmp_path / "foreign.onnx"))
    with pytest.raises(ConfigError, match="no mtlora metadata"):
        read_onnx_metadata(tmp_path / "foreign.onnx")
    with pytest.raises(ConfigError, match="does not exist"):
        read_onnx_metadata(tmp_path / "missing.onnx")


def test_labels_outputs_have_label_dtypes_and_ranges(labels_export):
    _, report = labels_export
    assert all(r.ok for r in report.parity)
    outs = run_ort(report.path, torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(5)))
    for task, classes in (("semseg", 21), ("human_parts", 7)):
        assert outs[task].dtype == np.uint8 and outs[task].shape == (2, 1, 128, 128)
        assert outs[task].max() < classes
    for task in ("sal", "edge"):
        assert outs[task].dtype == np.float32 and outs[task].shape == (2, 1, 128, 128)
        assert 0.0 <= outs[task].min() and outs[task].max() <= 1.0
    assert outs["normals"].shape == (2, 3, 128, 128)
    np.testing.assert_allclose(np.linalg.norm(outs["normals"], axis=1), 1.0, atol=1e-5)
    meta = read_onnx_metadata(report.path)
    assert meta["outputs"] == "labels" and meta["output_dtypes"]["semseg"] == "uint8"


def test_image_size_rebuilds_the_graph(labels_export):
    _, report = labels_export
    dims = onnx.load(str(report.path)).graph.input[0].type.tensor_type.shape.dim
    assert report.image_size == 128 and [d.dim_value for d in dims[1:]] == [3, 128, 128]
    meta = read_onnx_metadata(report.path)
    assert meta["image_size"] == 128 and meta["model_config"]["image_size"] == 128


def test_resize_model_keeps_every_tensor():
    merged = merge_task_agnostic(_random_model(tasks=("semseg", "sal")))
    resized = resize_model(merged, 128)
    assert resized.config.image_size == 128 and merged.config.image_size == 64
    for key, tensor in merged.state_dict().items():
        assert torch.equal(resized.state_dict()[key], tensor), key
    with torch.no_grad():
        assert resized(torch.randn(1, 3, 128, 128))["semseg"].shape == (1, 21, 128, 128)
    assert resize_model(merged, None) is merged and resize_model(merged, 64) is merged


@pytest.mark.parametrize("size", [96, 100, 0, -64])
def test_bad_image_size_is_one_line_and_writes_nothing(tmp_path, size):
    with pytest.raises(ConfigError, match=rf"^`image_size`: got {size}; .*use a multiple of 64") as info:
        export_onnx(tiny_model(), tmp_path / "m.onnx", image_size=size)
    assert "\n" not in str(info.value) and list(tmp_path.iterdir()) == []


def test_bad_sources_and_options_are_one_line(tmp_path):
    with pytest.raises(WeightsError, match="nope: checkpoint does not exist"):
        export_onnx(tmp_path / "nope", tmp_path / "m.onnx")
    (tmp_path / "x.onnx").write_bytes(b"")
    with pytest.raises(ConfigError, match="already an ONNX file"):
        export_onnx(tmp_path / "x.onnx", tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="`outputs`: got 'probs'"):
        export_onnx(tiny_model(), tmp_path / "m.onnx", outputs="probs")
    with pytest.raises(ConfigError, match="`opset`: got 17, expected >= 18 .*`legacy`"):
        export_onnx(tiny_model(), tmp_path / "m.onnx", opset=17)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.onnx"]


def test_legacy_exporter_and_a_failed_check_leaves_nothing(tmp_path, monkeypatch):
    model = _random_model("lora", tasks=("semseg", "normals"))
    report = export_onnx(model, tmp_path / "legacy.onnx", legacy=True)
    assert report.exporter == "torchscript" and report.opset == 17 and all(r.ok for r in report.parity)
    table = tensorrt_op_table()
    table = {**table, "supported": [op for op in table["supported"] if op != "MatMul"]}
    monkeypatch.setattr(export_module, "check_tensorrt_ops", lambda proto: check_tensorrt_ops(proto, table))
    with pytest.raises(ExportCheckError, match=r"^op MatMul \(node .+\) is not supported by the TensorRT 10\.15"):
        export_onnx(model, tmp_path / "refused.onnx", legacy=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["legacy.onnx"]
