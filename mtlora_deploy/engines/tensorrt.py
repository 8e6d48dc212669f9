"""TensorRT runtime backend: a plan file run with torch CUDA tensors bound by name (no PyCUDA, no bindings).

This module is also the one place that knows TensorRT versions: ``load_tensorrt`` (import + minimum version),
``network_flags`` (STRONGLY_TYPED on 10.x, nothing on 11.x where strong typing is the only mode) and
``torch_dtype`` (TensorRT -> torch types). ``tensorrt`` is imported only inside functions.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from mtlora_deploy.engines.base import Backend, TensorSpec
from mtlora_deploy.engines.manifest import check_compatibility, check_plan_file, probe_environment, read_manifest
from mtlora_deploy.errors import ConfigError, MissingDependencyError, WeightsError
from mtlora_deploy.utils.imports import require

MIN_TENSORRT = (10, 0)
INSTALL_HINT = "pip install 'mtlora-deploy[tensorrt]'"
# TensorRT dtype attribute -> torch dtype; looked up with getattr so older/newer releases simply lack some entries.
_TORCH_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int8": torch.int8,
    "int32": torch.int32,
    "int64": torch.int64,
    "uint8": torch.uint8,
    "bool": torch.bool,
    "fp8": torch.float8_e4m3fn,
}


def version_tuple(version: str) -> tuple[int, ...]:
    """``"10.13.0.35"`` -> ``(10, 13, 0, 35)``; a part like ``"0rc1"`` keeps its leading digits."""
    return tuple(int(m.group()) if (m := re.match(r"\d+", part)) else 0 for part in str(version).split("."))


def load_tensorrt():
    """Import ``tensorrt`` (10.x or 11.x) or raise a one-line error saying what to install."""
    trt = require("tensorrt", extra="tensorrt")
    if version_tuple(trt.__version__)[:2] < MIN_TENSORRT:
        raise MissingDependencyError(
            f"TensorRT {trt.__version__} is too old: the name-based tensor API needs 10.x or 11.x; install: {INSTALL_HINT}"  # noqa: E501
        )
    return trt


def require_cuda(device: str | torch.device = "cuda") -> torch.device:
    """The CUDA device to use, or a one-line error when this machine (or this torch build) has no CUDA GPU."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ConfigError(f"--device: TensorRT runs on CUDA devices only, got {device}; use --device cuda")
    if not torch.cuda.is_available():
        raise MissingDependencyError(
            "TensorRT needs a CUDA GPU, and torch.cuda.is_available() is False here (no GPU, no driver or a CPU-only "
            f"torch); on a machine with an NVIDIA GPU install a CUDA build of torch and {INSTALL_HINT}"
        )
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


def network_flags(trt) -> int:
    """``create_network`` flags: STRONGLY_TYPED on 10.x (required since 10.12); 0 on 11.x, which is strongly typed
    only (the flag is deprecated and ignored there, and EXPLICIT_BATCH is gone)."""
    if version_tuple(trt.__version__)[0] >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def torch_dtype(trt, trt_dtype) -> torch.dtype:
    """The torch dtype for a TensorRT ``DataType`` (fails with its name when there is none, e.g. int4/fp4)."""
    for name, dtype in _TORCH_DTYPES.items():
        if getattr(trt, name, None) is not None and trt_dtype == getattr(trt, name):
            return dtype
    raise ConfigError(f"TensorRT tensor type {trt_dtype} has no torch equivalent for I/O; keep engine I/O in float32")


def dtype_name(trt, trt_dtype) -> str:
    """``trt.float16`` -> ``"float16"`` (the manifest's spelling)."""
    return str(torch_dtype(trt, trt_dtype)).replace("torch.", "")


def make_logger(trt, verbose: bool = False):
    """A TensorRT logger: WARNING by default, VERBOSE for debugging builds."""
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)


