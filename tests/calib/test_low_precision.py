"""fp8, int8-wo and int4-wo variants of the tiny exported model: what their graphs hold, that ONNX Runtime runs them
on the CPU, and how close they stay to the graphs they come from.

Tolerances (max |variant - fp16| / max |fp16| per task, random-LoRA tiny model, 64x64 inputs, reduction widths
24-384): int8-wo within 0.03 (observed ~0.01), int4-wo within 0.25 (observed ~0.13; blocks of 32 along reductions
as short as 24). Each dequantized weight lies within half a quantization step (plus the fp16 rounding of its
scale) of the fp16 weight it replaces.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from mtlora_deploy.calib import make_precision_variant, read_precision_metadata, zero_points_nonzero
from mtlora_deploy.calib.dataset import load_calibration
from mtlora_deploy.calib.graph import head_layers, producers
from mtlora_deploy.calib.ranges import gemm_activation_inputs
from mtlora_deploy.errors import ConfigError
from mtlora_deploy.utils.onnx_info import detect_onnx_precision
from tests.calib.conftest import relative_error
from tests.conftest import run_ort

pytestmark = pytest.mark.filterwarnings("ignore:calibration file .* recommends")
TOLERANCE_VS_FP16 = {"int8-wo": 0.03, "int4-wo": 0.25}


@pytest.fixture(scope="module")
def source(tiny_onnx, tmp_path_factory):
    """A private copy of the tiny fp32 graph (its range caches land beside it, away from other modules' tests)."""
    folder = tmp_path_factory.mktemp("low")
    return shutil.copy(tiny_onnx, folder / "tiny.onnx")


@pytest.fixture(scope="module")
def variants(source, calib_npz):
    made = {}
    for precision in ("fp16", "int8-wo", "int4-wo", "fp8"):
        made[precision] = make_precision_variant(
            source,
            precision,
            source.with_name(f"tiny_{precision}.onnx"),
            calib_npz if precision == "fp8" else None,
            tool="onnxruntime",
            fidelity_images=2,
            show_progress=False,
        )
    return made


@pytest.fixture(scope="module")
def images(calib_npz):
    return load_calibration(calib_npz, "image", 64)[:2]


def _dequantize_nodes(model: onnx.ModelProto) -> dict[str, tuple[onnx.NodeProto, onnx.TensorProto]]:
    """``{dequantized tensor: (DequantizeLinear node, its quantized initializer)}`` for DQ nodes of initializers."""
    values = {i.name: i for i in model.graph.initializer}
    return {
        n.output[0]: (n, values[n.input[0]])
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in values
    }


def _attribute(node: onnx.NodeProto, name: str, default: int = 0) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def test_weight_only_graphs_hold_int8_channels_and_int4_blocks(variants, source):
    fp32 = onnx.load(source)
    heads = set(head_layers(fp32))
    for precision, weight_type in (("int8-wo", TensorProto.INT8), ("int4-wo", TensorProto.INT4)):
        model = onnx.load(variants[precision])
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        assert opset == (19 if precision == "int8-wo" else 21)
        assert not [n for n in model.graph.node if n.op_type == "QuantizeLinear"]  # activations untouched
        assert zero_points_nonzero(model) == []
        dequantized = _dequantize_nodes(model)
        gemms = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")]
        quantized = [n for n in gemms if n.input[1] in dequantized]
        assert {n.name for n in gemms if n.name in heads}.isdisjoint(n.name for n in quantized)  # heads stay float
        values = {i.name for i in model.graph.initializer}
        assert all(n.input[1] not in values or n.name in heads for n in gemms if n.input[1])  # every other weight
        types = {n.op_type: set() for n in quantized}
        for node in quantized:
            dq, weight = dequantized[node.input[1]]
            types[node.op_type].add(weight.data_type)
            if weight.data_type == TensorProto.INT4:
                assert _attribute(dq, "block_size") == 32 and weight.dims[_attribute(dq, "axis")] % 32 == 0
        assert types["Conv"] == {TensorProto.INT8}  # TensorRT blocks only the last two axes: convs stay int8
        assert weight_type in types["MatMul"] | types["Gemm"]
    assert detect_onnx_precision(variants["int8-wo"]) == "int8-wo"
    assert detect_onnx_precision(variants["int4-wo"]) == "int4-wo"


def test_dequantized_weights_are_within_half_a_step_of_the_fp16_weights(variants):
    half = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in onnx.load(variants["fp16"]).graph.initializer}
    for precision in ("int8-wo", "int4-wo"):
        model = onnx.load(variants[precision])
        scales = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in model.graph.initializer}
        checked = 0
        for dq, weight in _dequantize_nodes(model).values():
            original = half[dq.output[0].removesuffix("_dequantized")]
            axis, block = _attribute(dq, "axis", 1), _attribute(dq, "block_size")
            scale = scales[dq.input[1]]
            if block:
                scale = np.repeat(scale, block, axis=axis).take(np.arange(original.shape[axis]), axis=axis)
            else:
                shape = [1] * original.ndim
                shape[axis] = -1
                scale = scale.reshape(shape)
            restored = numpy_helper.to_array(weight).astype(np.float32) * scale
            # half a step, plus the fp16 rounding of the stored scale times the largest level (127 or 8)
            assert np.all(np.abs(restored - original) <= scale * (0.5 + 0.01) + 1e-6), dq.name
            checked += 1
        assert checked > 40


