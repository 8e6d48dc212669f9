"""TensorRT end to end on the tiny config: build from ONNX, run with torch tensors, compare with ONNX Runtime.

These need the tensorrt package and a CUDA GPU; they skip (with the reason) anywhere else.
"""

import importlib.util
import json
import shutil

import pytest
import torch

from mtlora_deploy.engines.manifest import EngineMismatchError, manifest_path, read_manifest
from mtlora_deploy.errors import ConfigError
from tests.conftest import randomize_lora, tiny_model

pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="tensorrt not importable"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"),
]
TASKS = ("semseg", "sal")


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    from mtlora_deploy.deploy.export import export_onnx

    model = tiny_model(tasks=TASKS)
    randomize_lora(model)
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(model, path)
    return path


@pytest.fixture(scope="module")
def fp32_plan(tiny_onnx):
    from mtlora_deploy.engine_pipeline import build_engine

    return build_engine(
        tiny_onnx,
        "fp32",
        tiny_onnx.parent / "engines" / "tiny_fp32.plan",
        batch="1:2:4",
        workspace_gib=1.0,
        runtime="tensorrt",
    )


def _images(batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))


def _ort(path, images):
    from mtlora_deploy.engines.onnxruntime import OnnxRuntimeBackend

    with OnnxRuntimeBackend(path, device="cpu") as backend:
        return backend.infer(images)


def _close(ours: dict, ref: dict, rtol: float) -> None:
    assert set(ours) == set(ref) == set(TASKS)
    for task in TASKS:
        diff = (ours[task].float().cpu() - ref[task].float()).abs().max()
        assert diff / ref[task].abs().max() < rtol, (task, float(diff))


def test_build_writes_plan_manifest_and_timing_cache(fp32_plan, tiny_onnx):
    manifest = read_manifest(fp32_plan.plan)
    assert fp32_plan.plan.is_file() and manifest_path(fp32_plan.plan) == fp32_plan.manifest_path
    assert manifest["precision"] == "fp32" and manifest["tasks"] == list(TASKS) and manifest["image_size"] == 64
    assert manifest["batch_profile"] == {"min": 1, "opt": 2, "max": 4}
    assert manifest["inputs"][0]["name"] == "image" and manifest["inputs"][0]["shape"][1:] == [3, 64, 64]
    assert {o["name"] for o in manifest["outputs"]} == set(TASKS)
    assert manifest["runtime"] == "tensorrt" and manifest["runtime_version"]
    assert manifest["compute_capability"] and manifest["gpu_name"]
    assert manifest["onnx"]["sha256"] and manifest["builder"]["profiling_verbosity"] == "DETAILED"
    assert (fp32_plan.plan.parent / "timing.cache").stat().st_size > 0
    assert not fp32_plan.plan.read_bytes().startswith(b"{")  # the manifest is never prepended to the plan


def test_engine_matches_onnxruntime(fp32_plan, tiny_onnx):
    from mtlora_deploy.engines.tensorrt import TensorRTBackend

    images = _images(3)
    with TensorRTBackend(fp32_plan.plan) as backend:
        outputs = backend.infer(images)
        assert all(t.is_cuda for t in outputs.values())
        _close(outputs, _ort(tiny_onnx, images), rtol=1e-2)  # TF32 may be on for fp32 engines


def test_cuda_graph_replay_and_recapture_on_new_batch(fp32_plan):
    from mtlora_deploy.engines.tensorrt import TensorRTBackend

    with TensorRTBackend(fp32_plan.plan) as plain, TensorRTBackend(fp32_plan.plan, use_cuda_graph=True) as graphed:
        for batch in (2, 2, 4, 1):
            images = _images(batch).cuda()
            ref = {k: v.clone() for k, v in plain.infer(images).items()}
            got = {k: v.clone() for k, v in graphed.infer(images).items()}
            for task in TASKS:
                torch.testing.assert_close(got[task], ref[task], rtol=1e-4, atol=1e-5)


def test_batch_outside_the_profile_is_a_clear_error(fp32_plan):
    from mtlora_deploy.engines.tensorrt import TensorRTBackend

    with (
        TensorRTBackend(fp32_plan.plan) as backend,
        pytest.raises(ConfigError, match="outside tiny_fp32.plan's profile 1..4"),
    ):
        backend.infer(_images(5))


def test_plan_from_another_gpu_fails_before_tensorrt(fp32_plan, tmp_path):
    from mtlora_deploy.engines.tensorrt import TensorRTBackend

    plan = tmp_path / "other.plan"
    shutil.copy(fp32_plan.plan, plan)
    manifest = {**read_manifest(fp32_plan.plan), "compute_capability": "1.0", "gpu_name": "Old GPU"}
    manifest_path(plan).write_text(json.dumps(manifest))
    with pytest.raises(EngineMismatchError, match="Old GPU.*this machine has"):
        TensorRTBackend(plan)


def test_timing_cache_is_reused_by_the_next_build(fp32_plan, tiny_onnx):
    from mtlora_deploy.engine_pipeline import build_engine

    cache = fp32_plan.plan.parent / "timing.cache"
    before = cache.stat().st_size
    again = build_engine(
        tiny_onnx, "fp32", fp32_plan.plan.parent / "again.plan", batch="1:2:4", workspace_gib=1.0, runtime="tensorrt"
    )
    assert again.manifest["builder"]["timing_cache"] == str(cache) and cache.stat().st_size >= before


def test_fp16_engine_from_the_fp32_export(tiny_onnx, tmp_path):
    from mtlora_deploy.engine_pipeline import build_engine
    from mtlora_deploy.engines.tensorrt import TensorRTBackend

    result = build_engine(
        tiny_onnx, "fp16", tmp_path / "tiny_fp16.plan", batch="1:2:4", workspace_gib=1.0, runtime="tensorrt"
    )
    assert result.manifest["precision"] == "fp16" and (tmp_path / "tiny_fp16.onnx").is_file()
    images = _images(2)
    with TensorRTBackend(result.plan) as backend:
        _close(backend.infer(images), _ort(tiny_onnx, images), rtol=5e-2)


def test_open_backend_routes_plans_to_tensorrt(fp32_plan):
    from mtlora_deploy.engines.registry import open_backend

    with open_backend(fp32_plan.plan, device="cuda") as backend:
        assert backend.name == "tensorrt" and backend.tasks == TASKS
        assert backend.describe()["precision"] == "fp32"
