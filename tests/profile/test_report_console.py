"""The report from synthetic measurements: JSON contract, tables that fit 80 columns without a wrapped or cut cell,
the same numbers in the console, the Markdown and the JSON, costs below zero said as such."""

import json
import re

import numpy as np
from rich.console import Console

from mtlora_deploy.profile.comparisons import compute_comparisons
from mtlora_deploy.profile.console import print_report
from mtlora_deploy.profile.memory import CPU_OFF
from mtlora_deploy.profile.report import (
    build_report,
    comparison_rows,
    head_cost_rows,
    interval,
    measurement_rows,
    render_markdown,
    sig,
    times,
)
from mtlora_deploy.profile.runs import Candidate, Measurement
from mtlora_deploy.profile.stats import ADDS_TIME, BELOW_ZERO, NO_COST, TOO_FEW
from mtlora_deploy.profile.timing import LatencyStats

SOURCE = "runs/demo/train"
TASKS = ("semseg", "human_parts", "sal", "normals")
RATIO_KEYS = {"value", "ci_low", "ci_high", "verdict", "flop_ratio"}
MEASUREMENT_KEYS = {"n", "median_ms", "gmac_per_image", "gflops_per_s", "rounds", "calls_per_round", "timed_s"}


def _load(rounds: int = 10, seed: int = 0) -> np.ndarray:
    """Per-round load shared by every candidate of the group (a shared machine)."""
    return 1 + np.random.default_rng(seed).uniform(0, 0.3, rounds)


def _measurement(role, ms, gmac, batch=1, precision="fp32", source=SOURCE, backend="torch", rounds=10, seed=1):
    noise = 1 + np.random.default_rng(seed).normal(0, 0.01, rounds)
    per_round = list(ms * batch * _load(rounds) * noise)
    samples = [r * (1 + 0.01 * i) for r in per_round for i in (-1, 0, 1)]
    family = "onnxruntime files" if backend == "onnxruntime" else ""
    candidate = Candidate(source, role, backend, precision, open=lambda: None, tasks=TASKS, family=family)
    stats = LatencyStats.from_samples(samples, per_round)
    seconds = {"open": 1.5, "prepare": 0.25, "timed": sum(samples) / 1000}
    return Measurement(candidate, batch, stats, None, {"calls_per_round": 3}, per_round, gmac, seconds)


def _measurements(rounds=10):
    rows = []
    for batch in (1, 8):
        rows += [
            _measurement("single_pass", 30.0, 26.9, batch, rounds=rounds, seed=1),
            _measurement("merged", 27.0, 26.3, batch, rounds=rounds, seed=2),
            _measurement("bare_backbone", 18.0, 18.0, batch, rounds=rounds, seed=3),
            _measurement("per_task", 70.0, 73.6, batch, rounds=rounds, seed=4),
            _measurement("without:semseg", 30.0, 25.0, batch, rounds=rounds, seed=5),  # no cost: the noise
            _measurement("without:human_parts", 24.0, 24.0, batch, rounds=rounds, seed=6),  # a real cost
            _measurement("without:sal", 33.0, 24.5, batch, rounds=rounds, seed=7),  # slower without: below zero
            _measurement("without:normals", 29.0, 25.5, batch, rounds=rounds, seed=8),
        ]
        for precision, ms, seed in (("fp32", 20.0, 9), ("int8", 12.0, 10)):
            path = f"runs/demo/onnx/model.{precision}.onnx"
            rows.append(_measurement("file", ms, 26.3, batch, precision, path, "onnxruntime", rounds, seed))
    return rows


def _report(rounds=10, notes=("a note [in brackets]",)):
    rows = _measurements(rounds)
    env = {"cpu": "x86_64", "torch": "2.x", "onnxruntime": "1.x", "tensorrt": None, "torch_threads": 2}
    run = {
        "timer": "perf_counter",
        "warmup": 3,
        "duration_s": 0.5,
        "min_iterations": 10,
        "rounds": rounds,
        "include_copies": False,
        "memory_method": CPU_OFF,
        "percentiles": {"p90": "n >= 100"},
        "budget_s": 60.0,
        "measure_s": 57.5,
    }
    return build_report(env, run, [m.to_dict() for m in rows], compute_comparisons(rows), list(notes))


def _console_text(report, width: int) -> str:
    console = Console(width=width, record=True, color_system=None)
    print_report(report, console)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


