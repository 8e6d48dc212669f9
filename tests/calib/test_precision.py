"""Precision variants of the tiny exported model: they run on ONNX Runtime CPU, agree with fp32, pass the checks.

Tolerances (max |variant - fp32| / max |fp32| per task, random-LoRA tiny model, 64x64 inputs): fp16 within
1e-2 (observed ~1e-3), int8 within 0.1 (observed ~0.03). These say the graphs compute the same function;
the accuracy cost on a trained model is measured by benchmarks/accuracy_by_precision.py.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mtlora_deploy.calib import (
    count_qdq_nodes,
    io_dtypes,
    layernorm_input_dtypes,
    make_precision_variant,
    read_precision_metadata,
    zero_points_nonzero,
)
from mtlora_deploy.calib.dataset import load_calibration, write_npz
from mtlora_deploy.calib.graph import batched_weight_matmuls, head_layers, producers, tensor_dtypes
from mtlora_deploy.deploy.metadata import read_onnx_metadata
from mtlora_deploy.errors import ConfigError, MissingDependencyError, WeightsError
from mtlora_deploy.utils.hashing import file_sha256
from tests.calib.conftest import relative_error
from tests.conftest import run_ort

pytestmark = pytest.mark.filterwarnings("ignore:calibration file .* recommends")


@pytest.fixture(scope="module")
def images(calib_npz):
    return load_calibration(calib_npz, "image", 64)[:4]


@pytest.fixture(scope="module")
def reference(tiny_onnx, images):
    return run_ort(tiny_onnx, images)


@pytest.fixture(scope="module")
def fp16(tiny_onnx, calib_npz, tmp_path_factory):
    return make_precision_variant(
        tiny_onnx, "fp16", tmp_path_factory.mktemp("v") / "fp16.onnx", calib_npz, tool="onnxruntime"
    )


@pytest.fixture(scope="module")
def int8(tiny_onnx, calib_npz, tmp_path_factory):
    return make_precision_variant(
        tiny_onnx,
        "int8",
        tmp_path_factory.mktemp("v") / "int8.onnx",
        calib_npz,
        tool="onnxruntime",
        calibration_method="max",
    )


def test_fp32_variant_is_the_same_graph_with_a_record(tiny_onnx, images, reference, tmp_path):
    out = make_precision_variant(tiny_onnx, "fp32", tmp_path / "fp32.onnx")
    result = run_ort(out, images)
    assert all(np.array_equal(result[t], reference[t]) for t in reference)
    assert read_precision_metadata(out)["precision"] == "fp32"
    assert read_onnx_metadata(out)["tasks"] == read_onnx_metadata(tiny_onnx)["tasks"]


def test_fp16_runs_on_cpu_and_agrees_with_fp32(fp16, images, reference):
    errors = relative_error(reference, run_ort(fp16, images))
    assert max(errors.values()) < 1e-2, errors


def test_fp16_keeps_layernorm_and_io_in_fp32(fp16, tiny_onnx):
    model = onnx.load(str(fp16))
    assert set(layernorm_input_dtypes(model).values()) == {"float32"}
    assert io_dtypes(model) == io_dtypes(onnx.load(str(tiny_onnx)))
    types = tensor_dtypes(model)
    # the bulk really is fp16
    assert {types[n.output[0]] for n in model.graph.node if n.op_type == "MatMul"} == {"float16"}


def test_fp16_metadata_records_tool_and_settings(fp16, calib_npz, tiny_onnx):
    record = read_precision_metadata(fp16)
    assert record["precision"] == "fp16" and record["precision_tool"] == "onnxruntime.transformers.float16"
    assert record["precision_tool_version"] and "LayerNormalization" in record["precision_settings"]["op_block_list"]
    assert record["calibration"]["sha256"] == file_sha256(calib_npz) and record["calibration"]["split"] == "train"
    assert record["precision_source_sha256"] == file_sha256(tiny_onnx)
    assert read_onnx_metadata(fp16)["tasks"] == ["semseg", "human_parts", "sal", "normals"]


def test_fp16_keeps_out_of_range_nodes_in_fp32(tiny_onnx, calib_npz, tmp_path):
    out = make_precision_variant(tiny_onnx, "fp16", tmp_path / "fp16.onnx", calib_npz, tool="onnxruntime", data_max=1.0)
    blocked = read_precision_metadata(out)["precision_settings"]["node_block_list"]
    model = onnx.load(str(out))
    types = tensor_dtypes(model)
    assert blocked and all(types[n.output[0]] == "float32" for n in model.graph.node if n.name in blocked)


def test_int8_runs_on_cpu_and_agrees_loosely(int8, images, reference):
    errors = relative_error(reference, run_ort(int8, images))
    assert max(errors.values()) < 0.1, errors


def test_int8_is_symmetric_qdq_with_heads_left_in_fp32(int8, tiny_onnx):
    model = onnx.load(str(int8))
    assert zero_points_nonzero(model) == []
    assert count_qdq_nodes(model)["QuantizeLinear"] > 0 and io_dtypes(model) == io_dtypes(onnx.load(str(tiny_onnx)))
    heads = set(head_layers(onnx.load(str(tiny_onnx))))
    by_output = producers(model)
    dq_fed = {
        n.name: n.op_type
        for n in model.graph.node
        if any(i in by_output and by_output[i].op_type == "DequantizeLinear" for i in n.input)
    }
    assert heads and not heads & set(dq_fed)
    # GEMM inputs only; Shape reads just the shape, Identity forwards a shared weight to another MatMul
    assert set(dq_fed.values()) == {"MatMul", "Conv", "Shape", "Gemm"}  # the torch.export graph


def test_int8_metadata_records_calibration_and_exclusions(int8, calib_npz, tiny_onnx):
    record = read_precision_metadata(int8)
    assert record["precision_tool"] == "onnxruntime.quantization.quantize_static"
    assert record["precision_settings"]["calibrate_method"] == "max"
    assert record["precision_settings"]["extra_options"]["ActivationSymmetric"] is True
    assert record["calibration"] == {
        "file": str(calib_npz),
        "sha256": file_sha256(calib_npz),
        "images": 16,
        "split": "train",
        "array_sha256": record["calibration"]["array_sha256"],
    }
    source = onnx.load(str(tiny_onnx))
    kept = {*head_layers(source), *batched_weight_matmuls(source)}
    assert set(record["precision_high_precision_nodes"]) == kept


def test_int8_without_calibration_is_a_clear_error(tiny_onnx, tmp_path):
    with pytest.raises(ConfigError, match="int8 needs calibration images.*mtlora calibrate"):
        make_precision_variant(tiny_onnx, "int8", tmp_path / "int8.onnx", tool="onnxruntime")
    assert not (tmp_path / "int8.onnx").exists()


def test_bad_requests_fail_before_any_work(tiny_onnx, int8, tmp_path):
    with pytest.raises(ConfigError, match="`precision`: got 'int4'"):
        make_precision_variant(tiny_onnx, "int4", tmp_path / "x.onnx")
    with pytest.raises(ConfigError, match="already a int8 variant"):
        make_precision_variant(int8, "fp16", tmp_path / "x.onnx")
    with pytest.raises(ConfigError, match="does not exist"):
        make_precision_variant(tmp_path / "none.onnx", "fp16", tmp_path / "x.onnx")
    with pytest.raises(ConfigError, match="calibration_method"):
        make_precision_variant(tiny_onnx, "int8", tmp_path / "x.onnx", calibration_method="kl")


@pytest.mark.skipif(importlib.util.find_spec("modelopt") is not None, reason="modelopt is installed here")
def test_modelopt_tool_without_modelopt_says_what_to_install(tiny_onnx, calib_npz, tmp_path):
    with pytest.raises(MissingDependencyError, match=r"mtlora-deploy\[int8\]"):
        make_precision_variant(tiny_onnx, "fp16", tmp_path / "x.onnx", calib_npz, tool="modelopt")


def test_bf16_graph_is_valid_keeps_fp32_islands_and_names_its_runtime(tiny_onnx, calib_npz, tmp_path):
    from mtlora_deploy.engines.onnxruntime import OnnxRuntimeBackend

    out = make_precision_variant(tiny_onnx, "bf16", tmp_path / "bf16.onnx", calib_npz, tool="onnxruntime")
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    types = tensor_dtypes(model)
    assert set(layernorm_input_dtypes(model).values()) == {"float32"} and "bfloat16" in set(types.values())
    assert "float16" not in set(types.values()) and io_dtypes(model) == io_dtypes(onnx.load(str(tiny_onnx)))
    # Conv has no bf16 before opset 22, and the image reaches the first Conv without a bf16 round trip
    assert all(types[n.output[0]] == "float32" for n in model.graph.node if n.op_type == "Conv")
    assert next(n for n in model.graph.node if n.op_type == "Conv").input[0] == "image"
    with pytest.raises(WeightsError, match="bf16 graphs need TensorRT"):
        OnnxRuntimeBackend(out)


def _toy_matmul(path):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), f"w{i}") for i in range(2)]
    nodes = [
        helper.make_node("MatMul", ["image", "w0"], ["h"], name="mm0"),
        helper.make_node("MatMul", ["h", "w1"], ["out"], name="mm1"),
    ]
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 8])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_entropy_calibration_clips_outliers_that_max_keeps(tmp_path):
    from mtlora_deploy.calib import int8 as int8_module
    from mtlora_deploy.calib.ranges import RangeSettings, collect_ranges

    source = _toy_matmul(tmp_path / "toy.onnx")
    data = np.random.default_rng(1).standard_normal((64, 8)).astype(np.float32)
    data[0, 0] = 60.0  # one outlier: max calibration stretches the scale to it, entropy does not
    scales = {}
    for method in ("max", "entropy"):
        ranges = collect_ranges(source, data, "image", RangeSettings(method=method, batch=8), show_progress=False)
        model = int8_module.with_onnxruntime(source, ranges, method, ["mm1"]).model
        values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        first_q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "image")
        scales[method] = float(values[first_q.input[1]])
    assert scales["max"] == pytest.approx(60.0 / 127, rel=1e-3) and scales["entropy"] < scales["max"] / 2


def test_random_inputs_stand_in_when_fp16_has_no_calibration(tiny_onnx, tmp_path):
    out = make_precision_variant(tiny_onnx, "fp16", tmp_path / "fp16.onnx", tool="onnxruntime")
    record = read_precision_metadata(out)
    assert "calibration" not in record and record["precision_settings"]["range_images"] == 4


def test_calibration_of_the_wrong_size_is_refused(tiny_onnx, tmp_path):
    write_npz(tmp_path / "small.npz", {"image": np.zeros((8, 3, 32, 32), np.float32)})
    with pytest.raises(Exception, match=r"\(3, 32, 32\).*\(3, 64, 64\)"):
        make_precision_variant(tiny_onnx, "int8", tmp_path / "int8.onnx", tmp_path / "small.npz", tool="onnxruntime")


@pytest.mark.slow
def test_variants_of_a_torch_export_graph(calib_npz, images, tmp_path):
    """The default exporter names nodes differently (node_conv2d_6 ...) and annotates initializers."""
    from mtlora_deploy.deploy.export import export_onnx
    from tests.conftest import randomize_lora, tiny_model

    model = tiny_model()
    randomize_lora(model)
    fp32 = export_onnx(model, tmp_path / "fp32.onnx").path
    reference = run_ort(fp32, images)
    for precision, tolerance in (("fp16", 1e-2), ("int8", 0.1)):
        out = make_precision_variant(
            fp32, precision, tmp_path / f"{precision}.onnx", calib_npz, tool="onnxruntime", calibration_method="max"
        )
        assert max(relative_error(reference, run_ort(out, images)).values()) < tolerance
        assert zero_points_nonzero(onnx.load(str(out))) == []
