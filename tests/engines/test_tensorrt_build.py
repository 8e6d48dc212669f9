"""build-engine without any TensorRT (both flavours hidden from the process): clear one-line errors, nothing
written; option parsing; precision detection on ONNX graphs made here; the TensorRT modules import (and --help
runs) with tensorrt and tensorrt_rtx unimportable."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mtlora_deploy.engines.manifest import build_manifest, write_manifest
from mtlora_deploy.engines.tensorrt import TensorRTBackend, version_tuple
from mtlora_deploy.engines.tensorrt_build import BatchProfile, BuildSettings
from mtlora_deploy.errors import ConfigError, MissingDependencyError
from mtlora_deploy.model.checkpoint import save_checkpoint
from mtlora_deploy.utils.onnx_info import detect_onnx_precision
from tests.conftest import tiny_model

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None
needs_missing_tensorrt = pytest.mark.skipif(HAVE_TENSORRT, reason="tensorrt is importable here")
HIDE_RUNTIMES = "import sys\nfor name in ('tensorrt', 'tensorrt_rtx'): sys.modules[name] = None\n"


def test_batch_profile_parsing():
    assert BatchProfile.parse("1:8:32") == BatchProfile(1, 8, 32)
    assert BatchProfile.parse("4") == BatchProfile(4, 4, 4)
    for bad in ("8:1:32", "0:1:2", "a:b:c", "1:2"):
        with pytest.raises(ConfigError, match="`batch`"):
            BatchProfile.parse(bad)


def test_build_settings_are_checked_at_the_boundary():
    assert BuildSettings("fp16").batch == BatchProfile(1, 8, 32)
    with pytest.raises(ConfigError, match="`precision`: got 'fp4'"):
        BuildSettings("fp4")
    with pytest.raises(ConfigError, match="`optimization_level`"):
        BuildSettings("fp16", optimization_level=7)


def test_version_tuple():
    assert version_tuple("10.13.0.35") == (10, 13, 0, 35)
    assert version_tuple("11.0.0rc1")[:3] == (11, 0, 0)


def _graph(path, weight: np.ndarray, nodes=(), precision=None):
    """A one-MatMul ONNX graph x[1,4] @ W; ``nodes`` are extra nodes (e.g. Q/DQ) inserted before it."""
    init = numpy_helper.from_array(weight, "W")
    matmul = helper.make_node("MatMul", ["x" if not nodes else nodes[-1].output[0], "W"], ["y"])
    graph = helper.make_graph(
        [*nodes, matmul],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [init],
    )
    model = helper.make_model(graph)
    if precision:
        model.metadata_props.add(key="mtlora.precision", value=json.dumps(precision))  # as the variants write it
    onnx.save(model, str(path))
    return path


def test_detect_onnx_precision(tmp_path):
    w = np.eye(4, dtype=np.float32)
    assert detect_onnx_precision(_graph(tmp_path / "a.onnx", w)) == "fp32"
    cast = [helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16)]
    assert detect_onnx_precision(_graph(tmp_path / "b.onnx", w.astype(np.float16), cast)) == "fp16"
    qdq = [
        helper.make_node("QuantizeLinear", ["x", "s"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s"], ["d"]),
    ]
    assert detect_onnx_precision(_graph(tmp_path / "c.onnx", w, qdq)) == "int8"
    assert detect_onnx_precision(_graph(tmp_path / "d.onnx", w, precision="bf16")) == "bf16"


def _run_cli(args, cwd, hide_runtimes=True):
    """The CLI in a fresh process; with ``hide_runtimes`` neither TensorRT flavour is importable there."""
    code = (HIDE_RUNTIMES if hide_runtimes else "import sys\n") + (
        f"sys.argv = ['mtlora', *{list(map(str, args))!r}]\nfrom mtlora_deploy.cli.main import main\nmain()\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, check=False)


def test_build_engine_without_any_tensorrt_writes_nothing(tmp_path):
    run = tmp_path / "run"
    save_checkpoint(tiny_model(), run / "checkpoints" / "best")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out = tmp_path / "out"
    proc = _run_cli(["build-engine", str(run), "--precision", "fp16", "-o", str(out / "model.plan")], tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ") and "pip install 'mtlora-deploy[tensorrt]'" in lines[0]
    assert "pip install 'mtlora-deploy[tensorrt-rtx]'" in lines[0], "the refusal names both installs"
    assert not out.exists(), "no plan, manifest, timing cache or exported ONNX may be left behind"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nor a default engines/ folder


def test_build_engine_on_an_onnx_file_without_tensorrt(tmp_path):
    onnx_file = _graph(tmp_path / "m.onnx", np.eye(4, dtype=np.float32))
    proc = _run_cli(["build-engine", str(onnx_file), "--precision", "fp32"], tmp_path)
    assert proc.returncode == 1 and "mtlora-deploy[tensorrt]" in proc.stderr
    proc = _run_cli(["build-engine", str(onnx_file), "--precision", "fp32", "--runtime", "tensorrt-rtx"], tmp_path)
    assert proc.returncode == 1 and "'tensorrt_rtx' is not importable" in proc.stderr
    assert "mtlora-deploy[tensorrt-rtx]" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@needs_missing_tensorrt
def test_loading_a_plan_without_tensorrt_says_what_to_install(tmp_path):
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"not built here")
    env = {"tensorrt_version": "10.13.0", "gpu_name": "GPU", "compute_capability": "9.0", "cuda_version": "12.9"}
    write_manifest(plan, build_manifest(env, precision="fp16", tasks=["sal"], image_size=64))
    with pytest.raises(MissingDependencyError, match=r"mtlora-deploy\[tensorrt\]"):
        TensorRTBackend(plan)


def test_tensorrt_modules_import_and_help_runs_without_optional_packages():
    code = (
        "import sys\n"
        "for name in ('tensorrt', 'tensorrt_rtx', 'onnxruntime', 'modelopt'): sys.modules[name] = None\n"
        "import mtlora_deploy.engines.tensorrt, mtlora_deploy.engines.tensorrt_build, mtlora_deploy.engines.manifest\n"
        "import mtlora_deploy.engines.runtimes, mtlora_deploy.engine_pipeline, mtlora_deploy.engines.registry\n"
        "import mtlora_deploy.engines.torch_compiled, mtlora_deploy.cli.build_engine, mtlora_deploy.cli.profile\n"
        "import mtlora_deploy.profile.api, mtlora_deploy.profile.plots\n"
        "from click.testing import CliRunner\n"
        "from mtlora_deploy.cli.main import cli\n"
        "for cmd in ('build-engine', 'profile'):\n"
        "    assert CliRunner().invoke(cli, [cmd, '--help']).exit_code == 0, cmd\n"
        "from mtlora_deploy.engines.tensorrt import load_tensorrt\n"
        "try:\n    load_tensorrt()\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("MissingDependencyError") and "pip install 'mtlora-deploy[tensorrt]'" in out