def test_json_contract_of_ratios_and_measurements():
    report = json.loads(json.dumps(_report()))
    for m in report["measurements"]:
        assert MEASUREMENT_KEYS <= set(m) and m["n"] == 30 and m["rounds"] == 10
        assert m["gflops_per_s"] == 2 * m["gmac_per_image"] * m["throughput_images_per_s"]
        assert m["ci_low_ms"] <= m["median_ms"] <= m["ci_high_ms"]
        assert m["median_ms"] == m["latency_ms"]["median"] == np.median(m["round_medians_ms"])
    for name, rows in report["comparisons"].items():
        for row in rows:
            assert RATIO_KEYS <= set(row), name
            assert row["ci_low"] <= row["value"] <= row["ci_high"], name
    (bare,) = [r for r in report["comparisons"]["vs_bare_backbone"] if r["batch"] == 1]
    assert bare["compared"] == "merged" and abs(bare["flop_ratio"] - 26.3 / 18.0) < 1e-9
    assert bare["meets_target"] is (bare["verdict"] == "target met")
    (per_task,) = [r for r in report["comparisons"]["shared_vs_per_task"] if r["batch"] == 1]
    assert abs(per_task["flop_ratio"] - 73.6 / 26.9) < 1e-9 and per_task["verdict"] == "faster"


def test_head_costs_say_whether_they_add_time_are_noise_or_below_zero():
    costs = {r["task"]: r for r in _report()["comparisons"]["head_cost"] if r["batch"] == 1}
    assert costs["human_parts"]["verdict"] == ADDS_TIME and costs["human_parts"]["fraction_of_full"] > 0
    assert costs["sal"]["verdict"] == BELOW_ZERO and costs["sal"]["ci_high"] < 0
    assert costs["sal"]["fraction_of_full"] is None
    assert costs["semseg"]["verdict"] == NO_COST and costs["semseg"]["ci_low"] < 0 < costs["semseg"]["ci_high"]
    text = _console_text(_report(), 80)
    assert re.search(r" sal +fp32 b1 +-\d.* below zero", text)


def test_tables_fit_80_columns_with_nothing_wrapped_or_cut():
    """The same report at 80 and at 200 columns gives the same lines (nothing was wrapped to fit), none longer than
    80 and no ellipsis. Notes are prose and may wrap: here they are left out."""
    report = _report(notes=())
    narrow, wide = _console_text(report, 80), _console_text(report, 200)
    assert narrow == wide
    assert "…" not in narrow and max(len(line) for line in narrow.splitlines()) <= 80
    for needle in (
        "configuration",
        "95% interval",
        "ratio",
        "verdict",
        "FLOP",
        " merged fp32 b1",
        " bare backbone fp32 b8",
        " w/o human_parts fp32 b8",
        " 4 x 1-task fp32 b1",
        " single pass vs 4 x 1-task",
        " int8 vs fp32",
        " merged / bare backbone",
        "human_parts",
        "onnxruntime 1.x",
    ):
        assert needle in narrow, needle
    assert "None" not in narrow  # no Python reprs (TensorRT is not installed here: not named)


def test_a_long_note_is_folded_not_cut():
    note = "a note that goes on " + "and on " * 30 + "to the end"
    text = _console_text(_report(notes=(note,)), 80)
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert note in " ".join(text.split())  # wrapped between words, every word kept


def test_too_few_rounds_say_so_instead_of_a_verdict():
    report = _report(rounds=4)
    rows = [r for name in report["comparisons"] for r in report["comparisons"][name]]
    assert rows and all(r["verdict"] == TOO_FEW and r["ci_low"] is None for r in rows)
    assert all(m["ci_low_ms"] is None for m in report["measurements"])
    text = _console_text(report, 80)
    assert text.count(TOO_FEW) == len(rows) and not re.search(r"faster +\d", text)


def test_console_markdown_and_json_show_the_same_numbers():
    report = _report()
    text, markdown = _console_text(report, 80), render_markdown({**report, "plots": {}})
    for _group, rows in measurement_rows(report["measurements"]):
        for cells in rows:
            assert re.search(" +".join(map(re.escape, cells)), text), cells
    for m in report["measurements"]:  # the Markdown keeps 3 decimals of the same values
        assert f"| {m['median_ms']:.3f} | [{m['ci_low_ms']:.3f}, {m['ci_high_ms']:.3f}] |" in markdown
    for table in (comparison_rows(report["comparisons"]), head_cost_rows(report["comparisons"])):
        for group, rows in table:
            for cells in rows:
                assert f"| {group} | " + " | ".join(cells) + " |" in markdown
                assert re.search(" +".join(map(re.escape, cells[1:])), text), cells
    for row in report["comparisons"]["merged_vs_unmerged"]:
        shown = f"{times(row['value'])} {interval(row['ci_low'], row['ci_high'], times)}"
        assert shown in text and any(shown in line for line in report["ratios"])
    for row in report["comparisons"]["head_cost"]:
        assert re.search(f"{sig(row['value'])} +{re.escape(interval(row['ci_low'], row['ci_high']))}", text)


def test_markdown_has_the_full_tables():
    text = render_markdown({**_report(), "plots": {}})
    assert "| source | role | backend | precision | batch | n | rounds | calls/round | timed s |" in text
    assert "| group | comparison | config | ratio | 95% interval | verdict | FLOP ratio |" in text
    assert "| group | task | config | cost ms | 95% interval | verdict | of full | GMAC |" in text
    assert "GMAC/image" in text and "median over rounds" in text and "sign test" in text
