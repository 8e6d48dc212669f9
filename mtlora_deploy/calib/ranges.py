"""Activation statistics of an fp32 graph on calibration images, through ONNX Runtime on the CPU.

Both the fp16 range check (which nodes overflow fp16) and the int8 fallback (ONNX Runtime's static
quantizer) feed images through the same small reader.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from mtlora_deploy.utils.imports import require

DEFAULT_BATCH = 8


class ArrayReader:
    """An ONNX Runtime ``CalibrationDataReader`` over an in-memory ``[N, ...]`` array, ``batch`` images at a time.

    Duck-typed (``get_next`` / ``rewind``) so this module imports without onnxruntime; ORT only calls these.
    """

    def __init__(self, input_name: str, images: np.ndarray, batch: int = DEFAULT_BATCH) -> None:
        self.input_name, self.images, self.batch, self.position = input_name, images, max(1, int(batch)), 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.images):
            return None
        chunk = self.images[self.position : self.position + self.batch]
        self.position += self.batch
        return {self.input_name: np.ascontiguousarray(chunk, dtype=np.float32)}

    def rewind(self) -> None:
        self.position = 0

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch)


def random_images(shape: tuple[int, ...], count: int = 4, seed: int = 0) -> np.ndarray:
    """Standard-normal stand-ins for normalised images, used only when no calibration file is given."""
    return np.random.default_rng(seed).standard_normal((count, *shape), dtype=np.float32)


def with_absmax_outputs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str]]:
    """A copy of ``model`` with a scalar ``max |t|`` output per float32 tensor; returns it and ``{output: tensor}``.

    ONNX Runtime's own MinMax calibrator does the same but its graph edit is quadratic in the node count.
    """
    inferred = onnx.shape_inference.infer_shapes(model).graph  # only to find the float tensors: its shapes
    values = [*inferred.value_info, *inferred.output]            # may carry an exporter's bogus symbolic dims
    floats = [v.name for v in values if v.type.tensor_type.elem_type == TensorProto.FLOAT]
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    graph, extra = augmented.graph, {}
    for output in graph.output:  # ORT trusts output dim names when it re-uses buffers; drop them
        output.type.tensor_type.ClearField("shape")
    for index, name in enumerate(dict.fromkeys(floats)):
        out = f"mtlora_absmax_{index}"
        graph.node.extend([helper.make_node("Abs", [name], [f"{out}_abs"]),
                           helper.make_node("ReduceMax", [f"{out}_abs"], [out], keepdims=0)])
        graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, []))
        extra[out] = name
    return augmented, extra


def activation_max_abs(model_path: str | Path, reader: ArrayReader) -> dict[str, float]:
    """``{tensor: max |value|}`` over every float32 tensor of the graph, for the images ``reader`` yields.

    Only scalar reductions leave the session, so memory stays at one forward pass.
    """
    ort = require("onnxruntime")
    augmented, names = with_absmax_outputs(onnx.load(str(model_path)))
    session = ort.InferenceSession(augmented.SerializeToString(), providers=["CPUExecutionProvider"])
    found = dict.fromkeys(names.values(), 0.0)
    reader.rewind()
    while (feed := reader.get_next()) is not None:
        for out, value in zip(names, session.run(list(names), feed), strict=True):
            found[names[out]] = max(found[names[out]], float(value))
    return found
