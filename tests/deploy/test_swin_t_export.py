"""The full-size case: Swin-T 448, mtlora-r64, four tasks, random LoRA weights, merged and exported (torch.export)."""

import time

import pytest
import torch

from mtlora_deploy.deploy.export import export_onnx, node_budget
from mtlora_deploy.deploy.merge import merge_task_agnostic
from mtlora_deploy.model import build_model, resolve_config
from mtlora_deploy.model.params import count_parameters
from tests.conftest import randomize_lora


@pytest.mark.slow
def test_swin_t_448_mtlora_r64_merges_and_exports_with_ort_parity(tmp_path):
    torch.manual_seed(0)
    model = build_model(resolve_config("mtlora-r64"), warn_without_weights=False).eval()
    randomize_lora(model, std=0.02)
    merged = merge_task_agnostic(model)
    before, after = count_parameters(model).total_params, count_parameters(merged).total_params
    assert 34.2e6 < before < 34.4e6 and 30.8e6 < after < 31.0e6  # docs/deploy.md, "Merge": about 34.3 M -> 30.9 M
    start = time.perf_counter()
    report = export_onnx(merged, tmp_path / "swin_t.onnx")
    print(f"Swin-T 448 export: {time.perf_counter() - start:.1f} s, {report.node_count} nodes, {report.op_types}")
    assert report.image_size == 448 and all(r.ok for r in report.parity), report.parity
    assert report.node_count <= node_budget(merged.config) and report.warnings == []
    assert "Pad" not in report.op_types and report.file_bytes < 2**31
