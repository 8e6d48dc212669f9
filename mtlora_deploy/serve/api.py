"""``mtlora serve`` as a library call: a repository (or a model exported into one first) on a real tritonserver
until stopped, then a clean stop: requests in flight finish, the process exits, its ports are free."""

from __future__ import annotations

import signal
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.serve.repository import MANIFEST, RepositoryOptions, export_triton
from mtlora_deploy.serve.server import Ports, TritonServer


def repository_for(model: str | Path, folder: Path, name: str) -> Path:
    """``model`` when it is a repository written by export-triton, else a repository for it written into
    ``folder`` (an ONNX graph, a plan, or a run folder exported first)."""
    model = Path(model)
    if (model / MANIFEST).is_file():
        return model
    if not model.exists():
        raise ConfigError(f"MODEL_OR_REPO {model} does not exist (expected a repository, .onnx, plan or run folder)")
    return export_triton(model, folder / "repository", RepositoryOptions(name=name)).path


def serve_model(
    model: str | Path,
    ports: Ports,
    address: str = "127.0.0.1",
    triton_env: str | Path | None = None,
    name: str = "mtlora",
    duration: float | None = None,
    console: Console | None = None,
) -> int:
    """Serve until SIGINT/SIGTERM (or ``duration`` seconds); returns tritonserver's exit code."""
    console = console or Console(soft_wrap=True)
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with tempfile.TemporaryDirectory(prefix="mtlora-serve-") as tmp:
            server = TritonServer(repository_for(model, Path(tmp), name), Path(tmp) / "run", ports, address, triton_env)
            for note in server.notes:
                console.print(f"[yellow]note[/] {note}")
            started = time.monotonic()
            server.start()
            try:
                print_endpoints(server, console, time.monotonic() - started)
                deadline = None if duration is None else time.monotonic() + duration
                while not stop.is_set() and server.process.poll() is None:
                    stop.wait(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                if server.process.poll() is not None:
                    raise ConfigError(
                        f"tritonserver stopped by itself (code {server.process.returncode}): {server.first_error()}"
                    )
                console.print("stopping: requests in flight finish first ...")
            finally:
                code = server.stop()
            console.print(
                f"stopped (tritonserver exit code {code}); ports {ports.http}, {ports.grpc}, {ports.metrics} are free"
            )
            return code
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def print_endpoints(server: TritonServer, console: Console, seconds: float) -> None:
    models, p = server.manifest["models"], server.ports
    console.print(f"[green]ready[/] in {seconds:.1f} s: {server.install.origin}")
    console.print(f"  HTTP    {server.url}   (KServe v2; mtlora predict IMG --server {server.url})")
    console.print(f"  gRPC    {server.address}:{p.grpc}")
    console.print(f"  metrics http://{server.address}:{p.metrics}/metrics")
    console.print(
        f"  models  {models['ensemble']} (encoded image bytes), {models['ensemble_rgb']} (uint8 H x W x 3), "
        f"{models['model']} (the graph's own input)"
    )
    console.print("serving; Ctrl-C or SIGTERM stops it")
