"""The ModelOpt path (AutoCast, ONNX PTQ) passes the same checks as the ONNX Runtime fallback.

Skipped where ``modelopt`` is not importable (it is an optional extra; see mtlora_deploy/calib/precision.py).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from mtlora_deploy.calib import (
    io_dtypes,
    layernorm_input_dtypes,
    make_precision_variant,
    read_precision_metadata,
    zero_points_nonzero,
)
from mtlora_deploy.calib.graph import head_layers, producers
from tests.calib.conftest import relative_error
from tests.conftest import run_ort

pytest.importorskip("modelopt.onnx.quantization", reason="nvidia-modelopt is not installed")
pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def images(calib_npz):
    with np.load(calib_npz) as archive:
        return archive["image"][:4]


def test_autocast_fp16_keeps_layernorm_fp32_and_agrees(tiny_onnx, calib_npz, images, tmp_path):
    out = make_precision_variant(tiny_onnx, "fp16", tmp_path / "fp16.onnx", calib_npz, tool="modelopt")
    model = onnx.load(str(out))
    assert set(layernorm_input_dtypes(model).values()) == {"float32"}
    assert io_dtypes(model) == io_dtypes(onnx.load(str(tiny_onnx)))
    assert max(relative_error(run_ort(tiny_onnx, images), run_ort(out, images)).values()) < 1e-2
    assert read_precision_metadata(out)["precision_tool"] == "modelopt.onnx.autocast"


def test_ptq_int8_is_symmetric_and_leaves_heads_unquantized(tiny_onnx, calib_npz, images, tmp_path):
    out = make_precision_variant(
        tiny_onnx, "int8", tmp_path / "int8.onnx", calib_npz, tool="modelopt", calibration_method="max"
    )
    model = onnx.load(str(out))
    assert zero_points_nonzero(model) == [] and io_dtypes(model) == io_dtypes(onnx.load(str(tiny_onnx)))
    by_output = producers(model)
    heads = set(head_layers(onnx.load(str(tiny_onnx))))
    for node in model.graph.node:
        if node.name in heads:
            assert all(by_output[i].op_type != "DequantizeLinear" for i in node.input if i in by_output)
    assert max(relative_error(run_ort(tiny_onnx, images), run_ort(out, images)).values()) < 0.1
    assert read_precision_metadata(out)["precision_tool"] == "modelopt.onnx.quantization"
