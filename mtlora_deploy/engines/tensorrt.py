"""TensorRT runtime backend: a plan of either flavour (TensorRT or TensorRT-RTX) run with torch CUDA tensors bound by
name (no PyCUDA, no bindings).

The flavour comes from the plan's manifest; what differs between the two lives in ``engines.runtimes``. For
TensorRT-RTX plans, the kernels compiled when the plan is loaded are kept in a runtime cache file beside the plan
(``PLAN.rtxcache``), so the next load skips the compilation. Neither package is imported at module level.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mtlora_deploy.engines.base import Backend, TensorSpec
from mtlora_deploy.engines.manifest import (
    check_compatibility,
    check_plan_file,
    check_runtime,
    manifest_runtime,
    probe_environment,
    read_manifest,
)
from mtlora_deploy.engines.runtimes import (  # noqa: F401  (re-exported: the names callers used before)
    FLAVOURS,
    TENSORRT,
    TENSORRT_RTX,
    dtype_name,
    load_runtime,
    network_flags,
    shared_logger,
    torch_dtype,
    version_tuple,
)
from mtlora_deploy.errors import ConfigError, MissingDependencyError, WeightsError
from mtlora_deploy.utils.atomic import write_bytes_atomic
from mtlora_deploy.utils.locking import file_lock

RUNTIME_CACHE_SUFFIX = ".rtxcache"


def load_tensorrt():
    """Import ``tensorrt`` (10.x or 11.x) or raise a one-line error saying what to install."""
    return load_runtime(TENSORRT)


def require_cuda(device: str | torch.device = "cuda", runtime: str = TENSORRT) -> torch.device:
    """The CUDA device to use, or a one-line error when this machine (or this torch build) has no CUDA GPU."""
    device = torch.device(device)
    title = FLAVOURS[runtime].title
    if device.type != "cuda":
        raise ConfigError(f"{title} plans run on CUDA devices only, got {device}; use `device` cuda", field="device")
    if not torch.cuda.is_available():
        raise MissingDependencyError(
            f"running a {title} plan needs a CUDA GPU, and torch.cuda.is_available() is False here (no GPU, no driver "
            f"or a CPU-only torch); on a machine with an NVIDIA GPU install a CUDA build of torch and "
            f"{FLAVOURS[runtime].install}"
        )
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


def make_logger(trt, verbose: bool = False):
    """The flavour's process-wide logger (TensorRT keeps the first one it gets; see ``runtimes.shared_logger``)."""
    return shared_logger(trt)


def runtime_cache_path(plan: str | Path) -> Path:
    """``engines/m.plan`` -> ``engines/m.plan.rtxcache``: TensorRT-RTX's compiled kernels for this plan."""
    plan = Path(plan)
    return plan.with_name(plan.name + RUNTIME_CACHE_SUFFIX)


