"""benchmarks/gpu_profile.py runs end to end on the CPU with --smoke (tiny config), through run_profile."""

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


def test_smoke_run_writes_the_summary_records_a_failing_section_and_goes_on(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # a compile backend that does not exist: the compiled section fails, the others are kept
        assert _load_script().main(["--smoke", "--out", str(tmp_path), "--compile-backend", "no-such-backend"]) == 0
    finally:
        torch.set_num_threads(threads)
    summary = json.loads((tmp_path / "gpu_summary.json").read_text())
    assert summary["smoke"] is True and summary["sections"]["eager"]["failed"] is False
    assert summary["training"]["images_per_s"] > 0 and summary["training"]["optimizer"] == "AdamW"
    assert any("no-such-backend" in n for n in summary["notes"])  # recorded, not raised
    rows = {r["ours"]: r for r in summary["reference_comparison"]}
    fp32 = rows["merged, eager fp32 largest batch (img/s)"]
    assert fp32["value"] > 0 and fp32["reference_value"] == 263  # from benchmarks/reference/deploy_h100.json
    assert rows["merged, eager fp16 bs1 (ms)"]["value"] is None  # fp16 is not measured on the CPU
    targets = [r["target"] for r in summary["targets"]]
    assert any("merged / bare backbone" in t and "FLOP ratio" in t for t in targets)
    assert any("single-task models" in t for t in targets)
    profile = json.loads((tmp_path / "eager" / "profile.json").read_text())
    roles = {m["role"] for m in profile["measurements"]}
    assert {"single_pass", "merged", "bare_backbone", "per_task", "without:semseg"} <= roles
    assert all(m["gmac_per_image"] > 0 for m in profile["measurements"])
    assert profile["environment"]["float32_matmul_precision"] == "highest" and profile["run"]["tf32"] is False
    markdown = (tmp_path / "gpu_summary.md").read_text()
    assert "## Against the reference table" in markdown and "## Targets" in markdown and "## Ratios" in markdown
    with Image.open(tmp_path / "eager" / "latency_per_image.png") as image:
        assert image.format == "PNG"


def test_the_driver_reuses_the_library():
    text = SCRIPT.read_text()
    assert "run_profile" in text and "measure_candidate" not in text
