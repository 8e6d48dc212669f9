"""run_profile on the tiny config (CPU, few iterations): report contents, comparisons, plots, ORT, compiled, CLI."""

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from mtlora_deploy.cli.main import cli
from mtlora_deploy.deploy.merge import merge_task_agnostic
from mtlora_deploy.errors import ConfigError
from mtlora_deploy.model.checkpoint import save_checkpoint
from mtlora_deploy.profile.api import run_profile
from mtlora_deploy.profile.flops import torch_gmac
from mtlora_deploy.profile.report import LATENCY_KEYS
from mtlora_deploy.profile.stats import (
    ADDS_TIME,
    BELOW_ZERO,
    FASTER,
    MET,
    MISSED,
    NO_COST,
    SAME,
    SLOWER,
    UNDECIDED,
)
from tests.conftest import randomize_lora, tiny_model

TASKS = ("semseg", "sal", "normals")
BATCHES = [1, 2]


@pytest.fixture(scope="module")
def model():
    m = tiny_model(tasks=TASKS)
    randomize_lora(m)
    return m.eval()


@pytest.fixture(scope="module")
def profiled(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("profile")
    report = run_profile(
        [("tiny", model)],
        precisions=["fp32", "fp16", "bf16"],
        batches=BATCHES,
        iterations=6,
        warmup=1,
        duration=0.0,
        rounds=6,
        output=out,
        threads=1,
    )
    return report, out


def _assert_png(path):
    assert path.is_file() and path.stat().st_size > 5_000
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200


def test_json_has_every_key(profiled):
    report, out = profiled
    saved = json.loads((out / "profile.json").read_text())
    assert saved["measurements"] == report["measurements"]
    assert {
        "format",
        "environment",
        "run",
        "measurements",
        "comparisons",
        "ratios",
        "notes",
        "metrics",
        "plots",
    } <= set(saved)
    for key in ("torch", "onnxruntime", "tensorrt", "torch_threads", "device", "toolkit_version"):
        assert key in saved["environment"]
    assert saved["environment"]["torch_threads"] == 1
    for key in (
        "min_iterations",
        "duration_s",
        "rounds",
        "warmup",
        "include_copies",
        "timer",
        "memory_method",
        "batches",
        "backends",
        "percentiles",
    ):
        assert key in saved["run"]
    assert saved["run"]["timer"] == "perf_counter" and "not measured on the CPU" in saved["run"]["memory_method"]
    for m in saved["measurements"]:
        assert set(LATENCY_KEYS) <= set(m["latency_ms"]) and m["latency_ms"]["count"] == 6 == m["n"]
        assert m["latency_ms"]["min"] <= m["ci_low_ms"] <= m["median_ms"] <= m["ci_high_ms"] <= m["latency_ms"]["max"]
        assert m["rounds"] == 6 and m["calls_per_round"] == 1 and m["timed_s"] > 0 and m["open_s"] > 0
        assert m["latency_ms"]["p90"] is None and m["latency_ms"]["p99"] is None  # 6 calls: no percentiles
        assert m["throughput_images_per_s"] > 0 and m["batch"] in BATCHES and m["peak_memory_bytes"] is None
        assert m["gmac_per_image"] > 0 and m["gflops_per_s"] == pytest.approx(
            2 * m["gmac_per_image"] * m["throughput_images_per_s"]
        )
        assert m["settings"]["min_iterations"] == 6 and m["settings"]["warmup"] == 1
        assert m["settings"]["backend"]["backend"]
    roles = {m["role"] for m in saved["measurements"]}
    assert roles == {"single_pass", "merged", "bare_backbone", "per_task", *(f"without:{t}" for t in TASKS)}
    assert {m["precision"] for m in saved["measurements"]} == {"fp32", "bf16"}


def test_fp16_on_cpu_is_skipped_with_a_note(profiled):
    report, _ = profiled
    assert any("fp16 skipped on the CPU" in note for note in report["notes"])


def test_comparison_ratios_present_and_positive(profiled):
    comparisons = profiled[0]["comparisons"]
    expected = len(BATCHES) * 2  # fp32 and bf16
    for name in ("shared_vs_per_task", "merged_vs_unmerged", "vs_bare_backbone"):
        rows = comparisons[name]
        assert len(rows) == expected, name
        assert all(row["value"] > 0 and row["flop_ratio"] > 0 for row in rows), name
    assert all(row["tasks"] == list(TASKS) for row in comparisons["shared_vs_per_task"])
    assert all(row["flop_ratio"] > 1.5 for row in comparisons["shared_vs_per_task"])  # 3 encoders vs 1
    assert all(row["compared"] == "merged" and row["flop_ratio"] > 1 for row in comparisons["vs_bare_backbone"])
    precision = [r for r in comparisons["precision"] if r["precision"] == "bf16"]
    assert precision and all(r["baseline_precision"] == "fp32" and r["value"] > 0 for r in precision)
    assert all(r["flop_ratio"] == pytest.approx(1.0) for r in precision)
    sweep = comparisons["batch_sweep"]
    assert {r["batch"] for r in sweep} == {2} and {r["baseline_batch"] for r in sweep} == {1}
    assert all(r["throughput_images_per_s"] > 0 for r in sweep)


def test_every_ratio_carries_the_json_contract(profiled):
    comparisons = json.loads((profiled[1] / "profile.json").read_text())["comparisons"]
    rows = [row for name in comparisons for row in comparisons[name]]
    assert {name for name in comparisons if comparisons[name]} >= {
        "shared_vs_per_task",
        "merged_vs_unmerged",
        "vs_bare_backbone",
        "head_cost",
        "precision",
        "batch_sweep",
    }
    for row in rows:
        assert {"value", "ci_low", "ci_high", "verdict", "flop_ratio"} <= set(row), row
        assert row["ci_low"] <= row["value"] <= row["ci_high"] and row["rounds"] == 6
        assert row["verdict"] in (FASTER, SLOWER, SAME, ADDS_TIME, NO_COST, BELOW_ZERO, MET, MISSED, UNDECIDED)


def test_head_cost_rows_for_every_task(profiled):
    rows = profiled[0]["comparisons"]["head_cost"]
    for precision in ("fp32", "bf16"):
        for batch in BATCHES:
            got = {r["task"] for r in rows if r["precision"] == precision and r["batch"] == batch}
            assert got == set(TASKS), (precision, batch)
    assert all(r["full_ms"] > 0 and r["without_task_ms"] > 0 for r in rows)
    for row in rows:  # the verdict follows the whole interval; a share of the full pass only for a real cost
        assert (row["verdict"] == ADDS_TIME) == (row["ci_low"] > 0) and (row["verdict"] == BELOW_ZERO) == (
            row["ci_high"] < 0
        )
        assert (row["fraction_of_full"] is not None) == (row["verdict"] == ADDS_TIME)


def test_markdown_has_tables_and_ratio_lines(profiled):
    report, out = profiled
    text = (out / "profile.md").read_text()
    for heading in ("# mtlora profile", "## Settings", "## Measurements", "## Ratios", "## Head cost", "## Notes"):
        assert heading in text
    for phrase in (
        "| tiny: torch | single pass vs 3 x 1-task | fp32 b1 |",
        "| tiny: torch | merged vs unmerged | bf16 b2 |",
        "| tiny: torch | merged / bare backbone | fp32 b1 |",
        "| tiny: torch | bf16 vs fp32, single pass | b1 |",
        "| tiny: torch | normals | fp32 b2 |",
        "GMAC/image",
        "95% interval ms",
    ):
        assert phrase in text, phrase
    assert len(report["ratios"]) == sum(len(rows) for rows in report["comparisons"].values())
    assert "peak MiB" not in text  # no CPU memory column unless measured in subprocesses
    for name in ("latency_per_image", "throughput_vs_batch", "gflops_per_variant"):
        assert f"![{name}]({name}.png)" in text


def test_plots_are_real_pngs(profiled):
    report, out = profiled
    for name in ("latency_per_image", "throughput_vs_batch", "gflops_per_variant"):
        _assert_png(out / f"{name}.png")
        assert report["plots"][name].endswith(f"{name}.png")
    assert not (out / "accuracy_vs_latency.png").exists()  # only with --metrics


@pytest.fixture(scope="module")
def onnx_fp32(model, tmp_path_factory):
    pytest.importorskip("mtlora_deploy.engines.onnxruntime", reason="OnnxRuntimeBackend not written yet")
    from mtlora_deploy.deploy.export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(model, path, check=False)
    return path


def _metrics_file(folder, artefact, delta):
    """A result shaped like ``mtlora evaluate -o`` output."""
    path = folder / f"{artefact.stem}_eval.json"
    path.write_text(
        json.dumps(
            {
                "artefact": str(artefact),
                "backend": {"backend": "onnxruntime"},
                "primary": {"sal": 0.5},
                "delta_m": delta,
            }
        )
    )
    return path


def test_onnxruntime_file_profiled_with_accuracy_plot(model, onnx_fp32, tmp_path):
    report = run_profile(
        [onnx_fp32],
        batches=BATCHES,
        iterations=2,
        warmup=0,
        duration=0.0,
        rounds=2,
        output=tmp_path / "out",
        metrics=[_metrics_file(tmp_path, onnx_fp32, -1.5)],
        threads=1,
    )
    rows = report["measurements"]
    assert [(m["backend"], m["role"], m["precision"], m["batch"]) for m in rows] == [
        ("onnxruntime", "file", "fp32", 1),
        ("onnxruntime", "file", "fp32", 2),
    ]
    assert rows[0]["settings"]["backend"]["providers"] == ["CPUExecutionProvider"]
    merged = merge_task_agnostic(model)  # what export_onnx writes
    assert rows[0]["gmac_per_image"] == pytest.approx(torch_gmac(merged, model.config.image_size), rel=1e-6)
    assert len(report["accuracy_vs_latency"]) == 1 and report["accuracy_vs_latency"][0]["delta_m"] == -1.5
    _assert_png(tmp_path / "out" / "accuracy_vs_latency.png")


def test_onnx_precision_variants_are_compared(onnx_fp32, tmp_path):
    from mtlora_deploy.calib.precision import make_precision_variant

    fp16 = make_precision_variant(onnx_fp32, "fp16", tmp_path / "tiny_fp16.onnx", tool="onnxruntime")
    report = run_profile([onnx_fp32, fp16], batches=[1], iterations=2, warmup=0, duration=0.0, rounds=2, threads=1)
    assert {m["precision"] for m in report["measurements"]} == {"fp32", "fp16"}
    assert all(m["gmac_per_image"] > 0 for m in report["measurements"])  # counted from each graph
    (row,) = [r for r in report["comparisons"]["precision"] if r["precision"] == "fp16"]
    assert row["family"] == "onnxruntime files" and row["baseline_precision"] == "fp32" and row["value"] > 0
    assert row["flop_ratio"] == pytest.approx(1.0)  # the same MatMul/Conv shapes in fp16


def test_torch_compiled_is_profiled_on_cpu(model, tmp_path):
    report = run_profile(
        [("tiny", model)],
        backends=["torch-compiled"],
        batches=[1],
        iterations=2,
        warmup=0,
        duration=0.0,
        rounds=2,
        comparisons=[],
        compile_options={"compile_backend": "aot_eager"},
        threads=1,
    )
    (row,) = report["measurements"]
    assert row["backend"] == "torch-compiled" and row["settings"]["backend"]["compile_backend"] == "aot_eager"


def test_cli_profile_on_a_checkpoint_folder(model, tmp_path):
    save_checkpoint(model, tmp_path / "run" / "checkpoints" / "best")
    args = [
        "profile",
        str(tmp_path / "run"),
        "--batch",
        "1",
        "--iterations",
        "1",
        "--warmup",
        "0",
        "--duration",
        "0",
        "--rounds",
        "2",
        "--comparisons",
        "none",
        "--threads",
        "1",
        "-o",
        str(tmp_path / "out"),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "profile.json").is_file() and (tmp_path / "out" / "profile.md").is_file()
    flat = "".join(result.output.split())  # rich wraps long paths and narrow columns
    assert "mtlora profile on" in result.output and "wrote" in flat and "out/profile.json" in flat


def test_bad_options_are_one_line_config_errors(model):
    with pytest.raises(ConfigError, match="`backends`: got 'tvm'"):
        run_profile([("tiny", model)], backends=["tvm"])
    with pytest.raises(ConfigError, match="`batches`"):
        run_profile([("tiny", model)], batches=[0])
    with pytest.raises(ConfigError, match="nothing to profile"):
        run_profile([("tiny", model)], backends=["onnxruntime"])
    with pytest.raises(ConfigError, match="did you mean 'iterations'"):
        run_profile([("tiny", model)], iteration=3)
    with pytest.raises(ConfigError, match="`rounds`"):
        run_profile([("tiny", model)], rounds=1)
