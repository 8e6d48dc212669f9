"""Quiet by default: what a user sees from ``mtlora train`` and an int8 ``mtlora export`` is the toolkit's own lines.

Each command runs as a user runs it, in a fresh ``python -m mtlora_deploy`` process, so nothing of the test
process (warning filters, loggers, ONNX Runtime's C++ log) hides or adds anything. No library warning, no
source-line echo, no library log line; what matters (random init, too few calibration images) once, in one line;
``--verbose`` lets the libraries' lines through.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_CLI as TINY

# What leaks when a library speaks for itself: Python warnings (with the source line they echo), torch's worker
# advice, ONNX Runtime's quantizer (root logger) and C++ log, file paths of installed packages.
LIBRARY_TEXT = re.compile(
    r"Warning:|warnings\.warn|site-packages|worker processes|Bias of Gemm|\[W:onnxruntime|pre-processing before"
)


def _mtlora(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MTLORA_", "PYTHONWARNINGS"))}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, "-m", "mtlora_deploy", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=900)


def _assert_no_library_text(proc: subprocess.CompletedProcess) -> None:
    for line in (proc.stdout + proc.stderr).splitlines():
        assert not LIBRARY_TEXT.search(line), line
    for line in proc.stderr.splitlines():  # stderr holds nothing but the toolkit's one-line warnings
        assert line.startswith("warning: ") or not line.strip(), proc.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A tiny run trained by the CLI with its default DataLoader workers, logging every 2 steps."""
    folder = tmp_path_factory.mktemp("quiet")
    args = ["train", "--preset", "mtlora-r16", "--tasks", "semseg,sal", "--data", "synthetic", *TINY]
    args += ["--max-steps", "6", "--batch-size", "4", "--train-set", "synthetic_images=16"]
    proc = _mtlora(*args, "--train-set", "log_every=2", "-o", "run", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return folder, proc


def test_train_says_what_matters_once_and_nothing_of_the_libraries(trained):
    _, proc = trained
    _assert_no_library_text(proc)
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "built without pretrained weights (random init)" in warnings[0], proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    steps = [line for line in lines if re.match(r"step \d+/6  loss ", line)]
    assert [line.split()[1] for line in steps] == ["2/6", "4/6", "6/6"]  # one line every log_every steps
    validations = [line.strip() for line in lines if line.strip().startswith("validation @ step ")]
    # 12 train images / batch 4: one validation line per epoch (3 steps), the final one as the table's title
    assert [v.split(":")[0] for v in validations] == ["validation @ step 3", "validation @ step 6 (final)"]
    assert "delta-m vs single-task reference" in validations[0]
    assert "delta-m -" in proc.stdout.replace("\n", " ") and "PASCAL-Context" in proc.stdout
    assert len(lines) < 30, proc.stdout


def test_int8_export_prints_no_library_lines(trained):
    folder, _ = trained
    calib = ["calibrate", "--data", "synthetic", "--model", "run", "--num-images", "8", "-o", "calib/train.npz"]
    assert _mtlora(*calib, cwd=folder).returncode == 0
    export = ["export", "run", "-o", "onnx/model.int8.onnx", "--precision", "int8", "--calib", "calib/train.npz"]
    export += ["--calib-method", "max", "--fidelity-images", "2"]
    proc = _mtlora(*export, cwd=folder)
    assert proc.returncode == 0, proc.stderr
    _assert_no_library_text(proc)
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "has 8 images; TensorRT recommends at least 500" in warnings[0], proc.stderr
    # -o is the file written; the fp32 graph it is made from goes where the output says
    text = " ".join(proc.stdout.split())
    assert "written first to onnx/model.fp32.onnx" in text and "wrote onnx/model.int8.onnx (int8)" in text
    assert sorted(p.name for p in (folder / "onnx").glob("*.onnx")) == ["model.fp32.onnx", "model.int8.onnx"]

    verbose = _mtlora("--verbose", *export, cwd=folder)
    assert verbose.returncode == 0, verbose.stderr
    # what the quiet default held back (the quantizer's and ONNX IR passes' log lines) comes through with --verbose
    library = [line for line in verbose.stderr.splitlines() if line.strip() and not line.startswith("warning: ")]
    assert library and any(re.search(r"Bias of Gemm|\] INFO: |onnx", line) for line in library), verbose.stderr
