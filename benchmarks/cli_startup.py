"""How long ``mtlora COMMAND --help`` and a refused option take, per command, in fresh processes (CPU only).

Usage: python benchmarks/cli_startup.py [--repeat 3]

Each row is the median wall time of ``--repeat`` runs of ``python -m mtlora_deploy ...``, the exit code and the heavy
libraries that invocation imported (torch, onnx, onnxruntime, timm, TensorRT, ModelOpt). ``--help`` and option errors
need none of them: tests/cli/test_startup.py checks the imports with :func:`probe` and :data:`BAD_OPTION`; the times
live here, not in a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]  # the probes run here, so they import this checkout's package

HEAVY = ("torch", "onnx", "onnxruntime", "timm", "tensorrt", "tensorrt_rtx", "modelopt")

# Per command, arguments with one refused option value, the last flag given (an option error, before any work).
BAD_OPTION = {
    "info": ["--preset", "bogus"],
    "import-checkpoint": ["ref.pth", "-o", "imported", "--set", "no-equals-sign"],
    "export-reference": ["run", "--bogus"],
    "prepare-data": ["PASCAL_MT.tgz", "--bogus"],
    "make-dataset": ["synthetic", "data", "--seed", "-1"],
    "train": ["--lr", "abc"],
    "evaluate": ["run", "--data", "synthetic", "--batch-size", "0"],
    "predict": ["a.png", "-o", "out", "--bogus"],
    "merge": ["run", "--bogus"],
    "export": ["run", "-o", "m.onnx", "--precision", "bogus"],
    "calibrate": ["--data", "synthetic", "-o", "c.npz", "--seed", "-1"],
    "build-engine": ["x.onnx", "--batch", "abc"],
    "export-triton": ["m.onnx", "--max-batch", "0"],
    "serve": ["m.onnx", "--http-port", "0"],
    "profile": ["x.onnx", "--batch", "x"],
    "bench-serve": ["--duration", "0"],
    "inspect": ["x.onnx", "--bogus"],
    "compare": ["--lr", "abc"],
    "demo": ["--bogus"],
}

_PROBE = (
    "import json, sys, runpy\n"
    "sys.argv = ['mtlora', *sys.argv[1:]]\n"
    "code = 0\n"
    "try:\n"
    "    runpy.run_module('mtlora_deploy', run_name='__main__')\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
    "print(json.dumps({'code': code, 'heavy': heavy}), file=sys.__stdout__)\n"
)


class Probe(NamedTuple):
    """One ``mtlora ARGS`` in a fresh interpreter: seconds, exit code, heavy modules imported, what it wrote."""

    seconds: float
    code: int | str | None
    heavy: list[str]
    output: str


def probe(args: list[str]) -> Probe:
    """Run ``python -m mtlora_deploy ARGS`` in a fresh interpreter and report on it."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - start
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:  # the probe itself failed (an import error at start-up)
        return Probe(elapsed, f"probe failed ({done.returncode})", [], done.stdout + done.stderr)
    report = json.loads(lines[-1])
    return Probe(elapsed, report["code"], report["heavy"], "\n".join(lines[:-1]) + done.stderr)


def measure(args: list[str], repeat: int) -> tuple[float, str]:
    """Median seconds of ``repeat`` runs, and the last run's exit code and heavy imports in words."""
    runs = [probe(args) for _ in range(repeat)]
    last = runs[-1]
    return statistics.median(run.seconds for run in runs), f"exit {last.code}" + (
        f", imported {' '.join(last.heavy)}" if last.heavy else ""
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    from mtlora_deploy.cli.main import COMMANDS

    base, _ = measure(["--version"], options.repeat)
    print(f"python -m mtlora_deploy --version: {base:.2f} s (interpreter + click + package root)")
    print(f"{'command':<18} {'--help':>7}  {'bad option':>10}  outcome (--help / bad option)")
    for name in COMMANDS:
        help_s, help_outcome = measure([name, "--help"], options.repeat)
        bad_s, bad_outcome = measure([name, *BAD_OPTION[name]], options.repeat)
        print(f"{name:<18} {help_s:>6.2f}s  {bad_s:>9.2f}s  {help_outcome} / {bad_outcome}")


if __name__ == "__main__":
    main()
