"""``mtlora inspect REPO``: a Triton model repository written by ``mtlora export-triton``, read without serving it.

One more kind of :mod:`mtlora_deploy.report.inspect` (registered on import): what the ensembles take and give, the
model step's platform, batching and instances from the parsed ``config.pbtxt`` files (Triton's own schema), the
source artefact and options from ``mtlora_repository.json``, and every file checked against the size and sha256
that manifest records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtlora_deploy.report.inspect import file_entry, register_kind
from mtlora_deploy.serve.repository import MANIFEST, read_repository_manifest
from mtlora_deploy.serve.schema import check_repository, model_config_pb2


def _tensors(values, batched: bool) -> list[dict[str, Any]]:
    data_type = model_config_pb2().DataType
    out = []
    for value in values:
        dtype = data_type.Name(value.data_type).removeprefix("TYPE_").lower()
        dims = ["?" if d == -1 else int(d) for d in value.dims]
        out.append(
            {
                "name": value.name,
                "dtype": "bytes" if dtype == "string" else dtype,
                "shape": (["batch"] if batched else []) + dims,
            }
        )
    return out


def describe_repository(path: Path) -> dict[str, Any]:
    """A Triton model repository: its ensembles' inputs and outputs, the model step, batching, source and files."""
    manifest = read_repository_manifest(path)
    configs = check_repository(path)
    models = manifest["models"]
    ensemble, step = configs[models["ensemble"]], configs[models["model"]]
    batched = ensemble.max_batch_size > 0
    inputs = [
        {**tensor, "model": models[role]}
        for role in ("ensemble", "ensemble_rgb")
        if models.get(role) in configs
        for tensor in _tensors(configs[models[role]].input, batched)
    ]
    delay = step.dynamic_batching.max_queue_delay_microseconds if step.HasField("dynamic_batching") else None
    instances = sum(group.count or 1 for group in step.instance_group) or 1
    recorded = manifest.get("files") or {}
    names = sorted(
        set(recorded) | {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()} - {MANIFEST}
    )
    files = [
        file_entry(path / name, recorded.get(name, {}).get("sha256"), recorded.get(name, {}).get("bytes"))
        for name in names
    ]
    runtime = f"Triton: {step.platform or step.backend} model step, {instances} instance(s)"
    if manifest.get("tensorrt"):
        runtime += f", a TensorRT {manifest['tensorrt']} plan (the Triton releases that load it: details, notes)"
    return {
        "tasks": list(manifest.get("tasks") or []),
        "inputs": inputs,
        "outputs": _tensors(ensemble.output, batched),
        "precision": manifest.get("precision"),
        "batch": f"1 to {ensemble.max_batch_size}, dynamic batching"
        + (f" (queue delay <= {delay} us)" if delay is not None else ""),
        "runtime": runtime,
        "details": {
            "models": models,
            "source": manifest.get("source"),
            "image_size": manifest.get("image_size"),
            "options": manifest.get("options"),
            "toolkit_version": manifest.get("toolkit_version"),
            "notes": manifest.get("notes") or [],
            "files_recorded": bool(recorded),
        },
        "files": files,
    }


def _is_repository(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file()


register_kind(
    "triton", f"a Triton model repository with {MANIFEST} (mtlora export-triton)", _is_repository, describe_repository
)
