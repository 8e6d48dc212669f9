"""Running TensorRT-RTX plans: needs tensorrt_rtx and a CUDA GPU; skips (with the reason) anywhere else.

On an RTX-class GPU (a compute capability in the plan's targets) the plan runs, matches ONNX Runtime and leaves a
runtime cache beside it that the next load reuses; on a GPU outside the targets (an H100/H200 is sm90) opening the
plan fails in one line before TensorRT-RTX sees it.
"""

import importlib.util

import pytest
import torch

from mtlora_deploy.engines.manifest import EngineMismatchError, plan_targets, read_manifest
from tests.conftest import randomize_lora, tiny_model

pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.cuda,
    pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None, reason="tensorrt_rtx not importable"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"),
]
TASKS = ("semseg", "sal")


def _capability() -> str:
    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


@pytest.fixture(scope="module")
def rtx_plan(tmp_path_factory):
    from mtlora_deploy.deploy.export import export_onnx
    from mtlora_deploy.engine_pipeline import build_engine

    model = tiny_model(tasks=TASKS)
    randomize_lora(model)
    path = tmp_path_factory.mktemp("rtx") / "tiny.onnx"
    export_onnx(model, path)
    return path, build_engine(path, "fp32", path.parent / "tiny_rtx.plan", batch="1:2:4", runtime="tensorrt-rtx")


def test_rtx_plan_runs_matches_onnxruntime_and_keeps_its_runtime_cache(rtx_plan):
    from mtlora_deploy.engines.onnxruntime import OnnxRuntimeBackend
    from mtlora_deploy.engines.registry import open_backend
    from mtlora_deploy.engines.tensorrt import runtime_cache_path

    onnx_path, result = rtx_plan
    if _capability() not in plan_targets(read_manifest(result.plan)):
        pytest.skip(f"this GPU (sm{_capability()}) is outside the plan's targets")
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with OnnxRuntimeBackend(onnx_path) as ort:
        ref = ort.infer(images)
    for _ in range(2):  # the second load finds the runtime cache the first one wrote
        with open_backend(result.plan, device="cuda") as backend:
            assert backend.describe()["runtime"] == "tensorrt-rtx"
            outputs = backend.infer(images)
        for task in TASKS:
            diff = (outputs[task].float().cpu() - ref[task]).abs().max() / ref[task].abs().max()
            assert diff < 1e-2, (task, float(diff))
        assert runtime_cache_path(result.plan).stat().st_size > 0


def test_rtx_plan_on_a_gpu_outside_its_targets_fails_before_tensorrt_rtx(rtx_plan):
    from mtlora_deploy.engines.tensorrt import TensorRTBackend

    _, result = rtx_plan
    if _capability() in plan_targets(read_manifest(result.plan)):
        pytest.skip(f"this GPU (sm{_capability()}) is one of the plan's targets")
    with pytest.raises(EngineMismatchError) as info:
        TensorRTBackend(result.plan)
    message = str(info.value)
    assert "\n" not in message and torch.cuda.get_device_name() in message and _capability() in message
