"""What one short command on a lent GPU machine needs around a measurement script (used by ``gpu_profile.py``).

The machine runs one command (at most 10 minutes) and hands back at most ``MAX_RESULT_FILES`` files from $OUT,
none more than two folders down; it has torch, timm, onnx, onnxruntime (CPU), safetensors, click, rich, scipy,
matplotlib, pytest and pytest-xdist, nothing else. So: work in a scratch folder and copy a few flat summaries to
$OUT (``ResultsFolder``); give every section a hard deadline and write what is measured as it is measured
(``Budget``, ``run_section``); record what the numbers depend on (``gpu_environment``); run the ``cuda``-marked
tests in a subprocess (``run_cuda_tests``); and read what inductor and the allocator do not put in the rows
(``CudagraphSkips``, ``StepPeak``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mtlora_deploy.profile.runs import _package_version
from mtlora_deploy.utils.atomic import write_bytes_atomic, write_json_atomic

MAX_RESULT_FILES = 8


# -- results ---------------------------------------------------------------------------------------------------
class ResultsFolder:
    """The folder the GPU machine hands back: flat (plain names, no folders) and at most ``MAX_RESULT_FILES`` files.

    A ninth name, or a name with a folder in it, is a ``ValueError`` before anything is written: the machine would
    drop the file silently. Every write is atomic, so a run cut off mid-write leaves the previous version.
    """

    def __init__(self, path: str | Path, max_files: int = MAX_RESULT_FILES) -> None:
        self.path, self.max_files, self.names = Path(path), max_files, []
        self.path.mkdir(parents=True, exist_ok=True)

    def _target(self, name: str) -> Path:
        if Path(name).name != name or name.startswith("."):
            raise ValueError(f"result file {name!r}: only a plain file name is handed back (no folders)")
        if name not in self.names:
            if len(self.names) >= self.max_files:
                raise ValueError(
                    f"result file {name!r}: {self.max_files} result files already ({', '.join(self.names)})"
                )
            self.names.append(name)
        return self.path / name

    def write_json(self, name: str, data: Any) -> Path:
        target = self._target(name)
        write_json_atomic(target, data)
        return target

    def write_text(self, name: str, text: str) -> Path:
        target = self._target(name)
        write_bytes_atomic(target, text.encode())
        return target


# -- time ------------------------------------------------------------------------------------------------------
class SectionTimeout(BaseException):
    """A section's hard deadline passed. A BaseException, so that library code's ``except Exception`` (a profile
    run that notes a failing candidate and goes on) does not swallow it."""


class Budget:
    """The script's time budget, read from ``clock``, and hard deadlines inside it (SIGALRM, main thread, POSIX).

    ``hard_deadline(s)`` raises ``SectionTimeout`` in the main thread ``s`` seconds later (real time), wherever the
    Python code is (a compile, a timing loop); a long C call is interrupted when it returns. Inside ``shielded()``
    (a result being written) the timeout waits until the block ends.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock, self.seconds = clock, float(seconds)
        self.start = clock()
        self._shield, self._pending, self.fired = 0, False, False

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def _expire(self, signum: int, frame: Any) -> None:
        self.fired = True
        if self._shield:
            self._pending = True
            return
        raise SectionTimeout

    @contextlib.contextmanager
    def hard_deadline(self, seconds: float) -> Iterator[None]:
        if seconds <= 0:
            raise SectionTimeout
        usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
        if not usable:  # no alarm here: the soft checks between steps still hold
            yield
            return
        previous, self.fired = signal.signal(signal.SIGALRM, self._expire), False
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            self._pending = False

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        self._shield += 1
        try:
            yield
        finally:
            self._shield -= 1
        if not self._shield and self._pending:
            self._pending = False
            raise SectionTimeout


@dataclass
class Step:
    """One unit of a section whose results are kept as soon as it ends (a group of measurements, one compile)."""

    label: str
    run: Callable[[], Any]
    min_s: float = 0.0  # not started with less time than this left in its section


@dataclass
class Section:
    """Steps in priority order, with a hard deadline ``cap_s`` after the start (or earlier, at the budget's end
    less what later sections reserve); not started with less than ``min_s`` seconds left."""

    name: str
    steps: list[Step]
    cap_s: float
    min_s: float = 0.0
    record: dict[str, Any] = field(default_factory=lambda: {"status": "not run", "seconds": 0.0, "steps": {}})
    ends_at: float = 0.0  # the deadline on the budget's clock, once started


