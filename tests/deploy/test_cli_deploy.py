"""``mtlora merge`` and ``mtlora export`` from the command line: tables, files, one-line errors."""

import subprocess
import sys

from click.testing import CliRunner

import mtlora_deploy
from mtlora_deploy.cli.main import cli
from mtlora_deploy.deploy.merge import is_merged
from mtlora_deploy.model.checkpoint import save_checkpoint
from tests.conftest import randomize_lora, tiny_model


def _run(tmp_path, preset="mtlora-r16"):
    model = tiny_model(preset, tasks=("semseg", "sal"))
    randomize_lora(model)
    save_checkpoint(model, tmp_path / "run" / "checkpoints" / "best")
    return tmp_path / "run"


def test_merge_command_prints_counts_and_writes_a_loadable_folder(tmp_path):
    result = CliRunner().invoke(cli, ["merge", str(_run(tmp_path)), "-o", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    assert "before" in result.output and "after" in result.output and "deployed" in result.output
    assert sorted(p.name for p in (tmp_path / "merged").iterdir()) == ["model.json", "model.safetensors"]
    assert is_merged(mtlora_deploy.load(tmp_path / "merged"))


def test_export_command_errors_are_one_line(tmp_path):
    run = _run(tmp_path, "lora")
    args = ["export", str(run), "-o", str(tmp_path / "m.onnx"), "--image-size", "96"]
    proc = subprocess.run([sys.executable, "-m", "mtlora_deploy", *args], capture_output=True, text=True, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: --image-size: got 96; the token grids (24, 12, 6, 3)")
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "missing"), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code != 0 and "missing: checkpoint does not exist" in str(result.exception)
    assert not (tmp_path / "m.onnx").exists()


def test_export_command_writes_a_checked_graph(tmp_path):
    run = _run(tmp_path, "lora")
    result = CliRunner().invoke(cli, ["export", str(run), "-o", str(tmp_path / "m.onnx"), "--legacy-exporter"])
    assert result.exit_code == 0, result.output
    assert "relative error" in result.output and "torchscript / 17" in result.output
    assert (tmp_path / "m.onnx").is_file()
