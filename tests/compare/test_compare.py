"""``mtlora compare`` at CI scale: tiny Swin, 3 presets + the single-task rows, 2 steps each, on the synthetic set.

The smoke test checks the table's structure, that every row trained, the JSON keys, the Pareto PNG, that the
single-task row is delta-m 0 by construction, and that a second call reuses every finished row.
"""

import json
import math

import pytest
from click.testing import CliRunner
from PIL import Image

from mtlora_deploy.cli.main import cli
from mtlora_deploy.compare.plot import pareto_front
from mtlora_deploy.compare.settings import DEFAULT_PRESETS, CompareSettings
from mtlora_deploy.compare.table import SINGLE_TASK_ROW, build_rows, delta_m
from mtlora_deploy.errors import ConfigError

TASKS = ("semseg", "normals")  # normals: a lower-is-better metric
PRESETS = ("lora", "mtl-lora", "mtlora-mtl")
TINY = [
    "--set",
    "backbone=swin_test_tiny",
    "--set",
    "image_size=64",
    "--set",
    "decoder_widths=[4,4,8,8]",
    "--set",
    "head_channels=16",
    "--set",
    "task_agnostic_rank=4",
    "--set",
    "mtl_rank=4",
    "--set",
    "mtl_alpha=16",
]
ARGS = [
    "compare",
    "--presets",
    ",".join(PRESETS),
    "--tasks",
    ",".join(TASKS),
    *TINY,
    "--steps",
    "2",
    "--batch-size",
    "4",
    "--lr",
    "0.2",
    "--synthetic-images",
    "16",
    "--latency-iterations",
    "2",
    "--latency-warmup",
    "1",
    "--threads",
    "1",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    result = CliRunner().invoke(cli, [*ARGS, "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "compare.json").read_text()), result.output


def test_every_row_trained(compared):
    out, data, _ = compared
    folders = ["single-task-semseg", "single-task-normals", *PRESETS]
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(folders)
    for folder in folders:
        run = out / "runs" / folder
        assert (run / "checkpoints" / "last.safetensors").is_file() and (run / "compare_row.json").is_file()
        assert json.loads((run / "checkpoints" / "last.json").read_text())["metadata"]["step"] == 2
    for record in data["records"]:
        tasks = [record["task"]] if record["task"] else list(TASKS)
        assert record["tasks"] == tasks
        assert all(math.isfinite(record["primary"][t]) for t in tasks)
        assert record["trainable_params"] > 0 and record["deployed_params"] > 0 and record["latency_ms"]["median"] > 0


def test_json_keys_and_rows(compared):
    _, data, _ = compared
    assert {
        "format",
        "command",
        "settings",
        "environment",
        "tasks",
        "baselines",
        "latency_label",
        "rows",
        "records",
        "notes",
        "plots",
        "files",
    } <= set(data)
    assert data["format"] == "mtlora-deploy-compare" and data["tasks"] == list(TASKS)
    assert [r["name"] for r in data["rows"]] == [SINGLE_TASK_ROW, *PRESETS]
    for row in data["rows"]:
        assert {
            "name",
            "kind",
            "primary",
            "delta_m_vs_single_task",
            "trainable_params",
            "deployed_params",
            "latency_median_ms",
            "run_dirs",
        } <= set(row)
        assert set(row["primary"]) == set(TASKS) and math.isfinite(row["delta_m_vs_single_task"])
    settings = data["settings"]
    assert (settings["steps"], settings["batch_size"], settings["lr"], settings["seed"]) == (2, 4, 0.2, 0)
    assert data["command"].startswith("mtlora compare --presets lora,mtl-lora,mtlora-mtl")
    assert any("random-init" in note for note in data["notes"])


def test_single_task_row_is_zero_by_construction(compared):
    _, data, _ = compared
    single = data["rows"][0]
    assert single["kind"] == "single-task" and single["delta_m_vs_single_task"] == 0.0
    singles = [r for r in data["records"] if r["task"]]
    assert single["trainable_params"] == sum(r["trainable_params"] for r in singles)
    assert data["baselines"] == {r["task"]: r["primary"][r["task"]] for r in singles}


def test_mtl_lora_deploys_one_encoder_per_task(compared):
    _, data, _ = compared
    rows = {r["name"]: r for r in data["rows"]}
    assert rows["mtl-lora"]["deployed_params"] > rows["mtl-lora"]["total_params"] - rows["mtl-lora"]["trainable_params"]
    assert rows["lora"]["deployed_params"] < rows["lora"]["total_params"]  # the shared LoRA folds away


def test_markdown_table_and_plot(compared):
    out, data, output = compared
    text = (out / "compare.md").read_text()
    header = "| method | semseg mIoU ↑ | normals mean ↓ | Δm (%) ↑ | trainable (M) | deployed (M) | latency ms (cpu, batch 1) |"  # noqa: E501
    assert header in text and f"| {SINGLE_TASK_ROW} |" in text and "| mtl-lora |" in text
    assert data["command"] in text and "![pareto](pareto.png)" in text and "### Single-task runs" in text
    assert "Δm (%)" in output
    with Image.open(out / "pareto.png") as image:
        assert image.format == "PNG" and image.size[0] > 300


def test_second_call_reuses_finished_rows(compared):
    out, data, _ = compared
    result = CliRunner().invoke(cli, [*ARGS, "-o", str(out)])
    assert result.exit_code == 0, result.output
    again = json.loads((out / "compare.json").read_text())
    assert [r["latency_ms"] for r in again["records"]] == [r["latency_ms"] for r in data["records"]]
    assert any(note.startswith("reused finished rows") for note in again["notes"])
    changed = CliRunner().invoke(cli, [*ARGS, "--steps", "3", "-o", str(out)])  # the last --steps wins
    assert changed.exit_code != 0 and "was trained with train max_steps=2" in str(changed.exception)


# ---- pieces ---------------------------------------------------------------------------------------------------


def test_rows_always_start_with_the_single_task_runs():
    settings = CompareSettings(presets=("lora", "single-task", "lora"), model_overrides={"tasks": ["sal", "edge"]})
    assert [r.name for r in settings.rows()] == ["single-task:sal", "single-task:edge", "lora"]
    assert [r.folder for r in settings.rows()][:1] == ["single-task-sal"]
    assert [r.name for r in CompareSettings().rows()][4:] == [p for p in DEFAULT_PRESETS if p != "single-task"]
    train = CompareSettings(steps=300, batch_size=8, lr=0.2).train_config("DATA")
    assert (train["max_steps"], train["warmup_steps"], train["batch_size"], train["base_lr"]) == (300, 20, 8, 0.2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"presets": ("lora", "nope")}, "`presets`: got nope"),
        ({"steps": 0}, "`steps`: got 0"),
        ({"lr": 0}, "`lr`: got 0"),
    ],
)
def test_bad_settings_are_one_line(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        CompareSettings(**kwargs)


def test_delta_m_handles_lower_is_better_and_unusable_baselines():
    baselines = {"semseg": 50.0, "normals": 20.0}
    assert delta_m({"semseg": 55.0, "normals": 18.0}, baselines) == pytest.approx((10.0 + 10.0) / 2)
    assert delta_m({"semseg": 50.0, "normals": 22.0}, baselines) == pytest.approx(-5.0)
    singles = [
        {
            "task": "semseg",
            "primary": {"semseg": 0.0},
            "trainable_params": 1,
            "total_params": 1,
            "deployed_params": 1,
            "latency_ms": {"median": 1.0},
            "run_dir": "a",
        },
        {
            "task": "normals",
            "primary": {"normals": 20.0},
            "trainable_params": 1,
            "total_params": 1,
            "deployed_params": 1,
            "latency_ms": {"median": 1.0},
            "run_dir": "b",
        },
    ]
    rows, usable = build_rows(singles)
    assert usable == {"normals": 20.0} and rows[0]["delta_m_vs_single_task"] == 0.0  # a 0 baseline cannot divide


def test_pareto_front_keeps_the_non_dominated_points():
    points = [(1.0, -5.0), (2.0, -6.0), (3.0, -1.0), (10.0, 0.0), (5.0, -1.0)]
    assert pareto_front(points) == [0, 2, 3]
