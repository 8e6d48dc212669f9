"""Known noise is dropped by name; every other warning or log record (ours included) still reaches the user."""

import logging
import subprocess
import sys
import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper

from mtlora_deploy.utils.noise import NO_PRETRAINED_WEIGHTS, quiet_known_noise
from tests.conftest import tiny_config

ORT_HINT = "Please consider to run pre-processing before quantization. Refer to example: https://example"


def test_our_warnings_still_show_and_the_no_weights_one_only_where_asked(tmp_path):
    from mtlora_deploy.model import ModelConfig, build_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_known_noise():
            ModelConfig.from_dict({"tasks": ["sal"], "taks": 1}, source="run.yaml")
            build_model(tiny_config(tasks=["sal"]))
        with quiet_known_noise(NO_PRETRAINED_WEIGHTS):
            build_model(tiny_config(tasks=["sal"]))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages
    assert messages[0].startswith("run.yaml: ignoring unknown model config keys ['taks']")
    assert "built without pretrained weights" in messages[1]


def test_the_legacy_exporters_own_warnings_are_quiet_with_their_real_categories():
    import torch

    raised = [
        ("You are using the legacy TorchScript-based ONNX export. Starting in PyTorch 2.9, ...", DeprecationWarning),
        ("The feature will be removed. Please remove usage of this function", DeprecationWarning),
        ("Converting a tensor to a Python boolean might cause the trace to be incorrect. ...", torch.jit.TracerWarning),
        ("Converting a tensor to a Python number might cause the trace to be incorrect. ...", torch.jit.TracerWarning),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_known_noise():
            for message, category in raised:
                warnings.warn(message, category, stacklevel=1)
    assert [str(w.message) for w in caught] == []


def test_the_filters_end_with_the_block():
    message = "swin_test_tiny: built without pretrained weights (random init); ..."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_known_noise(NO_PRETRAINED_WEIGHTS):
            warnings.warn(message, UserWarning, stacklevel=1)
        warnings.warn(message, UserWarning, stacklevel=1)
    assert len(caught) == 1


def test_ort_preprocessing_hint_never_reaches_the_terminal_and_root_stays_unconfigured():
    code = (
        "import logging\n"
        "from mtlora_deploy.utils.noise import quiet_known_noise\n"
        "with quiet_known_noise():\n"
        f"    logging.warning({ORT_HINT!r})\n"
        "    logging.warning('a real problem')\n"
        "    logging.getLogger('onnxruntime.x').warning('another real problem')\n"
        "print(len(logging.getLogger().handlers), len(logging.getLogger().filters))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stderr.splitlines() == ["a real problem", "another real problem"]
    assert proc.stdout.split() == ["0", "0"], "the root logger must be left as it was"


def test_int8_through_onnxruntime_logs_no_preprocessing_hint(tmp_path, caplog):
    from mtlora_deploy.calib.int8 import with_onnxruntime

    weight = helper.make_tensor("w", TensorProto.FLOAT, [8, 4], np.random.default_rng(0).normal(size=32).tolist())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["image", "w"], ["out"], name="mm")],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 4])],
        [weight],
    )
    path = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    images = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        result = with_onnxruntime(path, {"image": [float(images.min()), float(images.max())]}, "max", [])
    assert any(node.op_type == "QuantizeLinear" for node in result.model.graph.node)
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]
