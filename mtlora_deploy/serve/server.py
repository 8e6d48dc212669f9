"""A real ``tritonserver`` on a model repository: found, started on given ports, waited for, stopped cleanly.

Which server: the ``tritonserver`` on PATH (NVIDIA's Triton container), else the one ``nvidia-pytriton`` installs
into the serving environment (``--triton-env``, ``$MTLORA_TRITON_ENV``, or ``<venv>-triton`` beside the toolkit's
virtual environment, which ``make venv`` creates). That environment exists because the Python-backend stub runs the
``python3`` first on PATH in isolation, and PyTriton's stubs need numpy < 2 there, while the toolkit uses numpy 2.

PyTriton's server has the Python backend only. Where the server lacks the model step's native backend, the
repository is served from a copy whose model step is a Python-backend model running ONNX Runtime on the same graph
with the same names, dtypes and batching (``triton_models/onnxruntime_step.py``); the server says so at start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mtlora_deploy.errors import ConfigError, MissingDependencyError
from mtlora_deploy.serve.repository import MODELS_DIR, read_repository_manifest, verify_repository
from mtlora_deploy.serve.schema import check_repository, config_text

ENV_VARIABLE = "MTLORA_TRITON_ENV"
SETUP_HINT = "make venv (it creates .venv-triton), or see the README's Serving section"
NATIVE_BACKENDS = {"onnxruntime_onnx": "onnxruntime", "tensorrt_plan": "tensorrt"}


@dataclass
class ServerInstall:
    """A tritonserver binary and what it needs to run: backends folder, library paths, the stub's python."""

    binary: Path
    backends: Path
    origin: str
    library_paths: list[Path] = field(default_factory=list)
    python_bin: Path | None = None
    stub_version: str | None = None  # PyTriton ships one Python-backend stub per Python version

    def native_backends(self) -> set[str]:
        return {p.name for p in self.backends.iterdir() if p.is_dir()} if self.backends.is_dir() else set()

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.library_paths:
            env["LD_LIBRARY_PATH"] = os.pathsep.join([*map(str, self.library_paths), env.get("LD_LIBRARY_PATH", "")])
        if self.python_bin is not None:
            env["PATH"] = os.pathsep.join([str(self.python_bin), env.get("PATH", "")])
        return env


def default_env() -> Path:
    """``<venv>-triton`` beside the toolkit's virtual environment (``.venv`` -> ``.venv-triton``)."""
    prefix = Path(sys.prefix)
    return prefix.with_name(prefix.name + "-triton")


def find_server(triton_env: str | Path | None = None) -> ServerInstall:
    """The tritonserver to run: ``triton_env``/``$MTLORA_TRITON_ENV`` if given, else PATH's, else ``<venv>-triton``."""
    chosen = triton_env or os.environ.get(ENV_VARIABLE)
    if chosen:
        return _pytriton_install(Path(chosen), "`triton_env`" if triton_env else f"${ENV_VARIABLE}")
    on_path = shutil.which("tritonserver")
    if on_path:
        binary = Path(on_path).resolve()
        return ServerInstall(binary, binary.parent.parent / "backends", f"tritonserver on PATH ({binary})")
    return _pytriton_install(default_env(), "the default serving environment")


def _pytriton_install(env: Path, how: str) -> ServerInstall:
    roots = sorted(env.glob("lib/python3*/site-packages/pytriton/tritonserver"))
    if not roots:
        raise MissingDependencyError(
            f"no tritonserver: none on PATH and {how} {env} has no nvidia-pytriton; set it up with: {SETUP_HINT}"
        )
    root = roots[-1]
    version = root.parents[2].name.removeprefix("python")  # lib/python3.11/site-packages -> 3.11
    home = _venv_home(env)
    return ServerInstall(
        binary=root / "bin" / "tritonserver",
        backends=root / "backends",
        origin=f"nvidia-pytriton's tritonserver in {env} (Python {version} backend stub)",
        library_paths=[root.parents[1] / "nvidia_pytriton.libs", *([home.parent / "lib"] if home else [])],
        python_bin=env / "bin",
        stub_version=version,
    )


def _venv_home(env: Path) -> Path | None:
    cfg = env / "pyvenv.cfg"
    for line in cfg.read_text().splitlines() if cfg.is_file() else []:
        key, _, value = line.partition("=")
        if key.strip() == "home":
            return Path(value.strip())
    return None


def backend_folder(install: ServerInstall, run_dir: Path) -> Path:
    """The backends folder to pass: PyTriton's, with the stub for its Python version linked in (as PyTriton does
    at start); a container's as it is."""
    stubs = install.backends.parent / "python_backend_stubs"
    if install.stub_version is None or not stubs.is_dir():
        return install.backends
    version = install.stub_version
    if not (stubs / version / "triton_python_backend_stub").is_file():
        shipped = ", ".join(sorted(p.name for p in stubs.iterdir()))
        raise MissingDependencyError(
            f"{install.origin}: nvidia-pytriton has no Python-backend stub for Python {version} (it ships {shipped}); "
            "make the serving environment with one of those Python versions"
        )
    folder = run_dir / "backends" / "python"
    folder.mkdir(parents=True, exist_ok=True)
    for source in (*sorted((install.backends / "python").iterdir()), stubs / version / "triton_python_backend_stub"):
        if source.is_file():
            target = folder / source.name
            target.unlink(missing_ok=True)
            target.symlink_to(source)
    return folder.parent


