"""Triton Python-backend post-step written by ``mtlora export-triton``: the model step's per-task outputs -> what
``mtlora predict`` computes per task (class ids, probability, unit normals) at the input image's size.

It runs ``mtlora_imaging.py`` beside it (the toolkit's ``utils/imaging.py``). Tasks, their kinds, input names and
the graph's output mode come from this model's config.pbtxt, which export-triton writes from the graph.
"""

import json

import mtlora_imaging as imaging
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config["parameters"].items()}
        self.kinds, self.graph_outputs = json.loads(params["kinds"]), params["graph_outputs"]
        self.inputs = json.loads(params["inputs"])  # task -> the input carrying its model output

    def execute(self, requests):
        return [self._respond(request) for request in requests]

    def _respond(self, request):
        sizes = pb_utils.get_input_tensor_by_name(request, "image_size").as_numpy()
        if len({tuple(size) for size in sizes}) > 1:
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError("images of one request must share a size; send one image per request")
            )
        height, width = (int(v) for v in sizes[0])
        tensors = []
        for task, kind in self.kinds.items():
            outputs = pb_utils.get_input_tensor_by_name(request, self.inputs[task]).as_numpy()
            maps = [imaging.task_map(output, kind, self.graph_outputs, height, width) for output in outputs]
            tensors.append(pb_utils.Tensor(task, np.stack(maps)))
        return pb_utils.InferenceResponse(tensors)
