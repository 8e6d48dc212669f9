"""Triton Python-backend pre-step written by ``mtlora export-triton``: an encoded image (``image_bytes``) or a uint8
(H, W, 3) array (``image_rgb``) of any size -> the model's normalised input and the image's (height, width).

It runs ``mtlora_imaging.py`` beside it, the toolkit's ``utils/imaging.py``, so a served input is computed exactly
as ``mtlora predict`` computes it. Names, dtypes and the normalisation come from this model's config.pbtxt, which
export-triton writes from the graph.
"""

import json

import mtlora_imaging as imaging
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config["parameters"].items()}
        self.input_name = params["model_input"]
        self.size, self.mean, self.std = (
            int(params["image_size"]),
            json.loads(params["mean"]),
            json.loads(params["std"]),
        )
        data_type = next(o["data_type"] for o in config["output"] if o["name"] == self.input_name)
        self.dtype = pb_utils.triton_string_to_numpy(data_type)

    def execute(self, requests):
        return [self._respond(request) for request in requests]

    def _respond(self, request):
        try:
            images = self._images(request)
        except imaging.ImageError as exc:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"image: {exc}"))
        batch = np.stack([imaging.preprocess(rgb, self.size, self.mean, self.std, self.dtype) for rgb in images])
        sizes = np.asarray([rgb.shape[:2] for rgb in images], dtype=np.int32)
        return pb_utils.InferenceResponse(
            [pb_utils.Tensor(self.input_name, batch), pb_utils.Tensor("image_size", sizes)]
        )

    def _images(self, request):
        encoded = pb_utils.get_input_tensor_by_name(request, "image_bytes")
        if encoded is not None:
            return [imaging.decode_image(bytes(item)) for item in encoded.as_numpy().reshape(-1)]
        arrays = pb_utils.get_input_tensor_by_name(request, "image_rgb")
        if arrays is None:
            raise imaging.ImageError("the request has neither image_bytes nor image_rgb")
        return [imaging.check_rgb_array(array) for array in arrays.as_numpy()]
