"""What a Triton repository serves, read from the artefact itself: an ONNX graph (its I/O and ``mtlora.*`` metadata)
or a TensorRT plan (its manifest). Names, dtypes and dims are never restated by hand (style rule 12).

A plan loads only in a Triton whose TensorRT is the plan's release (TensorRT's "serialization version" check);
``TRITON_TENSORRT`` says which Triton releases carry which TensorRT. No Triton backend loads TensorRT-RTX plans:
the tensorrt backend links full TensorRT (libnvinfer) and the onnxruntime backend offers only the TensorRT, CUDA and
OpenVINO accelerators, so an rtx plan is refused and the ONNX route named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtlora_deploy.engines.runtimes import TENSORRT_RTX, version_tuple
from mtlora_deploy.errors import ConfigError
from mtlora_deploy.utils.artifacts import artifact_kind

# TensorRT release (major.minor.patch) -> the Triton container releases that carry it, from Triton's compatibility
# matrix: triton-inference-server/server docs/introduction/compatibility.md at e1db8a603d86 (2026-08), the table of
# the nvcr.io/nvidia/tritonserver:YY.MM-trtllm-python-py3 images.
TRITON_TENSORRT: dict[str, tuple[str, ...]] = {
    "10.0.1": ("24.05", "24.06"),
    "10.1.0": ("24.07",),
    "10.3.0": ("24.08",),
    "10.4.0": ("24.09", "24.10"),
    "10.6.0": ("24.11",),
    "10.7.0": ("24.12",),
    "10.8.0": ("25.01", "25.02"),
    "10.9.0": ("25.03", "25.04", "25.05"),
    "10.10.0": ("25.06", "25.07"),
    "10.11.0": ("25.08", "25.09", "25.10"),
    "10.13.3": ("25.11", "25.12", "26.01", "26.02"),
    "10.14.1": ("26.03", "26.04", "26.05", "26.06", "26.07"),
}
TRITON_TENSORRT_SOURCE = "Triton's compatibility matrix (server docs/introduction/compatibility.md, 2026-08)"
ONNX_DTYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 6: "TYPE_INT32", 7: "TYPE_INT64", 9: "TYPE_BOOL"}
ONNX_DTYPES |= {10: "TYPE_FP16", 16: "TYPE_BF16"}
NAMED_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "bool": "TYPE_BOOL",
}
NUMPY_DTYPES = {"TYPE_FP32": "float32", "TYPE_FP16": "float16", "TYPE_UINT8": "uint8", "TYPE_INT32": "int32"}


@dataclass(frozen=True)
class Tensor:
    """One model-step tensor as Triton sees it: name, ``TYPE_*`` and dims without the batch axis."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass
class ModelSource:
    """The model step of a repository: the file, its platform and I/O, and the graph conventions the steps need."""

    path: Path
    kind: str  # onnx or plan
    input: Tensor
    outputs: list[Tensor]
    tasks: list[str]
    image_size: int
    metadata: dict[str, Any]  # the graph's mtlora.* metadata (outputs mode, mean, std, precision, ...)
    max_batch: int | None = None  # a plan's batch profile maximum
    tensorrt: str | None = None  # a plan's TensorRT release
    notes: list[str] = field(default_factory=list)
    external_files: list[Path] = field(default_factory=list)  # an ONNX graph's external weight files

    @property
    def platform(self) -> str:
        return "onnxruntime_onnx" if self.kind == "onnx" else "tensorrt_plan"

    @property
    def file_name(self) -> str:
        return "model.onnx" if self.kind == "onnx" else "model.plan"