class TensorRTBackend(Backend):
    """Run a TensorRT plan on torch CUDA tensors; ``infer`` returns ``{task: output}`` on the GPU.

    The plan's manifest is checked first (TensorRT version and GPU architecture), before TensorRT sees the file.
    Work is enqueued with ``execute_async_v3`` on a private (non-default) torch stream that is ordered after the
    caller's stream and before it again on return, so callers need no extra synchronisation.

    With ``use_cuda_graph=True`` the enqueue is captured once per input shape into a ``torch.cuda.CUDAGraph`` and
    replayed. Caveats: a new batch size re-captures (one extra enqueue + capture, a few ms), and the returned
    outputs are static buffers that the next call overwrites: copy them if you keep them.
    """

    name = "tensorrt"

    def __init__(
        self,
        path: str | Path,
        device: str | torch.device = "cuda",
        use_cuda_graph: bool = False,
        environment: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        manifest = read_manifest(self.path)
        trt = load_tensorrt()
        device = require_cuda(device)
        env = environment or probe_environment(device.index or 0, tensorrt_version=trt.__version__)
        check_compatibility(manifest, env, self.path)
        check_plan_file(manifest, self.path)
        super().__init__(tuple(manifest["tasks"]), int(manifest["image_size"]), device, {"manifest": manifest})
        self._trt, self.use_cuda_graph = trt, bool(use_cuda_graph)
        self._open_engine(trt)

    def _open_engine(self, trt) -> None:
        self._logger = make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self.device):
            self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise WeightsError(f"{self.path}: TensorRT could not deserialize the plan (see the TensorRT log above)")
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise WeightsError(f"{self.path}: expected one input tensor (image), the plan has {inputs}")
        self.input_name, self.output_names = inputs[0], [n for n in names if n not in inputs]
        self._input_dtype = torch_dtype(trt, self.engine.get_tensor_dtype(self.input_name))
        self._shape: tuple[int, ...] | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static: dict[str, torch.Tensor] = {}

    # -- Backend interface -------------------------------------------------------------------------------------
    def input_specs(self) -> list[TensorSpec]:
        return [_spec(io) for io in self.metadata["manifest"]["inputs"]]

    def output_specs(self) -> list[TensorSpec]:
        return [_spec(io) for io in self.metadata["manifest"]["outputs"]]

    @torch.inference_mode()
    def infer(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run a batch (B, 3, H, W); B must lie in the plan's batch profile."""
        images = images.to(self.device, dtype=self._input_dtype, non_blocking=True).contiguous()
        if tuple(images.shape) != self._shape:
            self._set_shape(tuple(images.shape))
        caller = torch.cuda.current_stream(self.device)
        if self.use_cuda_graph:
            self._static[self.input_name].copy_(images)
            outputs = {n: self._static[n] for n in self.output_names}
        else:
            outputs = self._bind_fresh(images)
        self.stream.wait_stream(caller)
        self._run()
        caller.wait_stream(self.stream)
        return outputs

    def synchronize(self) -> None:
        self.stream.synchronize()
        torch.cuda.synchronize(self.device)

    def close(self) -> None:
        """Release the graph, context and engine (in that order: the context belongs to the engine)."""
        self._graph, self._static = None, {}
        for attr in ("context", "engine", "_runtime"):
            if hasattr(self, attr):
                delattr(self, attr)

    def describe(self) -> dict[str, Any]:
        manifest = self.metadata["manifest"]
        return {
            **super().describe(),
            "plan": str(self.path),
            "precision": manifest.get("precision"),
            "tensorrt_version": self._trt.__version__,
            "cuda_graph": self.use_cuda_graph,
            "batch_profile": manifest.get("batch_profile"),
        }

    # -- internals -------------------------------------------------------------------------------------------
    def _set_shape(self, shape: tuple[int, ...]) -> None:
        profile = self.metadata["manifest"].get("batch_profile") or {}
        if profile and not profile["min"] <= shape[0] <= profile["max"]:
            raise ConfigError(
                f"batch {shape[0]} is outside {self.path.name}'s profile {profile['min']}..{profile['max']}; "
                "rebuild with mtlora build-engine --batch MIN:OPT:MAX"
            )
        if not self.context.set_input_shape(self.input_name, shape):
            raise ConfigError(f"{self.path.name}: TensorRT refused input shape {shape} for '{self.input_name}'")
        self._shape, self._graph = shape, None
        if self.use_cuda_graph:
            self._static = {self.input_name: torch.empty(shape, dtype=self._input_dtype, device=self.device)}
            self._static.update(self._allocate_outputs())
            for name, tensor in self._static.items():
                self.context.set_tensor_address(name, tensor.data_ptr())
            self._capture()

    def _allocate_outputs(self) -> dict[str, torch.Tensor]:
        """Output buffers sized from the context's resolved shapes (valid once the input shape is set)."""
        return {
            name: torch.empty(
                tuple(self.context.get_tensor_shape(name)),
                dtype=torch_dtype(self._trt, self.engine.get_tensor_dtype(name)),
                device=self.device,
            )
            for name in self.output_names
        }

    def _bind_fresh(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Bind the caller's input and new output tensors by name; mark them used on our stream."""
        outputs = self._allocate_outputs()
        for name, tensor in [(self.input_name, images), *outputs.items()]:
            self.context.set_tensor_address(name, tensor.data_ptr())
            tensor.record_stream(self.stream)
        return outputs

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"{self.path.name}: TensorRT execute_async_v3 failed (see the TensorRT log above)")

    def _run(self) -> None:
        if self._graph is not None:
            with torch.cuda.stream(self.stream):
                self._graph.replay()
        else:
            self._enqueue()

    def _capture(self) -> None:
        """Capture one enqueue into a CUDA graph. TensorRT needs one plain enqueue after a shape change first (it
        flushes deferred shape-dependent set-up that must not happen inside a capture)."""
        self._enqueue()
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
            self._enqueue()
        self._graph = graph


def _spec(io: dict[str, Any]) -> TensorSpec:
    return TensorSpec(io["name"], tuple(io["shape"]), io["dtype"])
