"""``mtlora inspect PATH``: what an artefact holds, read without running it (as Polygraphy's ``inspect model``).

Each kind of artefact (an ONNX graph, a TensorRT plan with its manifest, a run folder, a merged or checkpoint
folder) is one entry of :data:`KINDS`: a test that recognises it and a reader that describes it as one dict with
the same top-level fields, so the console tables (``inspect_view``) and ``--json`` treat every kind alike. A new
kind (a Triton model repository) is one more :func:`register_kind` call.

Every description has ``kind``, ``path``, ``tasks``, ``inputs``/``outputs`` (name, dtype, shape), ``precision``,
``low_precision`` (what really runs below fp32), ``batch`` (the batch sizes it accepts), ``runtime`` (what runs it,
and on which GPUs), ``fidelity`` (measured agreement with fp32), ``details`` (kind-specific facts) and ``files``
(each file's size and sha256, and whether it matches the digest recorded for it).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtlora_deploy.errors import ConfigError, WeightsError
from mtlora_deploy.utils.artifacts import ONNX_SUFFIX, PLAN_SUFFIXES
from mtlora_deploy.utils.hashing import file_sha256

COMPUTE_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")


@dataclass(frozen=True)
class Kind:
    """One kind of artefact ``inspect`` understands."""

    name: str
    summary: str
    matches: Callable[[Path], bool]
    describe: Callable[[Path], dict[str, Any]]


KINDS: list[Kind] = []


def register_kind(name: str, summary: str, matches: Callable[[Path], bool], describe: Callable[[Path], dict]) -> None:
    """Add a kind; the first registered kind whose ``matches`` accepts a path describes it."""
    KINDS.append(Kind(name, summary, matches, describe))


def inspect_artifact(path: str | Path) -> dict[str, Any]:
    """Describe the artefact at ``path`` (see the module docstring for the fields).

    Raises:
        ConfigError: ``path`` does not exist or is no kind of artefact this knows.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"PATH {path} does not exist")
    for kind in KINDS:
        if kind.matches(path):
            return {"kind": kind.name, "path": str(path), **_blank(), **kind.describe(path)}
    known = "; ".join(f"{k.name} ({k.summary})" for k in KINDS)
    raise ConfigError(f"PATH {path}: not an artefact inspect knows; expected one of: {known}")


def _blank() -> dict[str, Any]:
    return {
        "tasks": [],
        "inputs": [],
        "outputs": [],
        "precision": None,
        "low_precision": None,
        "batch": None,
        "runtime": None,
        "fidelity": None,
        "details": {},
        "files": [],
    }


def file_entry(path: Path, expected_sha256: str | None = None, expected_bytes: int | None = None) -> dict[str, Any]:
    """Size and sha256 of one file, and whether they match what was recorded for it (None: nothing recorded)."""
    if not path.is_file():
        return {"file": str(path), "bytes": None, "sha256": None, "verified": False, "problem": "missing"}
    size, digest = path.stat().st_size, file_sha256(path)
    problem = None
    if expected_bytes is not None and size != expected_bytes:
        problem = f"truncated ({size} of {expected_bytes} bytes)"
    elif expected_sha256 is not None and digest != expected_sha256:
        problem = "sha256 differs from the recorded one"
    recorded = expected_sha256 is not None or expected_bytes is not None
    return {
        "file": str(path),
        "bytes": size,
        "sha256": digest,
        "verified": (problem is None) if recorded else None,
        "problem": problem,
    }


# -- ONNX graphs --------------------------------------------------------------------------------------------------
def _tensor_io(values) -> list[dict[str, Any]]:
    import onnx

    out = []
    for value in values:
        kind = value.type.tensor_type
        shape = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in kind.shape.dim]
        out.append(
            {"name": value.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(kind.elem_type).name, "shape": shape}
        )
    return out


def _low_precision_onnx(model, precision: str, metadata: dict[str, Any]) -> str | None:
    """In words: how much of the graph computes below fp32."""
    nodes = model.graph.node
    compute = [n for n in nodes if n.op_type in COMPUTE_OPS]
    if precision == "int8":
        dequantized = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
        fed = sum(any(i in dequantized for i in n.input) for n in compute)
        return f"{fed} of {len(compute)} {'/'.join(COMPUTE_OPS)} nodes read int8 (Q/DQ) inputs"
    if precision in ("fp16", "bf16"):
        kept = metadata.get("precision_high_precision_nodes") or []
        return f"{len(nodes) - len(kept)} of {len(nodes)} nodes in {precision}, {len(kept)} kept in fp32"
    return None


