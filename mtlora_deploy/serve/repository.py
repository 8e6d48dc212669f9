"""``mtlora export-triton``: a Triton model repository for an ONNX graph or a TensorRT plan.

    REPO/NAME/              ensemble: encoded image bytes -> pre-step -> model step -> post-step -> per-task maps
    REPO/NAME_rgb/          the same ensemble for a uint8 (H, W, 3) array
    REPO/NAME_model/        the model step: onnxruntime_onnx or tensorrt_plan, dynamic batching, warm-up
    REPO/NAME_preprocess/   Python backend: model.py + mtlora_imaging.py (the toolkit's utils/imaging.py)
    REPO/NAME_postprocess/  Python backend: model.py + mtlora_imaging.py
    REPO/mtlora_repository.json   what was served from what (source sha256, tasks, names, notes)

Every config is built as Triton's ModelConfig message, written with text_format and parsed back (``schema``). The
repository is written into a temporary folder beside ``-o`` and renamed into place, so a failure leaves nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtlora_deploy.errors import ConfigError, WeightsError
from mtlora_deploy.serve.schema import check_repository, config_text, model_config_pb2, new_config
from mtlora_deploy.serve.source import ModelSource, Tensor, read_source

MANIFEST = "mtlora_repository.json"
MODELS_DIR = Path(__file__).parent / "triton_models"
IMAGING_MODULE = "mtlora_imaging.py"
DEFAULT_MAX_BATCH = 8
BYTES_INPUT, RGB_INPUT, SIZE_TENSOR = "image_bytes", "image_rgb", "image_size"
MAP_TYPES = {
    "class": ("TYPE_UINT8", (-1, -1)),
    "sigmoid": ("TYPE_FP32", (-1, -1)),
    "normal": ("TYPE_FP32", (3, -1, -1)),
}


@dataclass
class RepositoryOptions:
    """How the repository serves the model (the CLI's options; None: from the model)."""

    name: str = "mtlora"
    max_batch: int | None = None
    instances: int = 1
    max_queue_delay_us: int = 500
    ort_tensorrt_fp16: bool = False

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", self.name):
            raise ConfigError(f"got {self.name!r}, expected letters, digits, '_' or '-'", field="name")
        for name, value, low in (("instances", self.instances, 1), ("max_queue_delay_us", self.max_queue_delay_us, 0)):
            if value < low:
                raise ConfigError(f"got {value}, expected an integer >= {low}", field=name)
        if self.max_batch is not None and self.max_batch < 1:
            raise ConfigError(f"got {self.max_batch}, expected an integer >= 1", field="max_batch")


@dataclass
class RepositoryReport:
    """What ``export_triton`` wrote."""

    path: Path
    models: dict[str, str]  # role -> model name
    manifest: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def model_names(name: str) -> dict[str, str]:
    """The repository's models by role: ``ensemble``, ``ensemble_rgb``, ``model``, ``preprocess``, ``postprocess``."""
    return {
        "ensemble": name,
        "ensemble_rgb": f"{name}_rgb",
        "model": f"{name}_model",
        "preprocess": f"{name}_preprocess",
        "postprocess": f"{name}_postprocess",
    }


def model_output_name(output: str) -> str:
    """The ensemble tensor (and post-step input) that carries the model step's output ``output``."""
    return f"{output}_model"


def _dtype(name: str) -> int:
    return model_config_pb2().DataType.Value(name)


def _add_tensor(repeated, tensor: Tensor, optional: bool = False):
    item = repeated.add(name=tensor.name, data_type=_dtype(tensor.data_type), dims=list(tensor.dims))
    if optional:
        item.optional = True
    return item


def _parameters(config, values: dict[str, Any]) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = value if isinstance(value, str) else json.dumps(value)


def _batching(config, delay_us: int) -> None:
    config.dynamic_batching.max_queue_delay_microseconds = delay_us


def model_step_config(source: ModelSource, name: str, max_batch: int, options: RepositoryOptions):
    """The model step: the graph's own I/O, dynamic batching, instance groups and a zero-input warm-up."""
    config = new_config(name=name, platform=source.platform, max_batch_size=max_batch)
    _add_tensor(config.input, source.input)
    for output in source.outputs:
        _add_tensor(config.output, output)
    _batching(config, options.max_queue_delay_us)
    config.instance_group.add(count=options.instances)
    warmup = config.model_warmup.add(name="zeros", batch_size=1)
    warm_input = warmup.inputs[source.input.name]
    warm_input.data_type, warm_input.zero_data = _dtype(source.input.data_type), True
    warm_input.dims.extend(source.input.dims)
    if options.ort_tensorrt_fp16:
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        accelerator.parameters.update({"precision_mode": "FP16", "trt_engine_cache_enable": "true"})
    return config


def preprocess_config(source: ModelSource, name: str, max_batch: int, options: RepositoryOptions):
    """Encoded bytes or a uint8 HWC array -> the model input (+ each image's size); normalisation from the graph."""
    config = new_config(name=name, backend="python", max_batch_size=max_batch)
    _add_tensor(config.input, Tensor(BYTES_INPUT, "TYPE_STRING", (1,)), optional=True)
    _add_tensor(config.input, Tensor(RGB_INPUT, "TYPE_UINT8", (-1, -1, 3)), optional=True)
    _add_tensor(config.output, source.input)
    _add_tensor(config.output, Tensor(SIZE_TENSOR, "TYPE_INT32", (2,)))
    _batching(config, options.max_queue_delay_us)
    config.instance_group.add(count=options.instances, kind=model_config_pb2().ModelInstanceGroup.KIND_CPU)
    mean, std = source.metadata.get("mean"), source.metadata.get("std")
    if not mean or not std:
        raise ConfigError(f"{source.path}: no mean/std in its metadata; export it again with mtlora export")
    _parameters(
        config, {"model_input": source.input.name, "image_size": str(source.image_size), "mean": mean, "std": std}
    )
    return config


def served_outputs(source: ModelSource) -> dict[str, Tensor]:
    """Task -> the ensemble's output tensor (the map ``mtlora predict`` computes for it)."""
    from mtlora_deploy.report.predict import map_kind

    return {task: Tensor(task, *MAP_TYPES[map_kind(task)]) for task in source.tasks}


def postprocess_config(source: ModelSource, name: str, max_batch: int, options: RepositoryOptions):
    """The model step's outputs (+ image size) -> per-task maps at the image's size."""
    from mtlora_deploy.report.predict import map_kind

    config = new_config(name=name, backend="python", max_batch_size=max_batch)
    graph_outputs = {o.name: o for o in source.outputs}
    for task in source.tasks:
        _add_tensor(
            config.input, Tensor(model_output_name(task), graph_outputs[task].data_type, graph_outputs[task].dims)
        )
    _add_tensor(config.input, Tensor(SIZE_TENSOR, "TYPE_INT32", (2,)))
    for tensor in served_outputs(source).values():
        _add_tensor(config.output, tensor)
    _batching(config, options.max_queue_delay_us)
    config.instance_group.add(count=options.instances, kind=model_config_pb2().ModelInstanceGroup.KIND_CPU)
    _parameters(
        config,
        {
            "kinds": {t: map_kind(t) for t in source.tasks},
            "inputs": {t: model_output_name(t) for t in source.tasks},
            "graph_outputs": str(source.metadata.get("outputs") or "logits"),
        },
    )
    return config


def ensemble_config(source: ModelSource, names: dict[str, str], role: str, image: Tensor, max_batch: int):
    """``image`` -> pre-step -> model step -> post-step -> one output per task."""
    config = new_config(name=names[role], platform="ensemble", max_batch_size=max_batch)
    _add_tensor(config.input, image)
    for tensor in served_outputs(source).values():
        _add_tensor(config.output, tensor)
    steps = config.ensemble_scheduling.step
    pre = steps.add(model_name=names["preprocess"], model_version=-1)
    pre.input_map[image.name] = image.name
    pre.output_map.update({source.input.name: "model_input", SIZE_TENSOR: SIZE_TENSOR})
    model = steps.add(model_name=names["model"], model_version=-1)
    model.input_map[source.input.name] = "model_input"
    model.output_map.update({t: model_output_name(t) for t in source.tasks})
    post = steps.add(model_name=names["postprocess"], model_version=-1)
    post.input_map.update({model_output_name(t): model_output_name(t) for t in source.tasks})
    post.input_map[SIZE_TENSOR] = SIZE_TENSOR
    post.output_map.update({t: t for t in source.tasks})
    return config


def _max_batch(source: ModelSource, requested: int | None) -> int:
    if source.max_batch is None:
        return requested or DEFAULT_MAX_BATCH
    if requested is not None and requested > source.max_batch:
        raise ConfigError(
            f"`max_batch` {requested}: the plan {source.path} runs batches up to {source.max_batch} (its batch "
            "profile); use `max_batch` <= that, or rebuild the plan with a larger MAX: mtlora build-engine "
            "MODEL.onnx --batch 1:OPT:MAX",
            field="max_batch",
        )
    return requested or source.max_batch


def _write_model(folder: Path, config, files: dict[str, Path]) -> None:
    version = folder / "1"
    version.mkdir(parents=True)
    (folder / "config.pbtxt").write_text(config_text(config))
    for name, path in files.items():
        shutil.copyfile(path, version / name)


def write_repository(
    source: ModelSource, output: Path, options: RepositoryOptions, origin: Path | None = None
) -> RepositoryReport:
    """Write the five models and the manifest into ``output`` (a new folder); ``origin``: what the user named, when
    the graph was exported from it first."""
    names, max_batch = model_names(options.name), _max_batch(source, options.max_batch)
    from mtlora_deploy.utils import imaging

    python_files = {IMAGING_MODULE: Path(imaging.__file__)}
    _write_model(
        output / names["model"],
        model_step_config(source, names["model"], max_batch, options),
        {source.file_name: source.path, **{f.name: f for f in source.external_files}},
    )
    _write_model(
        output / names["preprocess"],
        preprocess_config(source, names["preprocess"], max_batch, options),
        {"model.py": MODELS_DIR / "preprocess.py", **python_files},
    )
    _write_model(
        output / names["postprocess"],
        postprocess_config(source, names["postprocess"], max_batch, options),
        {"model.py": MODELS_DIR / "postprocess.py", **python_files},
    )
    for role, image in (
        ("ensemble", Tensor(BYTES_INPUT, "TYPE_STRING", (1,))),
        ("ensemble_rgb", Tensor(RGB_INPUT, "TYPE_UINT8", (-1, -1, 3))),
    ):
        _write_model(output / names[role], ensemble_config(source, names, role, image, max_batch), {})
    check_repository(output)
    manifest = repository_manifest(source, names, max_batch, options)
    if origin is not None and origin != source.path:
        manifest["source"]["exported_from"] = str(origin)
    manifest["files"] = repository_files(output)
    (output / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return RepositoryReport(output, names, manifest, list(source.notes))


def repository_manifest(
    source: ModelSource, names: dict[str, str], max_batch: int, options: RepositoryOptions
) -> dict[str, Any]:
    from mtlora_deploy import __version__
    from mtlora_deploy.utils.hashing import file_sha256

    return {
        "format": "mtlora-deploy-triton-repository",
        "toolkit_version": __version__,
        "source": {"path": str(source.path.resolve()), "kind": source.kind, "sha256": file_sha256(source.path)},
        "models": names,
        "platform": source.platform,
        "tasks": source.tasks,
        "image_size": source.image_size,
        "graph_outputs": source.metadata.get("outputs") or "logits",
        "precision": source.metadata.get("precision"),
        "max_batch_size": max_batch,
        "options": {k: getattr(options, k) for k in ("instances", "max_queue_delay_us", "ort_tensorrt_fp16")},
        "tensorrt": source.tensorrt,
        "notes": source.notes,
    }


def repository_files(repository: Path) -> dict[str, dict[str, Any]]:
    """Every file of a repository (its manifest aside) by relative path: its size and sha256."""
    from mtlora_deploy.utils.checkpoint_manifest import file_record

    files = sorted(p for p in repository.rglob("*") if p.is_file() and p.name != MANIFEST)
    return {p.relative_to(repository).as_posix(): file_record(p) for p in files}


def read_repository_manifest(repository: str | Path) -> dict[str, Any]:
    """The ``mtlora_repository.json`` of a repository written by export-triton.

    Raises:
        ConfigError: there is none, or it is not the JSON object export-triton writes.
    """
    path = Path(repository) / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{repository}: no {MANIFEST}; write the repository with mtlora export-triton")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        manifest = None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), dict):
        raise ConfigError(f"{path}: not the manifest export-triton writes (truncated or edited); export it again")
    return manifest


def verify_repository(repository: str | Path) -> dict[str, Any]:
    """The repository's manifest, after checking every file it records (before a server loads any of them).

    Raises:
        ConfigError: no readable manifest.
        WeightsError: a recorded file is missing, truncated or changed.
    """
    from mtlora_deploy.utils.checkpoint_manifest import verify_files

    manifest = read_repository_manifest(repository)
    # a repository written before files were recorded has none to check
    problem = verify_files(Path(repository), manifest.get("files") or {}, manifest_name=MANIFEST)
    if problem:
        raise WeightsError(f"{repository}: {problem}; export the repository again with mtlora export-triton")
    return manifest


def export_triton(model: str | Path, output: str | Path, options: RepositoryOptions | None = None) -> RepositoryReport:
    """A Triton repository for MODEL (an ONNX graph, a plan, or a run/merged folder exported to fp32 ONNX first).

    Raises:
        ConfigError: ``output`` exists and is not empty, a bad option, or a model Triton cannot load (e.g. a
            TensorRT-RTX plan).
    """
    options, output, model = options or RepositoryOptions(), Path(output), Path(model)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(
            f"`output` {output} already exists; choose a new folder (nothing is overwritten)", field="output"
        )
    if (model / MANIFEST).is_file():
        raise ConfigError(
            f"`model` {model} is already a Triton repository; serve it with: mtlora serve {model}", field="model"
        )
    model_config_pb2()  # the schema is needed: fail before any export
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as tmp:
        source = read_source(_exported(model, Path(tmp)) if model.is_dir() else model)
        staging = Path(tmp) / "repository"
        report = write_repository(source, staging, options, origin=model)
        if output.exists():
            output.rmdir()
        staging.rename(output)
    report.path = output
    return report


def _exported(run: Path, folder: Path) -> Path:
    """A run, checkpoint or merged folder -> its fp32 ONNX graph (checked export, as ``mtlora export`` does)."""
    from mtlora_deploy.deploy.export import export_onnx

    path = folder / "model.fp32.onnx"
    export_onnx(run, path)
    return path
