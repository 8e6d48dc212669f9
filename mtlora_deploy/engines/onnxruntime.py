"""ONNX Runtime backend: any exported graph or precision variant, on the CPU EP (or CUDA EP where installed).

Tasks and image size come from the ONNX ``metadata_props`` the exporter writes (``mtlora.tasks``,
``mtlora.image_size`` / ``mtlora.input_size``), falling back to the graph's output names and input shape
for graphs made elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlora_deploy.engines.base import Backend, TensorSpec
from mtlora_deploy.errors import ConfigError, WeightsError
from mtlora_deploy.utils.imports import require
from mtlora_deploy.utils.onnx_info import decode_metadata, load_graph, metadata_from_proto

ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(bfloat16)": "bfloat16",
    "tensor(uint8)": "uint8",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
}


def _side(value: Any) -> int | None:
    """``448``, ``"448"``, ``[448, 448]`` or ``[1, 3, 448, 448]`` -> 448."""
    if isinstance(value, (list, tuple)) and value:
        value = value[-1]
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def providers_for(device: torch.device, available: list[str]) -> list[str]:
    """CPU EP for ``cpu``; CUDA EP (CPU as fallback for unsupported ops) for ``cuda``."""
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ConfigError(
        f"`device` {device}: this onnxruntime offers {available}; for CUDA install onnxruntime-gpu "
        "(in place of onnxruntime) or use `device` cpu",
        field="device",
    )


def _cuda_tensor(value: Any) -> torch.Tensor:
    """An ORT OrtValue on the GPU as a torch tensor without a copy (DLPack)."""
    return torch.from_dlpack(value if hasattr(value, "__dlpack__") else value.to_dlpack())


def _dims(shape: list[Any]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else -1 for d in shape)


class OnnxRuntimeBackend(Backend):
    """An ONNX file in an ``onnxruntime.InferenceSession``; torch tensors in and out.

    Args:
        path: the ``.onnx`` file (fp32 export or any precision variant).
        device: ``cpu`` or ``cuda[:N]`` (needs onnxruntime-gpu).
        providers: explicit execution providers, overriding the choice from ``device``.
        threads: intra-op threads (``None``: ONNX Runtime's default, all cores).
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        device: str | torch.device = "cpu",
        providers: list[str] | None = None,
        threads: int | None = None,
    ) -> None:
        ort = require("onnxruntime")
        self.path, device = Path(path), torch.device(device)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        self.providers = providers or providers_for(device, ort.get_available_providers())
        self.session = self._open_session(ort, options)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        metadata = decode_metadata(self.session.get_modelmeta().custom_metadata_map)
        super().__init__(self._tasks(metadata), self._image_size(metadata), device, metadata)

    def _open_session(self, ort, options):
        try:
            return ort.InferenceSession(str(self.path), options, providers=self.providers)
        except Exception as exc:  # ORT raises its own Fail / NotImplemented / InvalidGraph types
            detail = " ".join(str(exc).split())[:300]
            hint = ""
            if "NOT_IMPLEMENTED" in detail and self._declared_precision() == "bf16":
                hint = (
                    "; bf16 graphs need TensorRT (strongly typed) or a GPU runtime, "
                    "ONNX Runtime's CPU EP lacks bf16 kernels"
                )
            raise WeightsError(f"onnxruntime cannot load {self.path}: {detail}{hint}") from exc

    def _declared_precision(self) -> str | None:
        return metadata_from_proto(load_graph(self.path)).get("precision")

    def _tasks(self, metadata: dict[str, Any]) -> tuple[str, ...]:
        tasks = metadata.get("tasks")
        if isinstance(tasks, list) and tasks and all(t in self.output_names for t in tasks):
            return tuple(tasks)
        return tuple(self.output_names)

    def _image_size(self, metadata: dict[str, Any]) -> int:
        size = (
            _side(metadata.get("image_size"))
            or _side(metadata.get("input_size"))
            or _side(self.session.get_inputs()[0].shape)
        )
        if not size:
            raise WeightsError(f"{self.path}: no input_size in the ONNX metadata and the input has no static size")
        return size

    def input_specs(self) -> list[TensorSpec]:
        return [TensorSpec(i.name, _dims(i.shape), ORT_DTYPES.get(i.type, i.type)) for i in self.session.get_inputs()]

    def output_specs(self) -> list[TensorSpec]:
        return [
            TensorSpec(o.name, self._output_dims(o.name, _dims(o.shape)), ORT_DTYPES.get(o.type, o.type))
            for o in self.session.get_outputs()
        ]

    def _output_dims(self, name: str, dims: tuple[int, ...]) -> tuple[int, ...]:
        """Fill what a TorchScript export leaves symbolic in a (N, C, S, S) output from the metadata's classes."""
        classes = (self.metadata.get("classes") or {}).get(name)
        if len(dims) != 4 or not classes:
            return dims
        return (dims[0], dims[1] if dims[1] > 0 else int(classes), *(d if d > 0 else self.image_size for d in dims[2:]))

    def infer(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run one batch; on CUDA the input is bound in place (IO binding) and outputs stay on the GPU."""
        if self.device.type == "cuda":
            return self._infer_cuda(images)
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        outputs = self.session.run(self.output_names, {self.input_name: array})
        return {
            name: torch.from_numpy(np.asarray(out))
            for name, out in zip(self.output_names, outputs, strict=True)
            if name in self.tasks
        }

    def _infer_cuda(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = images.detach().to(self.device, torch.float32).contiguous()
        binding = self.session.io_binding()
        binding.bind_input(
            self.input_name, "cuda", self.device.index or 0, np.float32, list(images.shape), images.data_ptr()
        )
        for name in self.output_names:
            binding.bind_output(name, "cuda", self.device.index or 0)
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        pairs = zip(self.output_names, outputs, strict=True)
        return {name: _cuda_tensor(value) for name, value in pairs if name in self.tasks}

    def close(self) -> None:
        self.session = None

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "file": str(self.path),
            "providers": self.providers,
            "precision": self.metadata.get("precision", "fp32"),
        }
