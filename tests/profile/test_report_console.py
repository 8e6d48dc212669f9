"""The report from synthetic measurements: JSON contract, 80-column summary without truncation, no negative cost."""

import json

import numpy as np
from rich.console import Console

from mtlora_deploy.profile.comparisons import compute_comparisons
from mtlora_deploy.profile.report import build_report, print_report, render_markdown
from mtlora_deploy.profile.runs import Candidate, Measurement
from mtlora_deploy.profile.timing import LatencyStats

SOURCE = "runs/a-rather-long-run-folder-name/train"
RATIO_KEYS = {"value", "ci_low", "ci_high", "verdict", "flop_ratio"}
MEASUREMENT_KEYS = {"n", "median_ms", "gmac_per_image", "gflops_per_s"}


def _measurement(role: str, ms: float, gmac: float, batch: int = 1, seed: int = 0) -> Measurement:
    rng = np.random.default_rng(seed)
    rounds = list(ms * batch * (1 + rng.uniform(0, 0.3, 10)))  # noisy, shared-machine-like rounds
    samples = [r * (1 + 0.01 * i) for r in rounds for i in range(3)]
    candidate = Candidate(SOURCE, role, "torch", "fp32", open=lambda: None, tasks=("semseg", "sal"))
    return Measurement(candidate, batch, LatencyStats.from_samples(samples, rounds), None, {}, rounds, gmac)


def _report():
    rows = [
        _measurement("single_pass", 30.0, 26.9),
        _measurement("merged", 27.0, 26.3),
        _measurement("bare_backbone", 18.0, 18.0),
        _measurement("per_task", 70.0, 73.6),
        _measurement("without:semseg", 30.0, 25.0),
        _measurement("without:sal", 24.0, 24.0),
        _measurement("single_pass", 25.0, 26.9, batch=8),
    ]
    env = {"cpu": "x86_64", "torch": "2.x", "torch_threads": 2}
    run = {
        "timer": "perf_counter",
        "warmup": 3,
        "duration_s": 0.5,
        "min_iterations": 10,
        "rounds": 10,
        "include_copies": False,
        "memory_method": "not measured",
        "percentiles": {"p90": "n >= 100"},
    }
    return build_report(env, run, [m.to_dict() for m in rows], compute_comparisons(rows), ["a note [in brackets]"])


def test_json_contract_of_ratios_and_measurements():
    report = json.loads(json.dumps(_report()))
    for m in report["measurements"]:
        assert MEASUREMENT_KEYS <= set(m) and m["n"] == 30
        assert m["gflops_per_s"] == 2 * m["gmac_per_image"] * m["throughput_images_per_s"]
    for name, rows in report["comparisons"].items():
        for row in rows:
            assert RATIO_KEYS <= set(row), name
    (bare,) = report["comparisons"]["vs_bare_backbone"]
    assert bare["compared"] == "merged" and abs(bare["flop_ratio"] - 26.3 / 18.0) < 1e-9
    (per_task,) = [r for r in report["comparisons"]["shared_vs_per_task"] if r["batch"] == 1]
    assert abs(per_task["flop_ratio"] - 73.6 / 26.9) < 1e-9 and per_task["verdict"] == "faster"


def test_head_costs_are_never_negative():
    costs = {r["task"]: r for r in _report()["comparisons"]["head_cost"]}
    assert costs["semseg"]["verdict"] == "below the noise" and costs["semseg"]["fraction_of_full"] is None
    assert costs["sal"]["verdict"] == "measurable" and costs["sal"]["fraction_of_full"] > 0
    lines = [line for line in _report()["ratios"] if line.startswith("head cost")]
    assert any("below the noise" in line for line in lines)
    assert not any(line.split("): ", 1)[1].startswith("-") for line in lines)  # no negative cost printed


def test_80_column_summary_is_not_truncated():
    console = Console(width=80, record=True, color_system=None)
    print_report(_report(), console)
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    for needle in (
        "configuration",
        "median ms",
        "95% CI",
        "img/s",
        "GMAC",
        "GFLOP/s",
        "merged fp32 b1",
        "bare backbone fp32 b1",
        "w/o semseg fp32 b1",
        "2 x 1-task fp32 b1",
        "a note [in brackets]",
    ):
        assert needle in text.replace("\n", " ") or needle in text, needle


def test_markdown_has_the_full_table():
    text = render_markdown({**_report(), "plots": {}})
    assert "| source | role | backend | precision | batch | n | rounds | min ms | median ms | 95% CI ms |" in text
    assert "GMAC/image" in text and "FLOP ratio" in text and "below the noise" in text
