"""ONNX ``metadata_props``: everything a later command needs to use the graph without asking again.

Each value is stored as JSON under an ``mtlora.`` key so ONNX Runtime, TensorRT tooling and Netron show them,
and ``read_onnx_metadata`` gives the decoded dict back.
"""

from __future__ import annotations

import json
from typing import Any

import onnx

from mtlora_deploy.model.config import ModelConfig
from mtlora_deploy.utils.onnx_info import FORMAT, PREFIX, metadata_from_proto, read_onnx_metadata

__all__ = ["FORMAT", "PREFIX", "attach_metadata", "build_metadata", "metadata_from_proto", "read_onnx_metadata"]


def build_metadata(
    config: ModelConfig, outputs: str, source: str, exporter: str, opset: int, output_dtypes: dict[str, str]
) -> dict[str, Any]:
    """The metadata of one exported graph (decoded form)."""
    from mtlora_deploy._version import __version__
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
