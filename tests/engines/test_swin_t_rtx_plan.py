"""The full-size plan: Swin-T 448, mtlora-r64, four tasks, merged, exported (torch.export), fp16 graph, built with
TensorRT-RTX on this CPU-only machine."""

import importlib.util
import sys
import warnings
from pathlib import Path

import pytest
import torch

from mtlora_deploy.build_engine import build_engine
from mtlora_deploy.deploy.export import export_onnx
from mtlora_deploy.deploy.merge import merge_task_agnostic
from mtlora_deploy.engines.manifest import read_manifest
from mtlora_deploy.model import build_model, resolve_config

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from build_engine_rtx import fp16_graph  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.tensorrt,
    pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None, reason="tensorrt_rtx not importable"),
]
TASKS = ["semseg", "human_parts", "sal", "normals"]


def test_swin_t_448_r64_fp16_plan(tmp_path):
    torch.manual_seed(0)
    model = build_model(resolve_config("mtlora-r64"), warn_without_weights=False).eval()
    merged = merge_task_agnostic(model)
    del model
    export_onnx(merged, tmp_path / "swin_t.onnx", check=False)
    del merged
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp16_graph(tmp_path / "swin_t.onnx", tmp_path / "swin_t_fp16.onnx")  # make_precision_variant: > 14 GB here
    result = build_engine(tmp_path / "swin_t_fp16.onnx", "fp16", tmp_path / "swin_t_fp16.plan", batch="1:8:32",
                          runtime="tensorrt-rtx")
    manifest = read_manifest(result.plan)
    print(f"Swin-T 448 r64 fp16 TensorRT-RTX plan: {manifest['build_time_s']:.1f} s, "
          f"{manifest['plan']['bytes'] / 2**20:.1f} MiB, {manifest['layer_summary']}")
    assert manifest["runtime"] == "tensorrt-rtx" and manifest["precision"] == "fp16"
    assert manifest["tasks"] == TASKS and manifest["image_size"] == 448
    assert manifest["inputs"][0]["shape"] == [-1, 3, 448, 448]
    assert {o["name"] for o in manifest["outputs"]} == set(TASKS)
    assert 50 * 2**20 < manifest["plan"]["bytes"] < 200 * 2**20  # ~31 M parameters in fp16 (LayerNorm kept fp32)
    assert manifest["layer_summary"]["compute_layers"] > 50
