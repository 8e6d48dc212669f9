"""ONNX ``metadata_props``: everything a later command needs to use the graph without asking again.

Each value is stored as JSON under an ``mtlora.`` key so ONNX Runtime, TensorRT tooling and Netron show them,
and ``read_onnx_metadata`` gives the decoded dict back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.model.config import ModelConfig

PREFIX = "mtlora."
FORMAT = "mtlora-deploy-onnx"


def build_metadata(
    config: ModelConfig, outputs: str, source: str, exporter: str, opset: int, output_dtypes: dict[str, str]
) -> dict[str, Any]:
    """The metadata of one exported graph (decoded form)."""
    from mtlora_deploy import __version__
    from mtlora_deploy.utils.normalization import IMAGENET_MEAN, IMAGENET_STD

    return {
        "format": FORMAT,
        "tasks": list(config.tasks),
        "classes": {t: config.output_channels(t) for t in config.tasks},
        "input_name": "image",
        "input_size": [3, config.image_size, config.image_size],
        "image_size": config.image_size,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "outputs": outputs,
        "precision": "fp32",
        "output_dtypes": output_dtypes,
        "model_config": config.to_dict(),
        "toolkit_version": __version__,
        "source": source,
        "exporter": exporter,
        "opset": opset,
    }


def attach_metadata(model: onnx.ModelProto, metadata: dict[str, Any]) -> None:
    """Replace the graph's ``mtlora.*`` metadata_props with ``metadata`` (JSON-encoded values)."""
    kept = [p for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in metadata.items():
        model.metadata_props.add(key=PREFIX + key, value=json.dumps(value))


def metadata_from_proto(model: onnx.ModelProto) -> dict[str, Any]:
    """Decode the ``mtlora.*`` metadata_props of a loaded model."""
    return {p.key[len(PREFIX) :]: json.loads(p.value) for p in model.metadata_props if p.key.startswith(PREFIX)}


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of an exported ``.onnx`` file (tasks, classes, input size, mean/std, config, ...).

    Raises:
        ConfigError: the file is missing or was not exported by this toolkit.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: ONNX file does not exist")
    metadata = metadata_from_proto(onnx.load(str(path), load_external_data=False))
    if metadata.get("format") != FORMAT:
        raise ConfigError(f"{path}: no mtlora metadata (not exported by 'mtlora export'); re-export it")
    return metadata
