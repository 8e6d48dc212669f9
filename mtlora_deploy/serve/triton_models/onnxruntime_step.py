"""Triton Python-backend model step written by ``mtlora serve`` where the server has no onnxruntime backend (the
tritonserver of ``nvidia-pytriton`` has the Python backend only): ONNX Runtime runs ``model.onnx`` beside this file
with the same input/output names, dtypes and batching as the native ``onnxruntime_onnx`` step it stands in for.

The requests Triton's dynamic batcher hands over are concatenated along the batch axis, run once, and split back:
one response per request, in order; a failed run answers every request of the batch with the error.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.input_name = config["input"][0]["name"]
        self.output_names = [output["name"] for output in config["output"]]

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        try:
            outputs = self.session.run(self.output_names, {self.input_name: np.concatenate(arrays)})
        except Exception as exc:  # ORT raises its own types; every request of the batch gets the error
            error = pb_utils.TritonError(f"ONNX Runtime: {' '.join(str(exc).split())[:300]}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses, start = [], 0
        for array in arrays:
            stop = start + len(array)
            tensors = [
                pb_utils.Tensor(n, np.ascontiguousarray(o[start:stop]))
                for n, o in zip(self.output_names, outputs, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(tensors))
            start = stop
        return responses

    def finalize(self):
        self.session = None