def describe_onnx(path: Path) -> dict[str, Any]:
    """An ONNX graph: I/O, opset, nodes, precision and its record, the exporter's metadata, size and sha256."""
    import onnx

    from mtlora_deploy.utils.onnx_info import decode_metadata, detect_onnx_precision

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise WeightsError(f"{path} is not a valid ONNX model (truncated or corrupt); export it again") from exc
    metadata = decode_metadata(model.metadata_props)
    precision = detect_onnx_precision(path)
    initializers = {i.name for i in model.graph.initializer}
    inputs = _tensor_io(i for i in model.graph.input if i.name not in initializers)
    batch = inputs[0]["shape"][0] if inputs and inputs[0]["shape"] else None
    ops = Counter(n.op_type for n in model.graph.node)
    return {
        "tasks": list(metadata.get("tasks") or [o.name for o in model.graph.output]),
        "inputs": inputs,
        "outputs": _tensor_io(model.graph.output),
        "precision": precision,
        "low_precision": _low_precision_onnx(model, precision, metadata),
        "batch": f"dynamic ({batch})" if isinstance(batch, str) else batch,
        "runtime": "ONNX Runtime, TensorRT (mtlora build-engine)",
        "fidelity": metadata.get("fidelity"),
        "details": {
            "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "nodes": len(model.graph.node),
            "initializers": len(initializers),
            "op_types": dict(ops.most_common()),
            **{
                k: metadata[k]
                for k in ("source", "exporter", "outputs", "image_size", "toolkit_version")
                if k in metadata
            },
            **{k: metadata[k] for k in ("precision_tool", "precision_tool_version", "calibration") if k in metadata},
        },
        "files": [file_entry(path)],
    }


# -- TensorRT plans -----------------------------------------------------------------------------------------------
def describe_plan(path: Path) -> dict[str, Any]:
    """A TensorRT / TensorRT-RTX plan: everything its manifest records, and whether the plan still matches it."""
    from mtlora_deploy.engines.manifest import manifest_path, manifest_runtime, plan_targets, read_manifest

    manifest = read_manifest(path)
    runtime = manifest_runtime(manifest)
    where = (
        f"GPUs of compute capability {', '.join(plan_targets(manifest))}"
        if runtime == "tensorrt-rtx"
        else f"{manifest.get('gpu_name') or 'the build GPU'} (compute capability {manifest.get('compute_capability')})"
    )
    summary = manifest.get("layer_summary") or {}
    low = None
    if summary:
        types = ", ".join(f"{t} {n}" for t, n in (summary.get("compute_input_types") or {}).items())
        low = (
            f"{summary.get('compute_layers_with_int8_inputs', 0)} of {summary.get('compute_layers')} GEMM/conv layers "
            f"read int8 inputs"
            + (f" (input types: {types})" if types else "")
            + f"; kernels chosen at {summary.get('tactics_at')}"
        )
    profile = manifest.get("batch_profile") or {}
    plan = manifest.get("plan") or {}
    onnx = manifest.get("onnx") or {}
    return {
        "tasks": list(manifest.get("tasks") or []),
        "inputs": [_io(t) for t in manifest.get("inputs") or []],
        "outputs": [_io(t) for t in manifest.get("outputs") or []],
        "precision": manifest.get("precision"),
        "low_precision": low,
        "batch": f"{profile.get('min')} to {profile.get('max')}, tuned for {profile.get('opt')}" if profile else None,
        "runtime": f"{runtime} {manifest.get('runtime_version')} on {where}",
        "fidelity": (manifest.get("onnx_metadata") or {}).get("fidelity"),
        "details": {
            "precision_notes": manifest.get("precision_notes") or [],
            "built_from": onnx.get("path"),
            "built_at": manifest.get("built_at"),
            "build_time_s": manifest.get("build_time_s"),
            "builder": manifest.get("builder"),
            "image_size": manifest.get("image_size"),
        },
        "files": [file_entry(path, plan.get("sha256"), plan.get("bytes")), file_entry(manifest_path(path))],
    }


def _io(tensor: dict[str, Any]) -> dict[str, Any]:
    """A manifest's tensor; TensorRT's -1 (a dimension set at run time) shown as ``batch`` as ONNX names it."""
    shape = ["batch" if d == -1 else d for d in tensor.get("shape") or []]
    return {"name": tensor.get("name"), "dtype": tensor.get("dtype"), "shape": shape}


