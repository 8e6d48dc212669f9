"""Every ``--help`` example runs as written after ``make demo`` (issue 22: names and examples that hold).

The demo runs first, as its own example does (``mtlora demo --workdir runs/demo``) in a fresh folder; then each
command's example, word for word from its help, in that folder, in an order where an example may use what an
earlier one wrote (import-checkpoint reads export-reference's file). prepare-data needs a PASCAL-MT archive the
demo does not write: the test packs the demo's synthetic set (which has PASCAL-MT's layout) as ``PASCAL_MT.tgz``
first. ``serve`` runs until stopped: it starts in the background, the ``bench-serve`` example measures it once it
is ready, and SIGTERM must then stop it with exit code 0. Slow: the demo alone takes about 2 minutes on a quiet
machine, the examples about as long again.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import click
import pytest

from mtlora_deploy.cli.main import COMMANDS, cli

# Examples that read what another example writes come after it (export-reference writes a model of the train
# example's run, import-checkpoint reads it back); the rest keep the command table's order.
ORDER = ("export-reference", "import-checkpoint")
# The server's example runs in the background; the client's example needs it (both use the examples' port 8000,
# and the server Triton's default gRPC and metrics ports 8001 and 8002).
SERVER, CLIENT = "serve", "bench-serve"
EXAMPLE_PORTS = (8000, 8001, 8002)


def help_example(name: str | None) -> list[str]:
    """The words of the ``Example:`` line of a command's help (the group's for None)."""
    ctx = click.Context(cli)
    command = cli if name is None else cli.get_command(ctx, name)
    lines = [line.strip() for line in (command.help or "").splitlines() if line.strip().startswith("Example:")]
    assert len(lines) == 1, f"{name or 'mtlora'}: expected one Example: line in its help"
    words = shlex.split(lines[0].removeprefix("Example:"))
    assert words[0] == "mtlora"
    return words[1:]


def _command(words: list[str]) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    return [sys.executable, "-m", "mtlora_deploy", *words], env


def _run(words: list[str], cwd: Path) -> subprocess.CompletedProcess:
    command, env = _command(words)
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=1800)


def _ready(server: subprocess.Popen, url: str, timeout: float = 300.0) -> bool:
    """Whether the server answers ready at ``url`` before it exits or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(1.0)
    return False


def _served_words() -> tuple[list[str], list[str], int]:
    """The serve and bench-serve examples' words and the HTTP port they use: as written, or, where something on
    this machine already holds one of the examples' ports, moved to free loopback ports (the same examples)."""
    from mtlora_deploy.serve.server import Ports, port_in_use

    server, client = help_example(SERVER), help_example(CLIENT)
    if not any(port_in_use(port) for port in EXAMPLE_PORTS):
        return server, client, EXAMPLE_PORTS[0]
    ports = Ports.free()
    server = [str(ports.http) if w == str(EXAMPLE_PORTS[0]) else w for w in server]
    server += ["--grpc-port", str(ports.grpc), "--metrics-port", str(ports.metrics)]
    client = [w.replace(f":{EXAMPLE_PORTS[0]}", f":{ports.http}") for w in client]
    return server, client, ports.http


def _served_example(cwd: Path) -> list[str]:
    """Run the serve example in the background, the bench-serve example against it, then stop the server with
    SIGTERM; the failures found (empty when both examples did what their help says)."""
    failures = []
    server_words, client_words, port = _served_words()
    url = f"http://127.0.0.1:{port}/v2/health/ready"
    command, env = _command(server_words)
    server = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if not _ready(server, url):
            failures.append(f"mtlora {shlex.join(server_words)}: not ready on {url}")
        else:
            proc = _run(client_words, cwd)
            if proc.returncode != 0:
                failures.append(f"mtlora {shlex.join(client_words)}: exit {proc.returncode}: {proc.stderr[-400:]}")
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=120)
        if server.returncode != 0:
            failures.append(f"mtlora {shlex.join(server_words)}: SIGTERM gave exit {server.returncode}: {err[-400:]}")
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    return failures


@pytest.mark.slow
def test_every_help_example_runs_after_the_demo(tmp_path):
    demo = help_example("demo")
    proc = _run(demo, tmp_path)
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(tmp_path / "PASCAL_MT.tgz", "w:gz") as archive:
        archive.add(tmp_path / "runs" / "demo" / "train" / "data", arcname="PASCAL_MT")
    names = [n for n in COMMANDS if n not in ("demo", SERVER, CLIENT, *ORDER)] + list(ORDER)
    failures = []
    for name in [None, *names]:
        words = help_example(name)
        proc = _run(words, tmp_path)
        if proc.returncode != 0:
            failures.append(f"mtlora {shlex.join(words)}: exit {proc.returncode}: {proc.stderr.strip()[-400:]}")
    failures += _served_example(tmp_path)
    assert not failures, "\n".join(failures)
