"""A tiny five-task ONNX graph, its Triton repository, and (per module) a real tritonserver on free loopback ports.

The server comes from the serving environment ``make venv`` creates (see ``serve.server.find_server``); tests that
need it are skipped with the reason only where that environment (nvidia-pytriton) is not installed.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from mtlora_deploy.errors import MissingDependencyError
from tests.conftest import randomize_lora, tiny_model

TASKS = ("semseg", "human_parts", "sal", "normals", "edge")


def image_bytes(height: int, width: int, fmt: str = "JPEG", seed: int = 0) -> bytes:
    """A smooth random picture of height x width (smooth, so JPEG keeps its content), encoded."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    picture = Image.fromarray(small).resize((width, height), Image.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def schema():
    pytest.importorskip("tritonclient", reason="the serve extra (tritonclient) is not installed")
    from mtlora_deploy.serve.schema import model_config_pb2

    return model_config_pb2()


@pytest.fixture(scope="session")
def tiny_graph(tmp_path_factory):
    """The tiny model with every task kind (class, sigmoid, normal), random LoRA, exported with metadata."""
    from mtlora_deploy.deploy.export import export_onnx

    model = tiny_model(tasks=TASKS)
    randomize_lora(model)
    path = tmp_path_factory.mktemp("serve_graph") / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(model, path, legacy=True, check=False)
    return path


@pytest.fixture(scope="session")
def tiny_repository(tiny_graph, schema, tmp_path_factory):
    from mtlora_deploy.serve.repository import export_triton

    return export_triton(tiny_graph, tmp_path_factory.mktemp("serve_repo") / "repo").path


def server_or_skip():
    from mtlora_deploy.serve.server import find_server

    try:
        return find_server()
    except MissingDependencyError as exc:
        pytest.skip(f"no tritonserver here ({exc})")


@pytest.fixture(scope="module")
def served(tiny_repository, tmp_path_factory):
    """One real tritonserver for the module, always stopped (ports freed) at the end."""
    from mtlora_deploy.serve.server import Ports, TritonServer

    server_or_skip()
    server = TritonServer(tiny_repository, tmp_path_factory.mktemp("serve_run"), Ports.free(), ready_timeout=120)
    with server:
        yield server
