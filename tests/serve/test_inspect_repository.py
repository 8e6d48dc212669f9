"""``mtlora inspect REPO`` on a Triton repository from export-triton: what the ensembles take and give, read from
its config.pbtxt files and manifest, every file checked against the sha256 the manifest records; a changed file
fails inspect (exit 1) and is refused by ``mtlora serve`` before any server starts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from mtlora_deploy.cli.main import cli
from mtlora_deploy.serve.repository import MANIFEST, verify_repository
from tests.serve.conftest import TASKS


def _mtlora(*args: str) -> subprocess.CompletedProcess:
    """The CLI as a user runs it (errors become one line through ``main``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, "-m", "mtlora_deploy", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_inspect_describes_the_repository_and_verifies_every_file(tiny_repository):
    result = CliRunner().invoke(cli, ["inspect", str(tiny_repository), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    manifest = json.loads((tiny_repository / MANIFEST).read_text())
    assert record["kind"] == "triton" and record["tasks"] == list(TASKS)
    # one bytes input (the encoded image) and one uint8 H x W x 3 input, each on its own ensemble
    assert {(i["model"], i["dtype"], tuple(i["shape"])) for i in record["inputs"]} == {
        ("mtlora", "bytes", ("batch", 1)),
        ("mtlora_rgb", "uint8", ("batch", "?", "?", 3)),
    }
    assert [o["name"] for o in record["outputs"]] == list(TASKS)
    assert record["batch"].startswith(f"1 to {manifest['max_batch_size']}, dynamic batching")
    assert "onnxruntime_onnx" in record["runtime"]
    on_disk = sorted(p.relative_to(tiny_repository).as_posix() for p in tiny_repository.rglob("*") if p.is_file())
    assert sorted(e["file"].removeprefix(f"{tiny_repository}/") for e in record["files"]) == [
        name for name in on_disk if name != MANIFEST
    ]
    assert set(manifest["files"]) == {name for name in on_disk if name != MANIFEST}
    assert all(entry["verified"] is True for entry in record["files"])


def test_a_changed_file_fails_inspect_and_serve(tiny_repository, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repository, repo)
    graph = next(repo.glob("mtlora_model/1/*.onnx"))
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed
    graph.write_bytes(bytes(data))
    inspected = _mtlora("inspect", str(repo))
    assert inspected.returncode == 1
    line = inspected.stderr.strip()
    assert line.startswith("Error: ") and f"mtlora_model/1/{graph.name}: sha256 differs" in line, inspected.stderr
    served = _mtlora("serve", str(repo), "--duration", "0")
    assert served.returncode == 1
    message = f"mtlora_model/1/{graph.name} is corrupt (sha256 differs from {MANIFEST})"
    assert message in served.stderr and len(served.stderr.strip().splitlines()) == 1, served.stderr
    assert "ready" not in served.stdout  # refused before any server started
    try:
        verify_repository(repo)
    except Exception as exc:  # noqa: BLE001 - the type is asserted below
        assert type(exc).__name__ == "WeightsError"
    else:
        raise AssertionError("a changed file passed verify_repository")