def run_section(section: Section, budget: Budget, reserve_s: float, flush: Callable[[], None]) -> dict[str, Any]:
    """Run ``section``'s steps until they are done or its deadline passes; ``flush()`` after every step.

    Returns (and keeps in ``section.record``) the status of the section and of each step: done, failed (with the
    error), cut at the deadline, or not started (and why). A failing step is recorded and the next one runs.
    """
    record = section.record
    left = budget.left() - reserve_s
    if left <= 0 or left < section.min_s:
        kept = f" (after {reserve_s:.0f} s kept for later sections)" if reserve_s else ""
        record["status"] = f"not started: {max(left, 0):.0f} s left{kept}, needs {section.min_s:.0f} s"
        return record
    window, start = min(section.cap_s, left), budget.clock()
    section.ends_at, record["deadline_s"] = start + window, round(window, 1)
    try:
        with budget.hard_deadline(window):
            for step in section.steps:
                _run_step(section, step, budget, flush)
        record["status"] = "done"
    except SectionTimeout:
        record["status"] = f"stopped at its deadline ({window:.3g} s)"
        for step in section.steps:
            record["steps"].setdefault(step.label, {"status": "not started: the section's deadline passed"})
    record["seconds"] = round(budget.clock() - start, 1)
    return record


def _run_step(section: Section, step: Step, budget: Budget, flush: Callable[[], None]) -> None:
    """One step and its record; raises ``SectionTimeout`` when the deadline passed during it (also when the code it
    interrupted caught the timeout: a compile that turns it into an error, a profile run that notes it)."""
    steps, remaining = section.record["steps"], section.ends_at - budget.clock()
    if remaining <= 0 or remaining < step.min_s:
        steps[step.label] = {"status": f"not started: {max(remaining, 0):.0f} s left, needs {step.min_s:.0f} s"}
        return
    began = budget.clock()
    try:
        record = {"status": "done", **(step.run() or {})}
    except SectionTimeout:
        steps[step.label] = {"status": "cut at the deadline", "seconds": round(budget.clock() - began, 1)}
        raise
    except Exception as exc:  # noqa: BLE001  (recorded; one broken step must not cost the others)
        record = {"status": f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
    if budget.fired:
        record["status"] = f"cut at the deadline (the interrupted code caught it; then: {record['status']})"
    steps[step.label] = {**record, "seconds": round(budget.clock() - began, 1)}
    with budget.shielded():
        try:
            flush()
        except Exception as exc:  # noqa: BLE001  (the results of the next steps may still be written)
            steps[step.label]["flush"] = f"failed: {type(exc).__name__}: {exc}"
    if budget.fired:
        raise SectionTimeout


# -- environment ------------------------------------------------------------------------------------------------
_PROC_DRIVER = re.compile(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)")


def parse_proc_driver_version(text: str) -> str | None:
    """The driver release in /proc/driver/nvidia/version (proprietary and open kernel modules)."""
    found = _PROC_DRIVER.search(text)
    return found.group(1) if found else None


def nvidia_driver_version() -> str | None:
    """The NVIDIA driver release: nvidia-smi where it exists, else /proc/driver/nvidia/version."""
    if shutil.which("nvidia-smi"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            if done.returncode == 0 and done.stdout.strip():
                return done.stdout.strip().splitlines()[0].strip()
    with contextlib.suppress(OSError):
        return parse_proc_driver_version(Path("/proc/driver/nvidia/version").read_text())
    return None


def cuda_version_text(number: int | None) -> str | None:
    """CUDA's integer versions (13000, 12080) as text (13.0, 12.8)."""
    return None if not number else f"{number // 1000}.{number % 1000 // 10}"


def gpu_environment(base: dict[str, Any]) -> dict[str, Any]:
    """``base`` (the profile's environment: python, torch, GPU name, ...) plus what a GPU run's numbers depend on:
    the driver, the CUDA runtime torch was built with and the CUDA version the driver supports, cuDNN, Triton, and
    whether a C compiler exists (Triton builds its launcher with one: without it inductor cannot compile for CUDA)."""
    import torch

    env = dict(base)
    env["c_compiler"] = next((p for p in map(shutil.which, [os.environ.get("CC") or "cc", "gcc", "clang"]) if p), None)
    env.update(triton=_package_version("triton"), timm=_package_version("timm"), numpy=_package_version("numpy"))
    if not torch.cuda.is_available():
        return env
    driver_api = getattr(torch._C, "_cuda_getDriverVersion", None)
    properties = torch.cuda.get_device_properties(torch.cuda.current_device())
    env.update(
        nvidia_driver=nvidia_driver_version(),
        cuda_runtime=torch.version.cuda,
        cuda_driver_supports=cuda_version_text(driver_api()) if driver_api else None,
        cudnn=torch.backends.cudnn.version(),
        gpu_memory_gb=round(properties.total_memory / 1e9, 1),
        gpu_count=torch.cuda.device_count(),
    )
    return env


def device_name(env: dict[str, Any]) -> str:
    """The GPU's name, or ``cpu (<processor>)``: what every ratio row names."""
    return env.get("gpu") or f"cpu ({env.get('cpu') or 'unknown'})"


def same_gpu(reference_gpu: str, this_gpu: str | None) -> bool:
    """Whether this run's GPU is the reference's model (``H100`` in ``NVIDIA H100 80GB HBM3``; not an H200)."""
    return bool(this_gpu) and re.search(rf"\b{re.escape(reference_gpu)}\b", this_gpu, re.IGNORECASE) is not None


# -- what the rows do not say -------------------------------------------------------------------------------------
SKIP_LOGGERS = ("torch._inductor.cudagraph_utils.__cudagraphs", "torch._inductor.cudagraph_utils.__perf_hints")


def cudagraph_skip_count() -> int | None:
    """inductor's count of graphs it compiled for CUDA graphs and then ran without them ("skipping cudagraphs due
    to ..."): ``torch._dynamo.utils.counters["inductor"]["cudagraph_skips"]`` (torch 2.4 to 2.14 at least)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return None
    return int(counters["inductor"]["cudagraph_skips"])


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(" ".join(record.getMessage().split())[:200])


class CudagraphSkips:
    """Context manager: ``count`` is how many graphs inductor skipped CUDA graphs for inside the block (None where
    the counter does not exist), ``reasons`` the first messages it logged about them (the logger's artifact name
    changed between torch versions: both are listened to)."""

    def __init__(self) -> None:
        self.count: int | None = None
        self.reasons: list[str] = []
        self._handler = _Messages()

    def __enter__(self) -> CudagraphSkips:
        self._start = cudagraph_skip_count()
        for name in SKIP_LOGGERS:
            logging.getLogger(name).addHandler(self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in SKIP_LOGGERS:
            logging.getLogger(name).removeHandler(self._handler)
        end = cudagraph_skip_count()
        self.count = None if end is None or self._start is None else end - self._start
        self.reasons = [m for m in self._handler.messages if "cudagraph" in m.lower()][:5]


class MemoryReader(Protocol):
    """The allocator statistics ``StepPeak`` reads (``CudaMemory`` on a GPU; tests pass their own)."""

    def reset_peak(self) -> None: ...

    def allocated(self) -> int: ...

    def peak_allocated(self) -> int: ...

    def reserved(self) -> int: ...

    def peak_reserved(self) -> int: ...


class CudaMemory:
    """``MemoryReader`` over torch's CUDA caching allocator (synchronised reads)."""

    def __init__(self, device: Any) -> None:
        import torch

        self.torch, self.device = torch, device

    def reset_peak(self) -> None:
        self.torch.cuda.synchronize(self.device)
        self.torch.cuda.reset_peak_memory_stats(self.device)

    def allocated(self) -> int:
        self.torch.cuda.synchronize(self.device)
        return int(self.torch.cuda.memory_allocated(self.device))

    def peak_allocated(self) -> int:
        self.torch.cuda.synchronize(self.device)
        return int(self.torch.cuda.max_memory_allocated(self.device))

    def reserved(self) -> int:
        return int(self.torch.cuda.memory_reserved(self.device))

    def peak_reserved(self) -> int:
        return int(self.torch.cuda.max_memory_reserved(self.device))


STEP_PEAK_METHOD = (
    "torch allocator peak across the whole step (the model moved to the GPU, compilation, CUDA-graph capture and "
    "its memory pool, warm-up and timed calls) above the allocation at the step's start; reserved: the same for "
    "memory the allocator holds (a graph pool stays reserved)"
)


class StepPeak:
    """Context manager: the allocator's peak across a whole step. ``allocated_bytes`` / ``reserved_bytes``: above
    the step's start; ``absolute_bytes``: the peak itself (everything resident counted, as a training loop's
    ``max_memory_allocated`` is). Unlike the profile's per-round peak (reset after warm-up, when a CUDA-graph pool
    already exists) these count the pool that ``reduce-overhead`` captures into. None without a reader (CPU)."""

    def __init__(self, reader: MemoryReader | None) -> None:
        self.reader = reader
        self.allocated_bytes: int | None = None
        self.reserved_bytes: int | None = None
        self.absolute_bytes: int | None = None

    def __enter__(self) -> StepPeak:
        if self.reader is not None:
            self.reader.reset_peak()
            self._allocated, self._reserved = self.reader.allocated(), self.reader.reserved()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.reader is not None:
            self.absolute_bytes = self.reader.peak_allocated()
            self.allocated_bytes = self.absolute_bytes - self._allocated
            self.reserved_bytes = self.reader.peak_reserved() - self._reserved

    def to_dict(self) -> dict[str, Any]:
        return {
            "step_peak_allocated_bytes": self.allocated_bytes,
            "step_peak_reserved_bytes": self.reserved_bytes,
            "step_peak_method": STEP_PEAK_METHOD,
        }


# -- the cuda-marked tests ---------------------------------------------------------------------------------------
def cuda_test_files(root: Path) -> list[str]:
    """Test files with ``cuda``-marked tests (a text search: collecting the whole suite would import every
    optional package the lent machine lacks)."""
    files = sorted((root / "tests").rglob("test_*.py"))
    return [str(p.relative_to(root)) for p in files if "mark.cuda" in p.read_text(errors="replace")]


def cuda_test_command(root: Path, junit: Path) -> list[str]:
    """``python -m pytest -m cuda`` over the files with cuda-marked tests; results as JUnit XML in ``junit``."""
    return [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "cuda",
        "-rA",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        "--continue-on-collection-errors",
        f"--junitxml={junit}",
        *cuda_test_files(root),
    ]


def parse_junit(path: Path) -> list[dict[str, str]]:
    """Every test case in a pytest JUnit XML file: ``test``, ``outcome`` (passed/failed/error/skipped) and
    ``reason``: the skip reason, the failure message's first line, or for an error (a test file that does not
    import: "collection failure") also the exception that its traceback ends with."""
    rows = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        outcome, reason = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                reason = _first_line(child.get("message") or child.text)
                raised = [line[1:].strip() for line in (child.text or "").splitlines() if line.startswith("E ")]
                if child.tag == "error" and raised:
                    reason = f"{reason}: {raised[-1]}"[:300]
                break
        test = "::".join(filter(None, (case.get("classname"), case.get("name"))))
        rows.append({"test": test, "outcome": outcome, "reason": reason})
    return rows


def _first_line(text: str | None) -> str:
    text = (text or "").strip()
    return text.splitlines()[0][:300] if text else ""


def run_cuda_tests(root: Path, work: Path, timeout_s: float) -> dict[str, Any]:
    """Run the cuda-marked tests (``PYTHONPATH=root``) with a timeout; which ran, passed, failed, skipped and why."""
    junit = work / "cuda_tests.xml"
    command = cuda_test_command(root, junit)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    began = time.monotonic()
    try:
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s)
        returncode, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        returncode = None
        output = f"{_text(exc.stdout)}{_text(exc.stderr)}\n[timed out after {timeout_s:.0f} s]"
    cases = parse_junit(junit) if junit.is_file() else []
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")}
    return {
        "command": "PYTHONPATH=. " + " ".join(["python", *command[1:]]).replace(f"--junitxml={junit}", "--junitxml=X"),
        "returncode": returncode,
        "seconds": round(time.monotonic() - began, 1),
        "counts": counts,
        "tests": cases,
        "output_tail": output[-6000:],
    }


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else data or ""
