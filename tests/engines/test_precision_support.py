"""Which precision runs where: the one table (precision x runtime x compute capability), the default targets that
follow from it, the one-line refusals, and what the manifest's precision notes read from a plan's layer list.

Nothing here builds a plan (tests/engines/test_tensorrt_rtx_precisions.py does, and checks the table against the
TensorRT-RTX builder's own refusals); these run without TensorRT.
"""

import textwrap

import pytest

from mtlora_deploy.engines.plan_layers import layer_summary, parse_layers, precision_notes
from mtlora_deploy.engines.runtimes import (
    PRECISION_SUPPORT,
    RTX_DEFAULT_TARGETS,
    RTX_TARGETS,
    RUNTIMES,
    TENSORRT,
    TENSORRT_RTX,
    check_precision_gpu,
    check_precision_targets,
    default_targets,
    rtx_targets,
    runs_on,
)
from mtlora_deploy.engines.tensorrt_build import BuildSettings
from mtlora_deploy.errors import ConfigError
from mtlora_deploy.utils.artifacts import PRECISIONS


def test_the_table_has_one_row_per_runtime_and_precision():
    assert set(PRECISION_SUPPORT) == {(r, p) for r in RUNTIMES for p in PRECISIONS}
    assert rtx_targets("fp8") == ("8.9", "12.0", "12.1")
    assert rtx_targets("int4-wo") == rtx_targets("int8-wo") == rtx_targets("bf16") == RTX_TARGETS[1:]  # no sm75
    assert rtx_targets("fp16") == RTX_TARGETS
    assert runs_on(TENSORRT, "fp8", "9.0") and runs_on(TENSORRT, "fp8", "8.9") and not runs_on(TENSORRT, "fp8", "8.6")
    assert runs_on(TENSORRT, "int8", "7.5") and not runs_on(TENSORRT, "int4-wo", "7.5")


def test_default_targets_follow_the_precision():
    assert default_targets("fp8") == ("8.9", "12.0")
    assert default_targets("fp16") == default_targets("int4-wo") == RTX_DEFAULT_TARGETS
    fp8 = BuildSettings("fp8", runtime=TENSORRT_RTX)
    assert fp8.plan_targets == ("8.9", "12.0") and fp8.targets_source == "default for fp8"
    fp16 = BuildSettings("fp16", runtime=TENSORRT_RTX)
    assert fp16.plan_targets == RTX_DEFAULT_TARGETS and fp16.targets_source == "TensorRT-RTX default"
    given = BuildSettings("int8-wo", runtime=TENSORRT_RTX, targets=("8.6",))
    assert given.plan_targets == ("8.6",) and given.targets_source == "given"


@pytest.mark.parametrize(
    "precision, targets, refused, runs",
    [
        ("fp8", ("8.6",), "sm86", "sm89,sm120,sm121"),
        ("fp8", ("8.9", "8.0"), "sm80", "sm89,sm120,sm121"),
        ("int4-wo", ("7.5", "8.6"), "sm75", "sm80,sm86,sm89,sm120,sm121"),
        ("bf16", ("7.5",), "sm75", "sm80,sm86,sm89,sm120,sm121"),
    ],
)
def test_a_target_that_cannot_run_the_precision_is_refused_in_one_line(precision, targets, refused, runs):
    with pytest.raises(ConfigError) as info:
        BuildSettings(precision, runtime=TENSORRT_RTX, targets=targets)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"`precision` {precision} `targets` {refused}: TensorRT-RTX runs {precision} only on {runs}"
    )
    assert "`targets` " + ",".join(f"sm{t.replace('.', '')}" for t in default_targets(precision)) in message


def test_targets_tensorrt_rtx_cannot_build_for_are_refused_before_the_precision():
    with pytest.raises(ConfigError, match=r"^`targets`: TensorRT-RTX cannot build for sm90 .*`runtime` tensorrt$"):
        check_precision_targets("fp16", ("9.0",))


def test_full_tensorrt_checks_the_gpu_it_builds_on():
    check_precision_gpu("fp8", "9.0", "NVIDIA H100")
    check_precision_gpu("fp8", None)  # unknown: the builder decides
    with pytest.raises(ConfigError) as info:
        check_precision_gpu("fp8", "8.6", "NVIDIA A10")
    assert str(info.value) == (
        "`precision` fp8: TensorRT runs it on compute capability 8.9 and later (FP8 tensor cores: Ada (sm89), Hopper "
        "(sm90) and later); this GPU (NVIDIA A10) has 8.6 and runs fp32, fp16, bf16, int8, int8-wo, int4-wo"
    )