def read_source(path: str | Path) -> ModelSource:
    """An ONNX graph exported by ``mtlora export`` or a plan built by ``mtlora build-engine``, described."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"MODEL {path} does not exist (expected an .onnx graph, a plan, or a run folder to export)")
    return _plan_source(path) if artifact_kind(path) == "plan" else _onnx_source(path)


def _batched_dims(name: str, shape: list[Any], path: Path) -> tuple[int, ...]:
    if not shape or isinstance(shape[0], int) and shape[0] > 0:
        raise ConfigError(
            f"{path}: tensor {name!r} has no dynamic batch axis (shape {shape}); Triton batches along it: "
            "export the graph again with mtlora export"
        )
    return tuple(int(d) if isinstance(d, int) and d > 0 else -1 for d in shape[1:])


def _onnx_source(path: Path) -> ModelSource:
    from mtlora_deploy.utils.onnx_info import load_graph, read_onnx_metadata

    metadata, graph = read_onnx_metadata(path), load_graph(path).graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]

    def tensor(value) -> Tensor:
        kind = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in kind.shape.dim]
        if kind.elem_type not in ONNX_DTYPES:
            raise ConfigError(f"{path}: tensor {value.name!r} has ONNX element type {kind.elem_type}, not servable")
        return Tensor(value.name, ONNX_DTYPES[kind.elem_type], _batched_dims(value.name, shape, path))

    if len(inputs) != 1:
        raise ConfigError(f"{path}: {len(inputs)} graph inputs; the served model takes one image input")
    locations = {e.value for i in graph.initializer for e in i.external_data if e.key == "location"}
    missing = [name for name in sorted(locations) if not (path.parent / name).is_file()]
    if missing:
        raise ConfigError(f"{path}: its external weights {missing[0]} are not beside it; export the graph again")
    return ModelSource(
        path,
        "onnx",
        tensor(inputs[0]),
        [tensor(o) for o in graph.output],
        list(metadata["tasks"]),
        int(metadata["image_size"]),
        metadata,
        external_files=[path.parent / name for name in sorted(locations)],
    )


def _plan_source(path: Path) -> ModelSource:
    from mtlora_deploy.engines.manifest import manifest_runtime, read_manifest

    manifest = read_manifest(path)
    if manifest_runtime(manifest) == TENSORRT_RTX:
        raise ConfigError(
            f"{path}: a TensorRT-RTX plan; no Triton backend loads those (Triton's tensorrt backend runs full "
            "TensorRT plans only): serve the ONNX graph it was built from instead: mtlora export-triton "
            f"{manifest.get('onnx', {}).get('path') or 'MODEL.onnx'} -o REPO (add --ort-tensorrt-fp16 on a GPU)"
        )
    release = _release(manifest.get("runtime_version"), path)
    profile = manifest.get("batch_profile") or {}
    if int(profile.get("min", 1)) != 1:
        raise ConfigError(
            f"{path}: its batch profile starts at {profile.get('min')}; Triton sends batches from 1 up to "
            "max_batch_size: rebuild it with mtlora build-engine ... --batch 1:OPT:MAX"
        )

    def tensor(io: dict[str, Any]) -> Tensor:
        if io["dtype"] not in NAMED_DTYPES:
            raise ConfigError(f"{path}: tensor {io['name']!r} has dtype {io['dtype']}, not servable by Triton")
        return Tensor(io["name"], NAMED_DTYPES[io["dtype"]], _batched_dims(io["name"], io["shape"], path))

    metadata = dict(manifest.get("onnx_metadata") or {})
    return ModelSource(
        path,
        "plan",
        tensor(manifest["inputs"][0]),
        [tensor(o) for o in manifest["outputs"]],
        list(manifest.get("tasks") or [o["name"] for o in manifest["outputs"]]),
        int(manifest["image_size"]),
        metadata,
        max_batch=int(profile.get("max")) if profile.get("max") else None,
        tensorrt=release,
        notes=[triton_release_note(release)],
    )


def _release(version: str | None, path: Path) -> str:
    if not version:
        raise ConfigError(f"{path}: its manifest names no TensorRT release; rebuild it with mtlora build-engine")
    if version_tuple(version)[0] < 10:
        raise ConfigError(f"{path}: built with TensorRT {version}; rebuild it with TensorRT 10 or newer")
    return ".".join(str(version).split(".")[:3])


def triton_release_note(release: str) -> str:
    """Which Triton containers carry the plan's TensorRT (a plan loads only under its own TensorRT release)."""
    releases = TRITON_TENSORRT.get(release)
    if releases:
        return (
            f"TensorRT {release} plan: Triton releases {', '.join(releases)} carry TensorRT {release} "
            f"({TRITON_TENSORRT_SOURCE}); confirm in the image with: ls /usr/lib/x86_64-linux-gnu/libnvinfer.so.*"
        )
    return (
        f"TensorRT {release} plan: no Triton release in {TRITON_TENSORRT_SOURCE} carries TensorRT {release}; it loads "
        "only in a Triton whose TensorRT is that release: build the plan inside the Triton container you serve with"
    )
