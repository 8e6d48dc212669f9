"""ONNX Runtime backend: same outputs as PyTorch, specs from the session, metadata or graph fallbacks."""

from __future__ import annotations

import warnings

import pytest
import torch

from mtlora_deploy.deploy.export import export_onnx
from mtlora_deploy.engines.base import TensorSpec
from mtlora_deploy.engines.onnxruntime import OnnxRuntimeBackend, decode_metadata, providers_for
from mtlora_deploy.engines.registry import open_backend
from mtlora_deploy.errors import ConfigError
from tests.conftest import randomize_lora, tiny_model

TASKS = ("semseg", "human_parts", "sal", "normals")


@pytest.fixture(scope="module")
def model():
    model = tiny_model()
    randomize_lora(model)
    return model.eval()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ort") / "tiny.onnx"
    export_onnx(model, path)
    return path


@pytest.fixture(scope="module")
def bare_onnx(model, tmp_path_factory):
    """A graph without mtlora metadata (exported by hand, as a user might)."""
    path = tmp_path_factory.mktemp("ort") / "bare.onnx"
    axes = {name: {0: "batch"} for name in ("image", *model.tasks)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.randn(2, 3, 64, 64),),  # the TorchScript tracer bakes the stacked streams' batch in
            str(path),
            input_names=["image"],
            output_names=list(model.tasks),
            dynamic_axes=axes,
            dynamo=False,
            opset_version=17,
        )
    return path


def test_outputs_match_pytorch(model, exported, images):
    with torch.no_grad():
        expected = model(images)
    with OnnxRuntimeBackend(exported) as backend:
        outputs = backend.infer(images)
    assert set(outputs) == set(TASKS)
    for task in TASKS:
        assert outputs[task].dtype == torch.float32 and outputs[task].shape == expected[task].shape
        assert (outputs[task] - expected[task]).abs().max() <= 1e-4 * expected[task].abs().max()


def test_specs_come_from_the_session(exported):
    backend = OnnxRuntimeBackend(exported, threads=1)
    assert backend.tasks == TASKS and backend.image_size == 64 and backend.device == torch.device("cpu")
    assert backend.input_specs() == [TensorSpec("image", (-1, 3, 64, 64), "float32")]
    outputs = {spec.name: spec for spec in backend.output_specs()}
    assert list(outputs) == list(TASKS) and outputs["semseg"].shape[:2] == (-1, 21)
    assert all(spec.dtype == "float32" for spec in outputs.values())
    assert backend.metadata["classes"]["human_parts"] == 7


def test_open_backend_picks_onnxruntime(exported, images):
    backend = open_backend(exported)
    assert isinstance(backend, OnnxRuntimeBackend)
    description = backend.describe()
    assert description["backend"] == "onnxruntime" and description["providers"] == ["CPUExecutionProvider"]
    assert description["precision"] == "fp32"
    assert backend(images)["sal"].shape == (2, 1, 64, 64)


def test_graph_without_metadata_falls_back_to_names_and_shape(bare_onnx, images):
    backend = OnnxRuntimeBackend(bare_onnx)
    assert backend.tasks == TASKS and backend.image_size == 64
    assert backend.infer(images)["normals"].shape == (2, 3, 64, 64)


def test_cuda_without_the_cuda_provider_is_a_clear_error():
    with pytest.raises(ConfigError, match="onnxruntime-gpu"):
        providers_for(torch.device("cuda"), ["CPUExecutionProvider"])
    assert (
        providers_for(torch.device("cuda:0"), ["CUDAExecutionProvider", "CPUExecutionProvider"])[0]
        == "CUDAExecutionProvider"
    )


def test_metadata_is_decoded_without_the_prefix():
    decoded = decode_metadata({"mtlora.tasks": '["sal"]', "mtlora.image_size": "64", "producer": "x"})
    assert decoded == {"tasks": ["sal"], "image_size": 64, "producer": "x"}


def _cuda_ep() -> bool:
    import onnxruntime

    return torch.cuda.is_available() and "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.mark.cuda
@pytest.mark.skipif(not _cuda_ep(), reason="needs a CUDA GPU and onnxruntime-gpu")
def test_cuda_io_binding_matches_cpu(exported, images):
    cpu = OnnxRuntimeBackend(exported).infer(images)
    gpu = OnnxRuntimeBackend(exported, device="cuda").infer(images.cuda())
    for task in TASKS:
        assert gpu[task].device.type == "cuda"
        assert torch.allclose(gpu[task].cpu(), cpu[task], atol=1e-3)
