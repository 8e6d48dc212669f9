"""Every ``--help`` example runs as written after ``make demo`` (issue 22: names and examples that hold).

The demo runs first, as its own example does (``mtlora demo --workdir runs/demo``) in a fresh folder; then each
command's example, word for word from its help, in that folder, in an order where an example may use what an
earlier one wrote (import-checkpoint reads export-reference's file). prepare-data needs a PASCAL-MT archive the
demo does not write: the test packs the demo's synthetic set (which has PASCAL-MT's layout) as ``PASCAL_MT.tgz``
first. Slow: the demo alone takes about 2 minutes on a quiet machine, the examples about as long again.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import click
import pytest

from mtlora_deploy.cli.main import COMMANDS, cli

# Examples that read what another example writes come after it (export-reference writes a model of the train
# example's run, import-checkpoint reads it back); the rest keep the command table's order.
ORDER = ("export-reference", "import-checkpoint")


def help_example(name: str | None) -> list[str]:
    """The words of the ``Example:`` line of a command's help (the group's for None)."""
    ctx = click.Context(cli)
    command = cli if name is None else cli.get_command(ctx, name)
    lines = [line.strip() for line in (command.help or "").splitlines() if line.strip().startswith("Example:")]
    assert len(lines) == 1, f"{name or 'mtlora'}: expected one Example: line in its help"
    words = shlex.split(lines[0].removeprefix("Example:"))
    assert words[0] == "mtlora"
    return words[1:]


def _run(words: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, "-m", "mtlora_deploy", *words]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=1800)


@pytest.mark.slow
def test_every_help_example_runs_after_the_demo(tmp_path):
    demo = help_example("demo")
    proc = _run(demo, tmp_path)
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(tmp_path / "PASCAL_MT.tgz", "w:gz") as archive:
        archive.add(tmp_path / "runs" / "demo" / "train" / "data", arcname="PASCAL_MT")
    names = [n for n in COMMANDS if n != "demo" and n not in ORDER] + list(ORDER)
    failures = []
    for name in [None, *names]:
        words = help_example(name)
        proc = _run(words, tmp_path)
        if proc.returncode != 0:
            failures.append(f"mtlora {shlex.join(words)}: exit {proc.returncode}: {proc.stderr.strip()[-400:]}")
    assert not failures, "\n".join(failures)
