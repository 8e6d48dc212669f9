"""Real TensorRT-RTX builds on this CPU-only machine (ahead of time, no GPU needed): tiny fp32 / fp16 / int8 graphs
made here, plan and manifest content checked; the failure cases give one line and leave nothing behind; the
timing-cache merge under a file lock; loading a plan refuses cleanly without a GPU.

Builds share module fixtures (a tiny graph builds in about a second). Running a plan needs a GPU: those tests are
in tests/engines/test_tensorrt.py and are marked ``cuda``/``tensorrt``.
"""

import hashlib
import importlib.util
import json
import textwrap

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from mtlora_deploy.engine_pipeline import build_engine
from mtlora_deploy.engines.manifest import manifest_path, read_manifest
from mtlora_deploy.engines.plan_layers import layer_summary
from mtlora_deploy.engines.tensorrt_build import EngineBuildError
from mtlora_deploy.errors import ConfigError, MissingDependencyError

pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.skipif(
        importlib.util.find_spec("tensorrt_rtx") is None,
        reason="tensorrt_rtx not importable (pip install 'mtlora-deploy[tensorrt-rtx]')",
    ),
]
SIZE = 16


def _save(path, nodes, inits, in_dtype=TensorProto.FLOAT, shape=("N", 3, SIZE, SIZE), out_shape=("N", 4)):
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", in_dtype, list(shape))],
        [helper.make_tensor_value_info("sal", in_dtype, list(out_shape))],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in {"tasks": ["sal"], "image_size": SIZE}.items():  # as mtlora export writes them
        model.metadata_props.add(key=f"mtlora.{key}", value=json.dumps(value))
    onnx.save(model, str(path))
    return path


