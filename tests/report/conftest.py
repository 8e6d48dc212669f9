"""A tiny three-task ONNX graph (class, sigmoid and normal outputs) for predict tests."""

from __future__ import annotations

import warnings

import pytest

from tests.conftest import randomize_lora, tiny_model


@pytest.fixture(scope="session")
def predict_graph(tmp_path_factory):
    from mtlora_deploy.deploy.export import export_onnx

    model = tiny_model(tasks=("semseg", "sal", "normals"))
    randomize_lora(model)
    path = tmp_path_factory.mktemp("predict_graph") / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(model, path, legacy=True, check=False)
    return path
