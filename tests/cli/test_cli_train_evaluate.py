"""train / evaluate / predict / make-dataset through the CLI, as a user runs them."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from PIL import Image

from mtlora_deploy.cli.main import cli
from tests.conftest import TINY_CLI as TINY


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    args = [
        "train",
        "--preset",
        "mtlora-r16",
        "--tasks",
        "semseg,sal,normals",
        "--data",
        "synthetic",
        *TINY,
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--train-set",
        "synthetic_images=16",
        "-o",
        str(run),
    ]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return run


def test_train_writes_a_run_folder(run_dir):
    assert (run_dir / "checkpoints" / "last.json").is_file()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val" in r] == [2]


def test_evaluate_prints_table_and_writes_json(run_dir, tmp_path):
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            str(run_dir),
            "--data",
            "synthetic",
            "-o",
            str(out),
            "--baseline",
            "semseg=50",
            "--baseline",
            "sal=50",
            "--baseline",
            "normals=30",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert set(data["metrics"]) == {"semseg", "sal", "normals"} and data["num_images"] == 4
    assert data["delta_m_baseline"]["values"] == {"semseg": 50.0, "sal": 50.0, "normals": 30.0}
    assert data["delta_m_baseline"]["name"] == "given" and "delta_m" not in data
    assert isinstance(data["delta_m_vs_given"], float) and "delta-m" in result.output
    assert "vs the given single-task metrics" in " ".join(result.output.split())


def test_predict_writes_pngs(run_dir, tmp_path):
    image = sorted((run_dir / "data" / "JPEGImages").iterdir())[0]
    result = CliRunner().invoke(cli, ["predict", str(image), "-m", str(run_dir), "-o", str(tmp_path / "pred")])
    assert result.exit_code == 0, result.output
    width, height = Image.open(image).size  # every output at the input's own size, not the model's 64 x 64
    for task in ("semseg", "sal", "normals"):
        png = Image.open(tmp_path / "pred" / f"{image.stem}_{task}.png")
        assert png.size == (width, height) and png.mode == "RGB"
    panel_width, panel_height = Image.open(tmp_path / "pred" / f"{image.stem}_panel.png").size
    # input, semseg over the input, one picture per task (3), 4-pixel gaps; a title strip above, a legend below
    assert panel_width == width * 5 + 4 * 4 and panel_height > height + 14


def test_make_dataset_is_deterministic(tmp_path):
    for name in ("a", "b"):
        result = CliRunner().invoke(
            cli,
            [
                "make-dataset",
                "synthetic",
                str(tmp_path / name),
                "--images",
                "6",
                "--seed",
                "3",
                "--height",
                "48",
                "--width",
                "64",
            ],
        )
        assert result.exit_code == 0, result.output
    first = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert first and all((tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes() for p in first)


@pytest.mark.parametrize(
    "args, message",
    [
        (["evaluate", "nope", "--data", "synthetic"], "nope does not exist"),
        (
            ["train", "--preset", "mtlora-r16", "--data", "/nonexistent/pascal", "--max-steps", "1", *TINY],
            "/nonexistent/pascal",
        ),
        (["predict", "missing.jpg", "-m", "nope", "-o", "x"], "nope does not exist"),
    ],
)
def test_bad_input_is_one_line(args, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mtlora_deploy", *args], capture_output=True, text=True, cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "Warning" not in line and "warn" not in line]
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], proc.stderr