# -- checkpoints, run folders, merged folders ------------------------------------------------------------------------
def _checkpoint_io(config: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """The model's input and per-task outputs, as an export of it would have them (channels from the config)."""
    from mtlora_deploy.model.config import ModelConfig

    size = config.get("image_size")
    try:
        model = ModelConfig.from_dict({**config, "pretrained": None})
        channels = {task: model.output_channels(task) for task in model.tasks}
    except Exception:  # noqa: BLE001 - a config of another version: the outputs still have their names
        channels = {}
    inputs = [{"name": "image", "dtype": "float32", "shape": ["batch", 3, size, size]}]
    return inputs, [
        {"name": task, "dtype": "float32", "shape": ["batch", channels.get(task, "C"), size, size]}
        for task in config["tasks"]
    ]


def _tensor_summary(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as handle:
            names = list(handle.keys())
            dtypes = Counter(str(handle.get_slice(n).get_dtype()) for n in names)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for bad headers
        return {"tensors": None, "problem": f"unreadable ({' '.join(str(exc).split())[:80]})"}
    return {"tensors": len(names), "tensor_dtypes": dict(dtypes)}


def describe_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint pair (``NAME.safetensors`` + ``NAME.json``) or a folder holding ``model.*`` (merged/imported):
    config, kind, metadata and tensors."""
    from mtlora_deploy.model.checkpoint import read_checkpoint_info, resolve_checkpoint

    stem = resolve_checkpoint(path)
    info = read_checkpoint_info(stem)
    config = info["model_config"]
    inputs, outputs = _checkpoint_io(config)
    tensors = stem.with_suffix(".safetensors")
    return {
        "tasks": list(config["tasks"]),
        "inputs": inputs,
        "outputs": outputs,
        "precision": "fp32 (PyTorch; choose another at run time)",
        "batch": "any",
        "runtime": "PyTorch (torch, torch-compiled)",
        "details": {
            "checkpoint_kind": info.get("kind"),
            "adapter": config.get("adapter"),
            "backbone": config.get("backbone"),
            "image_size": config.get("image_size"),
            "toolkit_version": info.get("toolkit_version"),
            "metadata": info.get("metadata"),
            **_tensor_summary(tensors),
        },
        "files": [file_entry(tensors), file_entry(stem.with_suffix(".json"))],
    }


def describe_run(path: Path) -> dict[str, Any]:
    """A run folder: how it was asked for (preset, overrides), its config, training progress, the checkpoint sets
    with every file checked against their manifests, and what ``load(RUN)`` would use."""
    import yaml

    from mtlora_deploy.utils.checkpoint_manifest import LINK, STORE, read_manifest, verify_files

    try:
        saved = yaml.safe_load((path / "config.yaml").read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{path / 'config.yaml'} is not readable YAML (truncated or corrupt)") from exc
    if not isinstance(saved, dict):
        raise WeightsError(f"{path / 'config.yaml'}: expected the model:, train: and resolved: sections of a run")
    model, train, resolved = saved.get("model") or {}, saved.get("train") or {}, saved.get("resolved") or {}
    inputs, outputs = _checkpoint_io(model) if model.get("tasks") else ([], [])
    current = (path / LINK).resolve() if (path / LINK).exists() else None
    sets, files = [], []
    store = path / STORE
    for folder in sorted((p for p in store.iterdir() if p.name.isdigit()), reverse=True) if store.is_dir() else []:
        manifest = read_manifest(folder)
        problem = verify_files(folder, manifest["files"]) if manifest else f"no readable {folder.name}/MANIFEST.json"
        sets.append({"set": folder.name, "step": (manifest or {}).get("step"), "current": folder == current})
        sets[-1]["verified"], sets[-1]["problem"] = problem is None, problem
        for name, entry in (manifest or {}).get("files", {}).items():
            files.append(file_entry(folder / name, entry["sha256"], entry["bytes"]))
    return {
        "tasks": list(model.get("tasks") or []),
        "inputs": inputs,
        "outputs": outputs,
        "precision": f"fp32 weights; trained with amp {resolved.get('amp', train.get('amp'))}",
        "batch": "any",
        "runtime": "PyTorch (torch, torch-compiled); mtlora export for ONNX",
        "details": {
            "origin": saved.get("origin"),
            "adapter": model.get("adapter"),
            "task_agnostic_rank": model.get("task_agnostic_rank"),
            "backbone": model.get("backbone"),
            "image_size": model.get("image_size"),
            "data": train.get("data"),
            "total_steps": resolved.get("total_steps"),
            "last_validation": _last_validation(path / "metrics.jsonl"),
            "checkpoint_sets": sets,
            "parameters": _read_json(path / "params.json"),
        },
        "files": files,
    }


def _last_validation(log: Path) -> dict[str, Any] | None:
    if not log.is_file():
        return None
    last = None
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "val" in record:
            last = {k: v for k, v in record.items() if k != "val_all"}
    return last


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _is_run(path: Path) -> bool:
    return path.is_dir() and (path / "config.yaml").is_file()


def _is_checkpoint(path: Path) -> bool:
    if path.is_dir():
        return (path / "model.json").is_file()
    return path.suffix in (".safetensors", ".json") and path.with_suffix(".json").is_file()


register_kind("onnx", "an .onnx graph", lambda p: p.is_file() and p.suffix == ONNX_SUFFIX, describe_onnx)
register_kind(
    "plan",
    f"a TensorRT plan ({', '.join(PLAN_SUFFIXES)}) with its manifest",
    lambda p: p.suffix in PLAN_SUFFIXES,
    describe_plan,
)
register_kind("run", "a run folder with config.yaml", _is_run, describe_run)
register_kind("checkpoint", "a merged or checkpoint folder, or a checkpoint file", _is_checkpoint, describe_checkpoint)
