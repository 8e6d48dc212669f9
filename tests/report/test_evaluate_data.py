"""``--data synthetic`` finds the set of the run an artefact was made from, following the sources it records."""

from __future__ import annotations

import json

import onnx
import pytest
from onnx import TensorProto, helper

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.report.evaluate import made_from, resolve_eval_data


def test_an_exported_graph_leads_back_to_its_runs_synthetic_set(tmp_path):
    run, merged = tmp_path / "runs" / "demo" / "train", tmp_path / "runs" / "demo" / "merged"
    (run / "data").mkdir(parents=True)
    (run / "data" / "synthetic.json").write_text("{}")
    merged.mkdir()
    (merged / "model.json").write_text(json.dumps({"metadata": {"source": str(run)}}))
    (tmp_path / "other" / "data").mkdir(parents=True)  # an unrelated set beside: never taken
    (tmp_path / "other" / "data" / "synthetic.json").write_text("{}")
    graph = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["image"], ["sal"])],
            "g",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("sal", TensorProto.FLOAT, [1])],
        )
    )
    graph.metadata_props.add(key="mtlora.source", value=json.dumps(str(merged)))
    path = tmp_path / "runs" / "demo" / "onnx" / "model.int8.onnx"
    path.parent.mkdir()
    onnx.save(graph, str(path))
    assert made_from(path) == [path, merged, run]
    assert resolve_eval_data("synthetic", path) == run / "data"
    lone = tmp_path / "elsewhere" / "c.npz"
    lone.parent.mkdir()
    with pytest.raises(ConfigError, match="no synthetic set found"):
        resolve_eval_data("synthetic", lone)
