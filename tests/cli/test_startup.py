"""Start-up: ``--help`` and option errors come before the heavy imports (torch, ONNX, ONNX Runtime, timm, TensorRT).

Each command runs in a fresh interpreter (``benchmarks/cli_startup.py``'s probe, which also times them: the times are
a benchmark, not a test). The lazy pieces it relies on are checked here too: help shows a library default read from
the library's source, and every module that loads checkpoints registers the ``multitask`` kind itself now that the
package ``mtlora_deploy.model`` no longer imports the builder.
"""

from __future__ import annotations

import ast
import inspect
from importlib import import_module
from pathlib import Path

import click
import grimp
import pytest

from benchmarks.cli_startup import BAD_OPTION, probe
from mtlora_deploy.cli.main import COMMANDS
from mtlora_deploy.cli.options import LibraryDefault, signature_default

PACKAGE = Path(__file__).resolve().parents[2] / "mtlora_deploy"


def test_every_command_has_a_refused_option():
    assert set(BAD_OPTION) == set(COMMANDS)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_and_a_bad_option_import_nothing_heavy(name):
    shown = probe([name, "--help"])
    assert shown.code == 0, shown.output
    assert f"Usage: mtlora {name}" in shown.output
    assert shown.heavy == [], f"mtlora {name} --help imported {shown.heavy}"

    args = BAD_OPTION[name]
    flag = [a for a in args if a.startswith("-")][-1]
    refused = probe([name, *args])
    assert refused.code in (1, 2), refused.output
    assert flag in refused.output and "Traceback" not in refused.output, refused.output
    assert refused.heavy == [], f"mtlora {name} {' '.join(args)} imported {refused.heavy}"


# Option errors a command finds itself (not click): it checks its options before importing the library.
CHECKED_IN_THE_COMMAND = [
    (["train", "--set", "no-equals-sign"], "--set"),
    (["train", "--train-set", "seed=1", "--seed", "2"], "--seed 2 both set seed"),
    (["info", "--preset", "mtlora-r16", "--tasks", "bogus"], "tasks: got 'bogus'"),
    (["compare", "--train-set", "no-equals-sign"], "expected KEY=VALUE"),
    (["evaluate", "run", "--data", "synthetic", "--baseline", "semseg"], "--baseline"),
    (["export", "run", "-o", "m.onnx", "--block-size", "7"], "--block-size: got 7"),
    (["build-engine", "x.onnx", "--precision", "int4-wo", "--block-size", "7"], "--block-size: got 7"),
    (["profile", "EXISTING.onnx", "--batch", "x"], "--batch: got 'x'"),
]


@pytest.mark.parametrize(("args", "message"), CHECKED_IN_THE_COMMAND, ids=lambda v: v[0] if isinstance(v, list) else "")
def test_options_the_command_checks_are_checked_before_heavy_imports(args, message, tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"not read: the option is refused first")
    refused = probe([str(tmp_path / "model.onnx") if a == "EXISTING.onnx" else a for a in args])
    assert refused.code == 1 and message in refused.output and "Traceback" not in refused.output, refused.output
    assert refused.heavy == [], f"mtlora {' '.join(args)} imported {refused.heavy}"


def test_the_probe_sees_a_heavy_import(tmp_path):
    """The check above can fail: a command that loads ONNX before it stops is reported."""
    (tmp_path / "garbage.onnx").write_bytes(b"\x08\x07 not a graph")
    refused = probe(["inspect", str(tmp_path / "garbage.onnx")])
    assert refused.code == 1 and "onnx" in refused.heavy, refused


def _library_default_options():
    for name, (module, attr, _) in COMMANDS.items():
        command = getattr(import_module(module), attr)
        for param in command.params:
            if isinstance(param, LibraryDefault):
                yield pytest.param(param, id=f"{name}{param.opts[0]}")


@pytest.mark.parametrize("option", list(_library_default_options()))
def test_help_shows_the_library_default_read_from_source(option):
    module, function = option.function.split(":")
    imported = inspect.signature(getattr(import_module(module), function)).parameters[option.parameter or option.name]
    assert option.library_default() == imported.default
    assert option.get_help_extra(click.Context(click.Command("x")))["default"] == str(imported.default)


def test_signature_default_reads_literals_without_importing_and_imports_for_names(tmp_path, monkeypatch):
    (tmp_path / "noimport_lib.py").write_text(
        'raise RuntimeError("imported")\n'
        "SIZE = 32\n"
        "def run(path, device='cpu', *, batch_size=8, size=SIZE, scale=None): ...\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert signature_default("noimport_lib", "run", "device") == "cpu"
    assert signature_default("noimport_lib", "run", "batch_size") == 8
    assert signature_default("noimport_lib", "run", "scale") is None
    with pytest.raises(RuntimeError, match="imported"):  # a name: only the imported signature has its value
        signature_default("noimport_lib", "run", "size")
    # the real case of a name: weight-only's block size defaults to DEFAULT_BLOCK_SIZE
    assert signature_default("mtlora_deploy.calib.weight_only", "quantize_weights", "block_size") == 32


def _modules_loading_checkpoints() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        calls = [
            node
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_checkpoint"
        ]
        if calls and path.name != "checkpoint.py":
            found.append(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"))
    return found


def test_every_module_that_loads_checkpoints_imports_the_multitask_kind():
    """``checkpoint`` knows no kind by itself and the package ``mtlora_deploy.model`` is lazy: a module that calls
    ``load_checkpoint`` imports the builder (``multitask`` registers itself), at its top or in the calling function."""
    graph = grimp.build_graph("mtlora_deploy", cache_dir=None)
    loaders = _modules_loading_checkpoints()
    assert "mtlora_deploy" in loaders and "mtlora_deploy.model.reference.export" in loaders
    assert not graph.chain_exists(importer="mtlora_deploy.model.checkpoint", imported="mtlora_deploy.model.multitask")
    missing = [m for m in loaders if not graph.chain_exists(importer=m, imported="mtlora_deploy.model.multitask")]
    assert missing == []