def servable_repository(repository: Path, install: ServerInstall, run_dir: Path) -> tuple[Path, list[str]]:
    """``repository`` itself when the server has the model step's backend; else a copy in ``run_dir`` whose model
    step is the Python-backend ONNX Runtime model (big files linked, not copied). Returns it and what was done."""
    configs = check_repository(repository)
    manifest = verify_repository(repository)
    step = manifest["models"]["model"]
    backend = NATIVE_BACKENDS.get(configs[step].platform, configs[step].backend)
    if backend in install.native_backends():
        return repository.resolve(), []
    if configs[step].platform != "onnxruntime_onnx":
        raise ConfigError(
            f"{repository}: its model step is a {configs[step].platform} and this server ({install.origin}) has no "
            f"{backend} backend; serve a plan with NVIDIA's Triton container (README, Serving), or serve the ONNX graph"
        )
    copy = run_dir / "repository"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(repository.resolve(), copy, copy_function=os.symlink)
    config = configs[step]
    config.ClearField("platform")
    config.ClearField("optimization")
    config.backend = "python"
    (copy / step / "config.pbtxt").unlink()
    (copy / step / "config.pbtxt").write_text(config_text(config))
    shutil.copyfile(MODELS_DIR / "onnxruntime_step.py", copy / step / "1" / "model.py")
    note = (
        f"{install.origin} has no {backend} backend: model step {step} runs as a Python-backend model with ONNX "
        "Runtime on the same graph (same names, dtypes and batching)"
    )
    return copy, [note]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


@dataclass
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port())


class TritonServer:
    """A running tritonserver process; use as a context manager (always stopped, ports freed, on exit).

    Args:
        repository: a repository written by ``export_triton``.
        run_dir: where the log, the backends folder and a rewritten repository go.
        ports: HTTP, gRPC and metrics ports (``Ports.free()`` for tests).
        address: the address every endpoint binds (127.0.0.1 keeps it on this machine).
        triton_env: the serving environment to take the server from (see ``find_server``).
        ready_timeout: seconds to wait for the server and every model to be ready.
    """

    def __init__(
        self,
        repository: str | Path,
        run_dir: str | Path,
        ports: Ports | None = None,
        address: str = "127.0.0.1",
        triton_env: str | Path | None = None,
        ready_timeout: float = 180.0,
    ) -> None:
        self.install = find_server(triton_env)
        self.run_dir, self.ports, self.address = Path(run_dir).resolve(), ports or Ports(), address
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.repository, self.notes = servable_repository(Path(repository), self.install, self.run_dir)
        self.manifest = read_repository_manifest(repository)
        self.ready_timeout, self.log_path, self.process = ready_timeout, self.run_dir / "tritonserver.log", None

    @property
    def url(self) -> str:
        return f"http://{'127.0.0.1' if self.address in ('0.0.0.0', '') else self.address}:{self.ports.http}"

    def command(self) -> list[str]:
        p = self.ports
        return [
            str(self.install.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_folder(self.install, self.run_dir)}",
            f"--http-address={self.address}",
            f"--http-port={p.http}",
            f"--grpc-address={self.address}",
            f"--grpc-port={p.grpc}",
            f"--metrics-address={self.address}",
            f"--metrics-port={p.metrics}",
            "--exit-timeout-secs=30",
        ]

    def start(self) -> TritonServer:
        """Start the process and wait until the server and the ensemble are ready (or fail in one line)."""
        busy = [port for port in (self.ports.http, self.ports.grpc, self.ports.metrics) if port_in_use(port)]
        if busy:
            raise ConfigError(f"port {busy[0]} is in use; choose free `ports`", field="ports")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.install.environment(), cwd=self.run_dir
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        from mtlora_deploy.serve.client import TritonClient

        client, deadline = TritonClient(self.url, timeout=5.0), time.monotonic() + self.ready_timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise ConfigError(f"tritonserver exited with code {self.process.returncode}: {self.first_error()}")
                if client.ready(self.manifest["models"]["ensemble"]):
                    return
                time.sleep(0.25)
        finally:
            client.close()
        self.stop()
        raise ConfigError(f"tritonserver was not ready in {self.ready_timeout:.0f} s: {self.first_error()}")

    def first_error(self) -> str:
        """The server's first error line (its log is in ``run_dir``)."""
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.is_file() else []
        errors = [ln for ln in lines if ln.startswith("E") and "CudaDriverHelper" not in ln]
        return (errors[0] if errors else "no error logged")[:400] + f" (log: {self.log_path})"

    def stop(self, timeout: float = 90.0) -> int:
        """SIGTERM (Triton finishes the requests in flight), wait, kill if it hangs; returns the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
