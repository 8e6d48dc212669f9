"""fp8, int8-wo and int4-wo TensorRT-RTX plans built for real on this CPU from the tiny MTLoRA model, checked against
the graphs they come from; the refusals of the precision table (one line, nothing written), and the table checked
against the TensorRT-RTX builder's own refusals.

Three real builds (~10-20 s each on an unloaded 2-core CPU; the fp8 one, with its export, marked slow) plus two
refused ones (a few seconds each).
"""

import importlib.util
import warnings
from collections import Counter

import numpy as np
import onnx
import pytest

from mtlora_deploy.deploy.export import export_onnx
from mtlora_deploy.engine_pipeline import build_engine
from mtlora_deploy.engines.manifest import read_manifest
from mtlora_deploy.model.checkpoint import save_checkpoint
from tests.conftest import randomize_lora, tiny_model

pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.skipif(
        importlib.util.find_spec("tensorrt_rtx") is None,
        reason="tensorrt_rtx not importable (pip install 'mtlora-deploy[tensorrt-rtx]')",
    ),
    pytest.mark.filterwarnings("ignore:calibration file .* recommends"),
]
LOW_TYPES = {onnx.TensorProto.INT8: "Int8", onnx.TensorProto.INT4: "Int4", onnx.TensorProto.FLOAT8E4M3FN: "FP8"}


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def _graph_weights(path) -> dict[str, tuple[int, int]]:
    """``{layer-list type: (tensors, bytes)}`` of the weights the graph stores in low precision (DQ initializers)."""
    model = onnx.load(str(path))
    values = {i.name: i for i in model.graph.initializer}
    quantized = [
        values[n.input[0]] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in values
    ]
    tensors = Counter(LOW_TYPES[t.data_type] for t in quantized)
    sizes = Counter()
    for t in quantized:
        sizes[LOW_TYPES[t.data_type]] += len(t.raw_data)
    return {k: (tensors[k], sizes[k]) for k in tensors}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The tiny model as a run folder and as its fp32 graph, and 8 calibration images (random: these tests check
    plans, not accuracy)."""
    folder = tmp_path_factory.mktemp("low_plans")
    model = tiny_model()
    randomize_lora(model)
    save_checkpoint(model, folder / "run" / "checkpoints" / "best")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(model, folder / "tiny.onnx", legacy=True, check=False)  # the TorchScript exporter: seconds
    images = np.random.default_rng(0).standard_normal((8, 3, 64, 64)).astype(np.float32)
    np.savez(folder / "calib.npz", image=images)
    return folder


@pytest.mark.slow
def test_fp8_export_and_plan_for_sm89_and_sm120(folder, tmp_path, run_cli):
    """The issue's own commands: export fp8 with calibration images, build it for sm89 and sm120 (export,
    calibration, fidelity and build: ~40 s unloaded)."""
    graph = tmp_path / "m.onnx"
    args = ["export", folder / "run", "-o", graph, "--legacy-exporter", "--precision", "fp8", "--fidelity-images", "2"]
    proc = run_cli([*args, "--calib", folder / "calib.npz"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())
    assert "fp8 ranges (max, 8 images" in out and "fp8 vs fp32 (ONNX Runtime CPU) on 2 held-out" in out
    proc = run_cli(
        [
            "build-engine",
            graph,
            "--precision",
            "fp8",
            "--target",
            "sm89,sm120",
            "--batch",
            "1:1:2",
            "-o",
            tmp_path / "engines" / "m.plan",
        ],
        tmp_path,
    )  # noqa: E501
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())
    assert "fp8 vs fp32 (ONNX Runtime CPU)" in out and "plan: fp8:" in out
    manifest = read_manifest(tmp_path / "engines" / "m.plan")
    assert manifest["precision"] == "fp8" and manifest["target_compute_capabilities"] == ["8.9", "12.0"]
    summary = manifest["layer_summary"]
    tensors, size = _graph_weights(graph)["FP8"]
    # the builder concatenates some weights (a GEMM with its LoRA) and folds a few quantized constants: the plan's
    # FP8 tensors are not the graph's one for one, but every byte of FP8 weight is stored as FP8
    assert summary["low_precision_weights"]["FP8"]["bytes"] >= size and tensors > 30
    fp8_layers = summary["compute_layers_with_low_precision_inputs"]["FP8"]
    assert fp8_layers > summary["compute_layers"] // 2
    (note,) = manifest["precision_notes"]
    assert note.startswith(f"fp8: {fp8_layers} of {summary['compute_layers']} GEMM/convolution layers take FP8")
    assert f"{summary['low_precision_weights']['FP8']['tensors']} FP8 weight tensors" in note
    assert set(manifest["onnx_metadata"]["fidelity"]["tasks"]) == set(manifest["tasks"])
    assert "m.fp32.onnx" in _files(tmp_path) and _files(tmp_path / "engines") == ["m.plan", "m.plan.json"]


@pytest.mark.parametrize("precision", ["int8-wo", "int4-wo"])
def test_weight_only_plans_store_the_graphs_low_precision_weights(folder, tmp_path, precision):
    """From the fp32 graph, default targets: the plan holds the graph's int8/int4 weights, read from its layer list."""
    result = build_engine(
        folder / "tiny.onnx", precision, tmp_path / f"{precision}.plan", batch="1:1:2", runtime="tensorrt-rtx"
    )
    manifest = result.manifest
    assert manifest["target_compute_capabilities"] == ["8.6", "8.9", "12.0"]
    assert manifest["builder"]["targets_source"] == "TensorRT-RTX default"
    graph = _graph_weights(tmp_path / f"tiny_{precision}.onnx")
    plan = manifest["layer_summary"]["low_precision_weights"]
    assert set(plan) == set(graph) == ({"Int8"} if precision == "int8-wo" else {"Int8", "Int4"})
    for dtype, (tensors, size) in graph.items():  # the bytes, not the tensor count: the builder may concatenate
        assert tensors > 0 and abs(plan[dtype]["bytes"] - size) <= 0.01 * size, (dtype, plan, graph)
    summary = manifest["layer_summary"]
    assert summary["compute_layers_with_low_precision_inputs"] == {}  # weights only: activations stay 16-bit
    assert set(summary["compute_input_types"]) == {"Half"}
    (note,) = manifest["precision_notes"]
    assert (
        note.startswith("weight-only: the plan stores") and f"{plan['Int8']['tensors']} weight tensors as int8" in note
    )


