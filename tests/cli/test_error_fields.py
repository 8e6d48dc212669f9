"""Library errors carry fields, the CLI names flags (issue 23, item 5).

Library code names the parameter or config field an error is about (``field``, and `name` in backticks in its
text); the CLI writes each as the flag of the command that ran. No string of the library names a ``--flag``
except in a whole ``mtlora COMMAND ...`` line (whose flags must exist) or as another program's flag.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import click
import pytest
import torch

import mtlora_deploy
from mtlora_deploy.cli.flags import flag_for, render
from mtlora_deploy.cli.main import cli
from mtlora_deploy.errors import ConfigError, MTLoRAError, OutputError
from tests.cli.test_bad_input import _mtlora

PACKAGE = Path(mtlora_deploy.__file__).resolve().parent
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
COMMAND_LINE = re.compile(r"\bmtlora (?:--[a-z]+ )*([a-z][a-z-]*)([^;]*)")

# Other programs' flags a library string may name: (module, flag) -> whose.
OTHER_PROGRAMS = {
    **{
        ("serve/server.py", flag): "tritonserver's command line"
        for flag in (
            "--model-repository",
            "--backend-directory",
            "--http-address",
            "--http-port",
            "--grpc-address",
            "--grpc-port",
            "--metrics-address",
            "--metrics-port",
            "--exit-timeout-secs",
        )
    },
}


def _docstring_nodes(tree: ast.AST) -> set[int]:
    """Every bare string statement (module, class, function and attribute docstrings)."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, (ast.Constant, ast.JoinedStr))
    }