LAYERS = textwrap.dedent("""\
    Layers:
    Name: __myl_CastMulCastFc_myl0_5, LayerType: runtime_fusion, Inputs: [ { Name: x, Dimensions: [-1,32], Datatype: Half, Format: f }], Constants: [ { Name: s, Dimensions: [1,64], Strides: [64,1], Datatype: Half, Format: f }, { Name: wq, Dimensions: [32,64], Strides: [64,1], Datatype: Int4, Format: f }], Outputs: [], TacticName: , StreamId: 0, Metadata: [ONNX Layer: w_DequantizeLinear]
    Name: __myl_CastMulCast_myl0_2, LayerType: kgen, Inputs: [], Constants: [ { Name: s2, Dimensions: [8,1,1,1], Strides: [1,1,1,1], Datatype: Half, Format: f }, { Name: wc, Dimensions: [8,3,3,3], Strides: [27,9,3,1], Datatype: Int8, Format: f }], Outputs: [], TacticName: __myl_CastMulCast_0x1, StreamId: 0, Metadata: [ONNX Layer: c_DequantizeLinear]
    Name: node_conv, LayerType: correlation, Inputs: [ { Name: y, Dimensions: [-1,3,8,8], Datatype: Half, Format: f }, { Name: w, Dimensions: [8,3,3,3], Datatype: Half, Format: f }], Constants: [ { Name: b, Dimensions: [1], Strides: [1], Datatype: Float, Format: f }], Outputs: [], TacticName: __myelin_CASK_STUB, StreamId: 0, Metadata: [ONNX Layer: conv]
    Name: __myl_Cast_myl0_1, LayerType: kgen, Inputs: [ { Name: image, Dimensions: [-1,3,8,8], Datatype: Float, Format: f }], Constants: [], Outputs: [], TacticName: __myl_Cast_0x2, StreamId: 0, Metadata: [ONNX Layer: cast]
    """)  # noqa: E501


def test_layer_summary_counts_the_weights_a_plan_stores():
    rows = parse_layers(LAYERS)
    assert [(r.kind, r.computes, r.low_precision_weights) for r in rows] == [
        ("runtime_fusion", True, ("Int4",)),  # a fully connected layer fused with its dequantize
        ("kgen", False, ("Int8",)),  # a separate dequantizing kernel
        ("correlation", True, ()),
        ("kgen", False, ()),
    ]
    summary = layer_summary(LAYERS)
    assert summary["compute_layers"] == 2 and summary["compute_input_types"] == {"Half": 2}
    assert summary["low_precision_weights"] == {
        "Int4": {"tensors": 1, "bytes": 32 * 64 // 2},
        "Int8": {"tensors": 1, "bytes": 216},
    }
    assert (
        summary["compute_layers_with_low_precision_weights"] == 1
        and summary["compute_layers_with_low_precision_inputs"] == {}
    )
    assert summary["constant_bytes"] == 64 * 2 + 1024 + 8 * 2 + 216 + 4
    assert summary["tactics_at"] == "load (JIT on the GPU)"  # the fusion names no tactic, the convolution a stub


def test_precision_notes_say_what_the_layer_list_shows():
    summary = layer_summary(LAYERS)
    (note,) = precision_notes(TENSORRT_RTX, "int4-wo", summary)
    assert note.startswith("weight-only: the plan stores 1 weight tensors as int4 (0.0 MiB) and 1 weight tensors as")
    assert "(1 of 2 GEMM/convolution layers read them directly)" in note and "2 Half" in note
    plain = layer_summary(LAYERS.replace("Int4", "Half").replace("Int8", "Half"))
    (note,) = precision_notes(TENSORRT_RTX, "int8-wo", plain)
    assert note.startswith("int8-wo: the plan stores no int8/int4 weight") and "as large as an fp16 one" in note
    fp8 = layer_summary(
        LAYERS.replace(
            "Datatype: Half, Format: f }], Constants: [ { Name: b",
            "Datatype: FP8, Format: f }], Constants: [ { Name: b",
        )
    )  # noqa: E501
    (note,) = precision_notes(TENSORRT, "fp8", fp8)
    assert note.startswith("fp8: 1 of 2 GEMM/convolution layers take FP8 activations, 0 FP8 weight tensors")
    assert precision_notes(TENSORRT_RTX, "fp16", summary) == [] and precision_notes(TENSORRT, "fp8", None) == []