def test_refused_precisions_leave_nothing_behind(folder, tmp_path, run_cli):
    cases = [
        (
            ["--precision", "fp8", "--calib", folder / "calib.npz", "--target", "sm86"],
            "runs fp8 only on sm89,sm120,sm121",
        ),
        (["--precision", "int4-wo", "--target", "sm75"], "runs int4-wo only on sm80,sm86,sm89,sm120,sm121"),
    ]
    for options, words in cases:
        proc = run_cli(["build-engine", folder / "tiny.onnx", *options, "-o", tmp_path / "out" / "x.plan"], tmp_path)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 1 and len(lines) == 1 and words in lines[0], proc.stderr
    assert _files(tmp_path) == []  # no variant, no plan, no range cache
    assert "tiny.ranges-max.json" not in _files(folder)


@pytest.mark.parametrize("precision, target, datatype", [("fp8", "SM86", "fp8_e4m3"), ("int4-wo", "SM75", "int4")])
def test_the_table_matches_what_the_builder_refuses(folder, tmp_path, precision, target, datatype):
    """The table's refusals are the builder's: built without the toolkit's check, the builder itself refuses."""
    import tensorrt_rtx as trt

    from mtlora_deploy.calib.precision import make_precision_variant
    from mtlora_deploy.engines.runtimes import capture_log, network_flags, shared_logger

    graph = make_precision_variant(
        folder / "tiny.onnx",
        precision,
        tmp_path / "g.onnx",
        folder / "calib.npz" if precision == "fp8" else None,
        fidelity_images=0,
        cache=False,
        show_progress=False,
    )
    with capture_log(trt) as log:
        builder = trt.Builder(shared_logger(trt))
        network = builder.create_network(network_flags(trt))
        assert trt.OnnxParser(network, shared_logger(trt)).parse_from_file(str(graph))
        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        profile.set_shape("image", (1, 3, 64, 64), (1, 3, 64, 64), (1, 3, 64, 64))
        config.add_optimization_profile(profile)
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, target), 0)
        assert builder.build_serialized_network(network, config) is None
    assert any(f"Cannot compile for target(s) {target.lower()}" in e and datatype in e for e in log.errors), log.errors