def _strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal of ``path`` but docstrings; an f-string's fields read ``{}``."""
    tree = ast.parse(path.read_text())
    skip, inner, out = _docstring_nodes(tree), set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                inner.add(id(value))
                parts.append(value.value if isinstance(value, ast.Constant) else "{}")
            if id(node) not in skip:
                out.append((node.lineno, "".join(parts)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip | inner:
            out.append((node.lineno, node.value))
    return out


def _command_flags(name: str) -> set[str]:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None, f"no command mtlora {name}"
    return {opt for param in command.params for opt in param.opts} | {"--help"}


def test_library_strings_name_no_flag_but_in_a_whole_command_line():
    """Outside cli/, a ``--flag`` stands only in ``mtlora COMMAND ...`` (up to the next ';') and is that command's,
    or is another program's (listed above); any other flag is the CLI's business."""
    group_flags = {opt for param in cli.params for opt in param.opts}
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        if module.startswith("cli/"):
            continue
        for line, text in _strings(path):
            spans = [(m.start(), m.end(), m.group(1)) for m in COMMAND_LINE.finditer(text)]
            for match in FLAG.finditer(text):
                flag = match.group()
                command = next((c for start, end, c in spans if start <= match.start() < end), None)
                if command is not None:
                    if flag not in _command_flags(command) | group_flags:
                        problems.append(f"{module}:{line}: mtlora {command} has no {flag}")
                elif (module, flag) not in OTHER_PROGRAMS:
                    problems.append(f"{module}:{line}: {flag} outside a command line: {text[:80]!r}")
    assert not problems, "\n".join(problems)


def test_the_scan_sees_what_it_must_refuse(tmp_path):
    """The scan's pieces on a made-up module: a flag in a message is found, one in a docstring is not, and a
    command line's flags are checked against that command."""
    module = tmp_path / "m.py"
    module.write_text(
        '"""Docstring: --ignored."""\n'
        "def f(x):\n"
        '    """Also --ignored."""\n'
        '    raise ValueError(f"--batch: got {x}; or run mtlora calibrate --num-images 8 --nope 1")\n'
    )
    (line, text), *rest = _strings(module)
    assert not rest and line == 4 and text == "--batch: got {}; or run mtlora calibrate --num-images 8 --nope 1"
    spans = [(m.start(), m.group(1)) for m in COMMAND_LINE.finditer(text)]
    assert [c for _, c in spans] == ["calibrate"] and text.index("--batch") < spans[0][0]
    flags = _command_flags("calibrate")
    assert "--num-images" in flags and "--nope" not in flags


def test_an_error_keeps_its_field_and_names_it():
    exc = ConfigError("got 0, expected >= 1", field="max_batch")
    assert exc.field == "max_batch" and str(exc) == "`max_batch`: got 0, expected >= 1"
    named = ConfigError("`device` cuda: no GPU here; use `device` cpu", field="device")
    assert str(named) == "`device` cuda: no GPU here; use `device` cpu"  # already named: no prefix
    assert MTLoRAError("plain").field is None and str(MTLoRAError("plain")) == "plain"
    out = OutputError("cannot write x", "x", "disk full", field="output")
    assert (out.path, out.reason, out.field, str(out)) == ("x", "disk full", "output", "`output`: cannot write x")


@click.command("demo-command")
@click.argument("model_path")
@click.option("--opt-level", default=None)
@click.option("--target", "targets", default=None)
@click.option("--output", "-o", default=None)
@click.option("--lr", "base_lr", default=None)
@click.option("--set", "set_items", multiple=True)
@click.option("--train-set", "train_items", multiple=True)
@click.option("--calib", default=None)
def _command(**_):
    """A command with every kind of parameter the mapper knows."""


@pytest.mark.parametrize(
    ("name", "flag"),
    [
        ("opt_level", "--opt-level"),  # the parameter's own name
        ("optimization_level", "--opt-level"),  # the library's name, by FIELD_PARAMS
        ("calibration", "--calib"),
        ("targets", "--target"),  # a parameter named apart from its flag
        ("target", "--target"),  # spelled by the flag
        ("output", "--output"),  # the long form of -o/--output
        ("base_lr", "--lr"),
        ("model_path", "MODEL_PATH"),  # an argument: its metavar
        ("pretrained", "--set pretrained"),  # a model config field
        ("clip_grad", "--train-set clip_grad"),  # a train config field
        ("debug", "mtlora --debug"),  # the group's own option
        ("holdout", None),  # neither: the library's name stays
    ],
)
def test_flag_for_each_kind_of_name(name, flag):
    assert flag_for(_command, name) == flag


def test_render_writes_the_flags_and_leaves_the_rest():
    text = "`optimization_level`: got 9; use `targets` sm89 or `holdout`, set `pretrained`=PATH, not max_batch"
    assert render(text, _command) == (
        "--opt-level: got 9; use --target sm89 or `holdout`, set --set pretrained=PATH, not max_batch"
    )
    assert render(text, None) == text  # no command (the library itself): unchanged


def _command_of(name: str) -> click.Command:
    return cli.get_command(click.Context(cli), name)


def test_library_errors_through_the_real_commands(tmp_path):
    """The errors of the issue, raised by the library, as the command that called it words them."""
    from mtlora_deploy.calib.precision import make_precision_variant
    from mtlora_deploy.engines.tensorrt_build import BatchProfile, BuildSettings
    from mtlora_deploy.serve.server import Ports

    with pytest.raises(ConfigError) as caught:
        BatchProfile(8, 1, 32)
    assert caught.value.field == "batch" and str(caught.value).startswith("`batch`: got 8:1:32")
    assert render(str(caught.value), _command_of("build-engine")).startswith("--batch: got 8:1:32")
    with pytest.raises(ConfigError) as caught:
        BuildSettings("fp16", optimization_level=9)
    assert render(str(caught.value), _command_of("build-engine")).startswith("--opt-level: got 9, expected 0..5")
    with pytest.raises(ConfigError) as caught:
        make_precision_variant(_identity_onnx(tmp_path), "int8", tmp_path / "m.int8.onnx")
    line = render(str(caught.value), _command_of("export"))
    assert "pass --calib FILE.npz" in line and "--calibration" not in line and "`" not in line
    # the library's Ports(http, grpc, metrics) is set by three flags of serve, written as one name
    assert set(Ports.__dataclass_fields__) == {"http", "grpc", "metrics"}
    assert flag_for(_command_of("serve"), "ports") == "--http-port/--grpc-port/--metrics-port"


def _identity_onnx(folder: Path) -> Path:
    """A valid fp32 graph: ``image`` (B, 3, 64, 64) -> ``semseg``, copied."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 64, 64])
    y = helper.make_tensor_value_info("semseg", TensorProto.FLOAT, ["batch", 3, 64, 64])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["semseg"], name="copy")], "g", [x], [y])
    path = folder / "model.fp32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("fields")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "a.png")
    return {"root": root, "onnx": _identity_onnx(root), "png": root / "a.png"}


CUDA = torch.cuda.is_available()
RTX = importlib.util.find_spec("tensorrt_rtx") is not None

# (id, args(files, tmp_path), start of the one error line); each a library error with a field, exit code 1.
CASES = [
    (
        "profile-rounds",
        lambda f, t: ["profile", str(f["onnx"]), "--rounds", "1"],
        "--rounds: got 1, expected at least 2",
    ),
    (
        "profile-precision",
        lambda f, t: ["profile", str(f["onnx"]), "--precision", "fp64"],
        "--precision: got 'fp64', expected any of fp32",
    ),
    (
        "profile-batch",
        lambda f, t: ["profile", str(f["onnx"]), "--batch", "0,8"],
        "--batch: got [0, 8], expected positive batch sizes",
    ),
    pytest.param(
        "profile-device-cuda",
        lambda f, t: ["profile", str(f["onnx"]), "--device", "cuda"],
        "--device cuda: torch.cuda.is_available() is False here; profile with --device cpu",
        marks=pytest.mark.skipif(CUDA, reason="this machine has a CUDA GPU"),
    ),
    (
        "info-set-image-size",
        lambda f, t: ["info", "--preset", "mtlora-r16", "--set", "image_size=100"],
        "--set image_size: got 100; the token grids",
    ),
    (
        "export-triton-name",
        lambda f, t: ["export-triton", str(f["onnx"]), "-o", str(t / "repo"), "--name", "a b"],
        "--name: got 'a b', expected letters, digits",
    ),
    (
        "predict-server",
        lambda f, t: ["predict", str(f["png"]), "--server", "ftp://x", "-o", str(t / "out")],
        "--server: got 'ftp://x', expected http://HOST:PORT",
    ),
    (
        "build-engine-int8-without-calib",
        lambda f, t: ["build-engine", str(f["onnx"]), "--precision", "int8", "-o", str(t / "p.plan")],
        "--precision int8 needs --calib calib/NAME.npz",
    ),
    pytest.param(
        "build-engine-rtx-opt-level",
        lambda f, t: [
            "build-engine",
            str(f["onnx"]),
            "--precision",
            "fp32",
            "--runtime",
            "tensorrt-rtx",
            "--opt-level",
            "3",
            "-o",
            str(t / "p.plan"),
        ],
        "--opt-level: TensorRT-RTX has no builder optimization level",
        marks=pytest.mark.skipif(not RTX, reason="tensorrt_rtx is not installed"),
    ),
]


@pytest.mark.parametrize(("name", "args", "start"), CASES)
def test_the_cli_names_the_flag_the_user_typed(files, tmp_path, name, args, start):
    code, out, err = _mtlora(args(files, tmp_path))
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert code == 1 and len(errors) == 1, err
    assert errors[0].startswith(f"Error: {start}"), errors[0]
    assert "`" not in errors[0] and "Traceback" not in err, err


def test_warnings_name_the_flags_of_the_running_command(capsys):
    from mtlora_deploy.cli.output import output_policy
    from mtlora_deploy.errors import warn

    with click.Context(_command_of("train")), output_policy(verbose=False):
        warn("`num_workers` 64 is more than the 2 CPU cores this process may use")
    assert capsys.readouterr().err.strip() == "warning: --workers 64 is more than the 2 CPU cores this process may use"