def test_weight_only_graphs_agree_with_the_fp16_graph_in_onnx_runtime(variants, images):
    half = run_ort(variants["fp16"], images)
    for precision, tolerance in TOLERANCE_VS_FP16.items():
        errors = relative_error(half, run_ort(variants[precision], images))
        assert max(errors.values()) < tolerance, (precision, errors)
        assert min(errors.values()) > 0  # the weights did change
        fidelity = read_precision_metadata(variants[precision])["fidelity"]
        assert set(fidelity["tasks"]) == set(half) and fidelity["reference"].startswith("fp32 graph")


def test_fp8_graph_scales_are_amax_over_448_from_the_shared_range_cache(variants, source, calib_npz):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    model = onnx.load(variants["fp8"])
    record = read_precision_metadata(variants["fp8"])
    cache = json.loads(source.with_name("tiny.ranges-max.json").read_text())
    assert record["fp8_ranges"]["settings"] == {"method": "max"} and record["fp8_ranges"]["reused"] is False
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    by_output = producers(model)
    quantizers = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert len(quantizers) >= 40 and zero_points_nonzero(model) == []
    for node in quantizers:
        assert values[node.input[2]].dtype == ml_dtypes.float8_e4m3fn
        amax = max(abs(v) for v in cache["ranges"][node.input[0]])
        assert np.isclose(values[node.input[1]], amax / 448, rtol=1e-6)
    fp32 = {i.name: numpy_helper.to_array(i) for i in onnx.load(source).graph.initializer}
    weights = 0
    for node in model.graph.node:
        dq = by_output.get(node.input[1]) if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 else None
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in values:
            original = fp32[dq.input[0].removesuffix("_quantized")]
            axis = _attribute(dq, "axis", 1)
            amax = np.abs(np.moveaxis(original, axis, 0)).reshape(original.shape[axis], -1).max(axis=1)
            np.testing.assert_allclose(values[dq.input[1]], amax / 448, rtol=1e-6)
            weights += 1
    assert weights > 20
    assert set(gemm_activation_inputs(onnx.load(source))) <= set(cache["ranges"])
    # the same ranges serve int8 with the same method: no second calibration pass
    int8 = make_precision_variant(
        source, "int8", source.with_name("tiny_int8.onnx"), calib_npz, calibration_method="max", fidelity_images=0
    )
    assert read_precision_metadata(int8)["int8_ranges"]["reused"] is True
    assert detect_onnx_precision(variants["fp8"]) == "fp8"


def test_fp8_runs_in_onnx_runtime_close_to_fp32(variants, source, images):
    reference = run_ort(source, images)
    errors = relative_error(reference, run_ort(variants["fp8"], images))
    assert max(errors.values()) < 0.2 and min(errors.values()) > 0, errors
    assert set(read_precision_metadata(variants["fp8"])["fidelity"]["tasks"]) == set(reference)


def test_bad_low_precision_options_are_refused_before_anything_is_written(source, tmp_path):
    out = tmp_path / "x.onnx"
    with pytest.raises(ConfigError, match=r"`block_size`: got 48, expected one of 16, 32, 64, 128, 256"):
        make_precision_variant(source, "int4-wo", out, block_size=48)
    with pytest.raises(ConfigError, match=r"fp8 needs calibration images: pass `calibration`"):
        make_precision_variant(source, "fp8", out)
    with pytest.raises(ConfigError, match=r"fp8 graphs are written with ONNX Runtime's quantizer"):
        make_precision_variant(source, "fp8", out, tool="modelopt", calibration_cache=tmp_path / "c.json")
    assert list(tmp_path.iterdir()) == []