def _tiny_graph(path, precision="fp32"):
    """Conv 3->8 (3x3) -> Relu -> global pool -> MatMul 8->4 named ``sal``; fp16 casts inside, or Q/DQ on the conv."""
    rng = np.random.default_rng(0)
    w, m = rng.standard_normal((8, 3, 3, 3)).astype(np.float32), rng.standard_normal((8, 4)).astype(np.float32)
    x, nodes, inits = "image", [], [numpy_helper.from_array(m, "m")]
    if precision == "fp16":
        nodes.append(helper.make_node("Cast", ["image"], ["x16"], to=TensorProto.FLOAT16, name="to_fp16"))
        inits = [numpy_helper.from_array(m.astype(np.float16), "m"), numpy_helper.from_array(w.astype(np.float16), "w")]
        x = "x16"
    elif precision == "int8":
        scale = float(np.abs(w).max() / 127)
        inits += [
            numpy_helper.from_array(np.round(w / scale).astype(np.int8), "wq"),
            numpy_helper.from_array(np.array(scale, np.float32), "ws"),
            numpy_helper.from_array(np.array(4.0 / 127, np.float32), "xs"),
            numpy_helper.from_array(np.array(0, np.int8), "zp"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["image", "xs", "zp"], ["xq"], name="image_q"),
            helper.make_node("DequantizeLinear", ["xq", "xs", "zp"], ["xd"], name="image_dq"),
            helper.make_node("DequantizeLinear", ["wq", "ws", "zp"], ["w"], name="w_dq"),
        ]
        x = "xd"
    else:
        inits.append(numpy_helper.from_array(w, "w"))
    nodes += [
        helper.make_node("Conv", [x, "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "m"], ["sal16" if precision == "fp16" else "sal"], name="head"),
    ]
    if precision == "fp16":
        nodes.append(helper.make_node("Cast", ["sal16"], ["sal"], to=TensorProto.FLOAT, name="to_fp32"))
    return _save(path, nodes, inits)


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("graphs")
    return {p: _tiny_graph(folder / f"tiny_{p}.onnx", p) for p in ("fp32", "fp16", "int8")}


@pytest.fixture(scope="module")
def fp32_build(graphs, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp32") / "tiny_fp32.plan"
    return build_engine(graphs["fp32"], "fp32", out, batch="1:2:4", runtime="tensorrt-rtx")


@pytest.fixture(scope="module")
def int8_build(graphs, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "tiny_int8.plan"
    with pytest.warns(UserWarning, match="weight-only GEMM") as caught:
        result = build_engine(graphs["int8"], "int8", out, batch="1:2:4", runtime="auto")
    result.warnings = [str(w.message) for w in caught]
    return result


def test_fp32_plan_and_manifest(fp32_build, graphs):
    import tensorrt_rtx

    plan, manifest = fp32_build.plan, read_manifest(fp32_build.plan)
    assert manifest == fp32_build.manifest and manifest_path(plan) == fp32_build.manifest_path
    assert manifest["runtime"] == "tensorrt-rtx" and manifest["runtime_version"] == tensorrt_rtx.__version__
    assert manifest["target_compute_capabilities"] == ["8.6", "8.9", "12.0"]  # the package's portable set
    assert (
        manifest["builder"]["targets_source"] == "TensorRT-RTX default"
        and "optimization_level" not in manifest["builder"]
    )
    assert manifest["gpu_name"] is None and manifest["compute_capability"] is None  # built ahead of time
    assert manifest["precision"] == "fp32" and manifest["precision_notes"] == []
    assert manifest["tasks"] == ["sal"] and manifest["image_size"] == SIZE  # from the graph's metadata
    assert manifest["batch_profile"] == {"min": 1, "opt": 2, "max": 4}
    assert manifest["inputs"] == [{"name": "image", "shape": [-1, 3, SIZE, SIZE], "dtype": "float32"}]
    assert manifest["outputs"] == [{"name": "sal", "shape": [-1, 4], "dtype": "float32"}]
    data = plan.read_bytes()
    assert manifest["plan"] == {"file": plan.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert manifest["onnx"]["sha256"] == hashlib.sha256(graphs["fp32"].read_bytes()).hexdigest()
    summary = manifest["layer_summary"]
    assert summary["compute_layers"] == 2 and summary["compute_layers_with_int8_inputs"] == 0  # the conv and the GEMM
    assert summary["compute_input_types"] == {"Float": 2} and summary["tactics_at"] == "load (JIT on the GPU)"
    assert _files(plan.parent) == ["tiny_fp32.plan", "tiny_fp32.plan.json"]  # no timing cache: rtx has none
    # no --workspace-gib: the runtime's own pool limit (as trtexec), recorded as what the builder had
    assert manifest["builder"]["workspace_source"] == "tensorrt_rtx default"
    assert manifest["builder"]["workspace_bytes"] >= 8 << 30


def test_fp16_plan_through_the_cli_for_one_target(graphs, tmp_path, run_cli):
    proc = run_cli(
        [
            "build-engine",
            graphs["fp16"],
            "--precision",
            "fp16",
            "--target",
            "sm89",
            "--batch",
            "1:1:2",
            "-o",
            tmp_path / "engines" / "tiny_fp16.plan",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "tensorrt-rtx" in proc.stdout and "needs a supported NVIDIA GPU" in proc.stdout
    manifest = read_manifest(tmp_path / "engines" / "tiny_fp16.plan")
    assert manifest["target_compute_capabilities"] == ["8.9"] and manifest["builder"]["targets_source"] == "given"
    assert manifest["precision"] == "fp16" and set(manifest["layer_summary"]["compute_input_types"]) == {"Half"}
    assert _files(tmp_path) == ["engines", "engines/tiny_fp16.plan", "engines/tiny_fp16.plan.json"]


def test_int8_plan_says_what_tensorrt_rtx_computes(int8_build):
    manifest = int8_build.manifest
    assert manifest["precision"] == "int8" and manifest["runtime"] == "tensorrt-rtx"  # auto: no GPU -> rtx
    summary = manifest["layer_summary"]
    assert summary["compute_layers"] == 2 and summary["compute_layers_with_int8_inputs"] == 1  # the Q/DQ conv
    assert summary["tactics_at"] == "load (JIT on the GPU)"
    (note,) = manifest["precision_notes"]
    assert note == int8_build.warnings[0] and "1 of 2 GEMM/convolution layers" in note
    assert "INT8 tensor-core activations are not guaranteed" in note and "full TensorRT (runtime tensorrt)" in note


def test_layer_summary_reads_the_builders_layer_list():
    text = textwrap.dedent("""\
        Layers:
        Name: a, LayerType: gemm, Inputs: [ { Name: x, Datatype: Int8, Format: f }], Constants: [ { Datatype: Float }], Outputs: [], TacticName: __myelin_CASK_STUB, StreamId: 0
        Name: b, LayerType: kgen, Inputs: [ { Name: y, Datatype: Float }], Constants: [], Outputs: [], TacticName: k, StreamId: 0
        Name: c, LayerType: correlation, Inputs: [ { Name: z, Datatype: Half }], Constants: [], Outputs: [], TacticName: sm89_conv, StreamId: 0
        """)  # noqa: E501
    assert layer_summary(text) == {
        "layers": 3,
        "compute_layers": 2,
        "compute_layers_with_int8_inputs": 1,
        "compute_input_types": {"Int8": 1, "Half": 1},
        "compute_layers_with_low_precision_inputs": {"Int8": 1},
        "compute_layers_with_low_precision_weights": 0,
        "low_precision_weights": {},
        "constant_bytes": 0,  # the constants here name no dimensions
        "tactics_at": "build",
    }
    assert layer_summary("") is None


# -- failures: one line, nothing left behind ------------------------------------------------------------------------
def test_an_op_the_parser_rejects_is_reported_with_its_node_name(tmp_path, run_cli):
    bad = _save(
        tmp_path / "bad.onnx",
        [helper.make_node("FrobnicateTensor", ["image"], ["sal"], name="frob_1")],
        [],
        out_shape=("N", 3, SIZE, SIZE),
    )
    out = tmp_path / "out"
    with pytest.raises(EngineBuildError) as info:
        build_engine(bad, "fp32", out / "bad.plan", runtime="tensorrt-rtx")
    message = str(info.value)
    assert "\n" not in message and "FrobnicateTensor node 'frob_1'" in message and "TensorRT-RTX ONNX parser" in message
    proc = run_cli(["build-engine", bad, "--precision", "fp32", "-o", out / "bad.plan"], tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and "frob_1" in lines[0], proc.stderr
    assert not out.exists() and _files(tmp_path) == ["bad.onnx"]


def test_running_out_of_the_workspace_pool_says_which_option_to_change(graphs, tmp_path, run_cli):
    out = tmp_path / "out" / "tiny.plan"
    args = ["build-engine", graphs["fp32"], "--precision", "fp32", "--batch", "1:2:8", "-o", out]
    proc = run_cli([*args, "--workspace-gib", "1e-6"], tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "ran out of its workspace pool" in lines[0] and "at max batch 8" in lines[0]
    assert "--workspace-gib" in lines[0] and "--batch" in lines[0]
    assert _files(tmp_path) == []
    manifest_workspace = 1 << 30
    assert run_cli([*args, "--workspace-gib", "1"], tmp_path).returncode == 0  # the same graph fits in 1 GiB
    assert read_manifest(out)["builder"]["workspace_bytes"] == manifest_workspace
    assert read_manifest(out)["builder"]["workspace_source"] == "given"


def test_dynamic_height_and_width_are_refused_in_one_line(tmp_path, run_cli):
    rng = np.random.default_rng(0)
    graph = _save(
        tmp_path / "dyn.onnx",
        [helper.make_node("Conv", ["image", "w"], ["sal"], name="conv")],
        [numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "w")],
        shape=("N", 3, "H", "W"),
        out_shape=("N", 4, "H", "W"),
    )
    proc = run_cli(["build-engine", graph, "--precision", "fp32", "-o", tmp_path / "out" / "dyn.plan"], tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "input 'image' has dynamic axes" in lines[0] and "--image-size" in lines[0]
    assert _files(tmp_path) == ["dyn.onnx"]


@pytest.mark.parametrize(
    "option, value, words",
    [
        ("--opt-level", "5", "has no builder optimization level"),
        ("--timing-cache", "t.cache", "has no timing cache"),
    ],
)
def test_tensorrt_only_options_are_refused_on_tensorrt_rtx(graphs, tmp_path, option, value, words, run_cli):
    proc = run_cli(
        [
            "build-engine",
            graphs["fp32"],
            "--precision",
            "fp32",
            "--runtime",
            "tensorrt-rtx",
            option,
            value,
            "-o",
            tmp_path / "x.plan",
        ],
        tmp_path,
    )
    assert proc.returncode == 1 and f"Error: {option}: TensorRT-RTX {words}" in proc.stderr, proc.stderr
    assert _files(tmp_path) == []


def test_target_options_are_checked(graphs, tmp_path):
    with pytest.raises(ConfigError, match="`targets`: TensorRT builds for the GPU it runs on"):
        build_engine(graphs["fp32"], "fp32", tmp_path / "x.plan", runtime="tensorrt", targets="sm89")
    with pytest.raises(ConfigError, match=r"cannot build for sm90 .*`runtime` tensorrt"):
        build_engine(graphs["fp32"], "fp32", tmp_path / "x.plan", runtime="tensorrt-rtx", targets="sm90")
    with pytest.raises(ConfigError, match="`targets`: got 'ampere'"):
        build_engine(graphs["fp32"], "fp32", tmp_path / "x.plan", runtime="tensorrt-rtx", targets="ampere")
    assert _files(tmp_path) == []


def test_tensorrt_rtx_timing_cache_is_a_no_op(graphs):
    """Why --timing-cache is refused on TensorRT-RTX: after a build its timing cache holds no entry (TensorRT-RTX
    deprecated the calls in 1.2 as no-ops). If a release starts filling it, this fails and the option can come back."""
    import tensorrt_rtx as trt

    from mtlora_deploy.engines.runtimes import shared_logger
    from mtlora_deploy.engines.tensorrt_build import BuildSettings, create_config, network_from_onnx

    builder, network, _ = network_from_onnx(trt, shared_logger(trt), graphs["fp32"])
    config = create_config(trt, builder, network, BuildSettings("fp32", runtime="tensorrt-rtx"))
    with pytest.warns(DeprecationWarning, match="no-ops"):
        config.set_timing_cache(config.create_timing_cache(b""), False)
    assert builder.build_serialized_network(network, config) is not None
    with pytest.warns(DeprecationWarning):
        assert list(config.get_timing_cache().queryKeys()) == []


def test_loading_an_rtx_plan_without_a_gpu_says_so(fp32_build):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    from mtlora_deploy.engines.registry import open_backend

    with pytest.raises(MissingDependencyError, match=r"running a TensorRT-RTX plan needs a CUDA GPU"):
        open_backend(fp32_build.plan, device="cuda")


def test_profile_opens_rtx_plans_through_the_one_opener(fp32_build):
    from mtlora_deploy.profile.api import collect_candidates

    notes = []
    (candidate,) = collect_candidates(
        [fp32_build.plan], ["tensorrt"], ["fp32"], torch.device("cuda"), [], {}, False, notes
    )
    assert candidate.backend == "tensorrt" and candidate.precision == "fp32" and notes == []
    if not torch.cuda.is_available():
        with pytest.raises(MissingDependencyError, match="TensorRT-RTX"):
            candidate.open()


@pytest.mark.slow
def test_full_swin_t_448_r64_fp16_plan_builds_on_this_machine(tmp_path):
    """The model users deploy: Swin-T 448, mtlora-r64, four tasks, merged, exported, made fp16 and built with the
    defaults (batch 1:8:32, the runtime's workspace pool; ~3 minutes and ~5 GB on a 2-core CPU)."""
    import warnings

    from mtlora_deploy.deploy.export import export_onnx
    from mtlora_deploy.deploy.merge import merge_task_agnostic
    from mtlora_deploy.model import build_model, resolve_config
    from tests.conftest import randomize_lora

    tasks = ["semseg", "human_parts", "sal", "normals"]
    model = build_model(resolve_config("mtlora-r64", overrides={"tasks": tuple(tasks)}), warn_without_weights=False)
    randomize_lora(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(merge_task_agnostic(model.eval()), tmp_path / "swin_t.onnx", check=False)
        result = build_engine(tmp_path / "swin_t.onnx", "fp16", tmp_path / "engines" / "swin_t.plan", runtime="auto")
    manifest = read_manifest(result.plan)
    assert manifest["runtime"] == "tensorrt-rtx" and manifest["precision"] == "fp16"
    assert manifest["tasks"] == tasks and manifest["image_size"] == 448
    assert manifest["batch_profile"] == {"min": 1, "opt": 8, "max": 32}
    assert manifest["builder"]["workspace_source"] == "tensorrt_rtx default"
    assert manifest["inputs"] == [{"name": "image", "shape": [-1, 3, 448, 448], "dtype": "float32"}]
    channels = {"semseg": 21, "human_parts": 7, "sal": 1, "normals": 3}
    assert [(o["name"], o["shape"]) for o in manifest["outputs"]] == [(t, [-1, channels[t], 448, 448]) for t in tasks]
    summary = manifest["layer_summary"]
    assert summary["compute_layers"] > 40 and summary["compute_input_types"] == {"Half": summary["compute_layers"]}
    assert 50 << 20 < manifest["plan"]["bytes"] == result.plan.stat().st_size < 120 << 20  # ~78 MiB of fp16 weights
    assert _files(tmp_path / "engines") == ["swin_t.plan", "swin_t.plan.json", "swin_t_fp16.onnx"]  # + its graph
