"""Every command has help with an example; optional packages stay unimported; user errors are one line."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from mtlora_deploy.cli.main import COMMANDS, cli
from mtlora_deploy.model.reference.keys import save_reference_checkpoint
from tests.conftest import randomize_lora, tiny_model

TINY_SET = ["--set", "backbone=swin_test_tiny", "--set", "image_size=64", "--set", "task_agnostic_rank=4"]


def test_top_level_help_lists_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "info" in result.output and "import-checkpoint" in result.output


@pytest.mark.parametrize("name", [n for n in COMMANDS if __import__("importlib").util.find_spec(COMMANDS[n][0])])
def test_every_command_help_ends_with_an_example(name):
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example: mtlora " + name in " ".join(result.output.split())


def test_help_and_imports_do_not_load_optional_or_heavy_packages():
    code = (
        "import sys, pkgutil, importlib, mtlora_deploy\n"
        "from click.testing import CliRunner\n"
        "from mtlora_deploy.cli.main import cli\n"
        "CliRunner().invoke(cli, ['--help'])\n"
        "bad = [m for m in ('tensorrt', 'modelopt', 'onnxruntime', 'torch') if m in sys.modules]\n"
        "print(bad)\n"
        "for m in pkgutil.walk_packages(mtlora_deploy.__path__, 'mtlora_deploy.'):\n"
        "    m.name.endswith('__main__') or importlib.import_module(m.name)\n"
        "print([m for m in ('tensorrt', 'modelopt', 'onnxruntime') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]", "mtlora --help imported " + out[0]
    assert out[1] == "[]", "importing every module imported " + out[1]


def test_info_json_has_integer_counts():
    result = CliRunner().invoke(cli, ["info", "--preset", "mtlora-r16", "--tasks", "semseg,sal", *TINY_SET, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert isinstance(data["trainable_params"], int) and isinstance(data["total_params"], int)
    assert data["trainable_params"] < data["total_params"]
    assert set(data["tasks"]) == {"semseg", "sal"} and data["tasks"]["semseg"]["shape"] == [21, 64, 64]


def test_info_table_prints():
    result = CliRunner().invoke(cli, ["info", "--preset", "lora", *TINY_SET])
    assert result.exit_code == 0 and "after merging" in result.output


def test_import_checkpoint_command(tmp_path):
    model = tiny_model("mtlora-r16")
    randomize_lora(model)
    save_reference_checkpoint(model, tmp_path / "ref.pth")
    args = ["import-checkpoint", str(tmp_path / "ref.pth"), "--preset", "mtlora-r16", *TINY_SET]
    args += ["--set", "decoder_widths=[4,4,8,8]", "--set", "head_channels=16", "-o", str(tmp_path / "out")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "model.json").is_file()


def test_user_errors_are_one_line_with_exit_1(tmp_path):
    cmd = [sys.executable, "-m", "mtlora_deploy", "info", "--preset", "mtlora-r16", "--tasks", "semseg,depth"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["Error: tasks: got 'depth', expected one of semseg, human_parts, sal, normals, edge"]
    cmd = [
        sys.executable,
        "-m",
        "mtlora_deploy",
        "import-checkpoint",
        str(tmp_path / "nope.pth"),
        "-o",
        str(tmp_path / "o"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 1 and "nope.pth does not exist" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_debug_comes_from_the_parsed_group_option(monkeypatch, capsys):
    from mtlora_deploy.cli.main import main
    from mtlora_deploy.errors import ConfigError

    bad = ["info", "--preset", "mtlora-r16", "--tasks", "semseg,depth"]
    monkeypatch.setattr(sys, "argv", ["mtlora", *bad])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1 and capsys.readouterr().err.startswith("Error: tasks: got 'depth'")
    monkeypatch.setattr(sys, "argv", ["mtlora", "--debug", *bad])
    with pytest.raises(ConfigError, match="tasks: got 'depth'"):  # --debug: the exception itself, traceback and all
        main()
    # '--debug' as the value of another option is not the flag: still one line
    monkeypatch.setattr(sys, "argv", ["mtlora", "info", "--preset", "mtlora-r16", "--set", "--debug"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code != 0 and "Traceback" not in capsys.readouterr().err


def test_evaluate_and_predict_defaults_are_the_library_functions_and_show_in_help():
    import inspect

    from mtlora_deploy.report.evaluate import evaluate_artifact
    from mtlora_deploy.report.predict import predict_images

    for command, function, names in [
        ("evaluate", evaluate_artifact, ("split", "backend", "device", "batch_size")),
        ("predict", predict_images, ("backend", "device")),
    ]:
        text = " ".join(CliRunner().invoke(cli, [command, "--help"]).output.split())
        for name in names:
            default = inspect.signature(function).parameters[name].default
            assert f"--{name.replace('_', '-')}" in text and f"[default: {default}" in text, (
                command,
                name,
            )  # click adds "; x>=1" for ranges