class TensorRTBackend(Backend):
    """Run a TensorRT plan on torch CUDA tensors; ``infer`` returns ``{task: output}`` on the GPU.

    The plan's manifest is checked first (runtime flavour and version, GPU architecture or, for TensorRT-RTX, the
    plan's target compute capabilities), before TensorRT sees the file.
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
        runtime: str | None = None,
        runtime_cache: bool = True,
    ) -> None:
        self.path = Path(path)
        manifest = read_manifest(self.path)
        self.runtime = runtime or manifest_runtime(manifest)
        check_runtime(manifest, self.runtime, self.path)
        trt = load_runtime(self.runtime)
        device = require_cuda(device, self.runtime)
        env = environment or probe_environment(device.index or 0, runtime=self.runtime, runtime_version=trt.__version__)
        check_compatibility(manifest, env, self.path)
        check_plan_file(manifest, self.path)
        super().__init__(tuple(manifest["tasks"]), int(manifest["image_size"]), device, {"manifest": manifest})
        self._trt, self.use_cuda_graph = trt, bool(use_cuda_graph)
        keep_cache = runtime_cache and self.runtime == TENSORRT_RTX
        self.runtime_cache_path = runtime_cache_path(self.path) if keep_cache else None
        self._open_engine(trt)

    def _open_engine(self, trt) -> None:
        self._logger = make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self.device):
            self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise WeightsError(f"{self.path}: TensorRT could not deserialize the plan (see the TensorRT log above)")
            self.context = self._create_context()
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

    def _create_context(self):
        """An execution context; for TensorRT-RTX with the runtime cache loaded from beside the plan (a cache made
        by another GPU, driver or version is rejected by TensorRT-RTX itself and rebuilt)."""
        if self.runtime_cache_path is None:
            return self.engine.create_execution_context()
        self._runtime_config = self.engine.create_runtime_config()
        self._runtime_cache = self._runtime_config.create_runtime_cache()
        if self.runtime_cache_path.is_file():
            self._runtime_cache.deserialize(self.runtime_cache_path.read_bytes())
        self._runtime_config.set_runtime_cache(self._runtime_cache)
        return self.engine.create_execution_context(self._runtime_config)

    def save_runtime_cache(self) -> Path | None:
        """Write the kernels TensorRT-RTX compiled so far beside the plan (atomically, under a file lock)."""
        cache = getattr(self, "_runtime_cache", None)
        if cache is None or self.runtime_cache_path is None:
            return None
        with file_lock(self.runtime_cache_path):
            write_bytes_atomic(self.runtime_cache_path, bytes(cache.serialize()))
        return self.runtime_cache_path

    # -- Backend interface -------------------------------------------------------------------------------------
    def input_specs(self) -> list[TensorSpec]:
        return [_spec(io) for io in self.metadata["manifest"]["inputs"]]

    def output_specs(self) -> list[TensorSpec]:
        return [_spec(io) for io in self.metadata["manifest"]["outputs"]]

    @torch.inference_mode()
    def infer(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run a batch (B, 3, H, W); B must lie in the plan's batch profile."""
        images = images.to(self.device, dtype=self._input_dtype, non_blocking=True).contiguous()
        caller = torch.cuda.current_stream(self.device)
        # Before any work on our stream: a new shape enqueues there at once (CUDA graphs: the plain enqueue before the
        # capture), and it must come after what the caller queued (the input, the memory it freed and we reuse).
        self.stream.wait_stream(caller)
        if tuple(images.shape) != self._shape:
            with torch.cuda.stream(self.stream):  # the static buffers belong to our stream
                self._set_shape(tuple(images.shape))
        if self.use_cuda_graph:
            with torch.cuda.stream(self.stream):
                self._static[self.input_name].copy_(images)
            images.record_stream(self.stream)
            outputs = {n: self._static[n] for n in self.output_names}
        else:
            outputs = self._bind_fresh(images)
        self._run()
        caller.wait_stream(self.stream)
        return outputs

    def synchronize(self) -> None:
        self.stream.synchronize()
        torch.cuda.synchronize(self.device)

    def close(self) -> None:
        """Release the graph, context and engine (in that order: the context belongs to the engine)."""
        if hasattr(self, "context"):
            self.save_runtime_cache()
        self._graph, self._static = None, {}
        for attr in ("context", "_runtime_cache", "_runtime_config", "engine", "_runtime"):
            if hasattr(self, attr):
                delattr(self, attr)

    def describe(self) -> dict[str, Any]:
        manifest = self.metadata["manifest"]
        return {
            **super().describe(),
            "plan": str(self.path),
            "precision": manifest.get("precision"),
            "runtime": self.runtime,
            "runtime_version": self._trt.__version__,
            "cuda_graph": self.use_cuda_graph,
            "batch_profile": manifest.get("batch_profile"),
        }

    # -- internals -------------------------------------------------------------------------------------------
    def _set_shape(self, shape: tuple[int, ...]) -> None:
        profile = self.metadata["manifest"].get("batch_profile") or {}
        if profile and not profile["min"] <= shape[0] <= profile["max"]:
            raise ConfigError(
                f"batch {shape[0]} is outside {self.path.name}'s profile {profile['min']}..{profile['max']}; "
                "rebuild it with: mtlora build-engine MODEL.onnx --batch MIN:OPT:MAX"
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
