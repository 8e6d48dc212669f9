"""benchmarks/gpu_profile.py runs end to end on the CPU with --smoke (tiny config, 2 iterations)."""

import importlib.util
import json
import sys
from pathlib import Path

import torch
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_profile.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_profile", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_smoke_run_writes_the_summary_and_the_profile(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert _load_script().main(["--smoke", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    summary = json.loads((tmp_path / "gpu_summary.json").read_text())
    assert summary["smoke"] is True and summary["sections"]["eager"]["skipped"] == 0
    assert summary["training"]["images_per_s"] > 0 and summary["training"]["optimizer"] == "AdamW"
    rows = {r["ours"]: r for r in summary["reference_comparison"]}
    assert (
        rows["merged, eager fp32 bs2 (img/s)"]["value"] > 0
        and rows["merged, eager fp32 bs2 (img/s)"]["reference_value"] == 263
    )
    assert rows["merged, eager fp16 bs1 (ms)"]["value"] is None  # fp16 is not measured on the CPU
    targets = [r["target"] for r in summary["targets"]]
    assert any("merged / bare backbone" in t for t in targets) and any("single-task models" in t for t in targets)
    assert any("compiled: skipped" in n for n in summary["notes"])
    profile = json.loads((tmp_path / "profile.json").read_text())
    roles = {m["role"] for m in profile["measurements"]}
    assert {"single_pass", "merged", "bare_backbone", "per_task", "without:semseg"} <= roles
    assert profile["environment"]["float32_matmul_precision"] == "highest" and profile["run"]["tf32"] is False
    markdown = (tmp_path / "gpu_summary.md").read_text()
    assert "## Against the reference table" in markdown and "## Targets" in markdown
    with Image.open(tmp_path / "latency_vs_batch.png") as image:
        assert image.format == "PNG"
