"""Reading an ONNX file without running it: its ``metadata_props`` (decoded once, here) and its precision.

The exporter stores every value as JSON under an ``mtlora.`` key (``deploy.metadata`` writes them); graphs made
elsewhere keep their own keys, which are decoded the same way (JSON where possible, text otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.utils.artifacts import PRECISIONS

PREFIX = "mtlora."
FORMAT = "mtlora-deploy-onnx"


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def decode_metadata(props: Mapping[str, str] | Iterable[Any]) -> dict[str, Any]:
    """``metadata_props`` (a ``{key: value}`` map, or ONNX ``StringStringEntryProto``s) as the exporter meant them:
    the ``mtlora.`` prefix dropped and JSON values decoded. Keys without the prefix are kept as they are."""
    items = props.items() if isinstance(props, Mapping) else ((p.key, p.value) for p in props)
    return {key.removeprefix(PREFIX): _value(value) for key, value in items}


def metadata_from_proto(model) -> dict[str, Any]:
    """Only the ``mtlora.*`` metadata of a loaded ``onnx.ModelProto``, decoded."""
    return {p.key[len(PREFIX) :]: json.loads(p.value) for p in model.metadata_props if p.key.startswith(PREFIX)}


def load_graph(path: str | Path):
    """The ONNX model at ``path`` without its external weights (metadata and node types are all we read)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: ONNX file does not exist")
    return onnx.load(str(path), load_external_data=False)


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of a file exported by ``mtlora export`` (tasks, classes, input size, config, ...).

    Raises:
        ConfigError: the file is missing or was not exported by this toolkit.
    """
    metadata = metadata_from_proto(load_graph(path))
    if metadata.get("format") != FORMAT:
        raise ConfigError(f"{path}: no mtlora metadata (not exported by 'mtlora export'); re-export it")
    return metadata


def onnx_metadata(path: str | Path) -> dict[str, Any]:
    """Every ``metadata_props`` entry of ``path`` decoded (this toolkit's keys without their prefix)."""
    return decode_metadata(load_graph(path).metadata_props)


def detect_onnx_precision(path: str | Path) -> str:
    """One of ``PRECISIONS``, from the graph's metadata or content: QuantizeLinear nodes (activations quantized) make
    it int8 or fp8 by their quantized type, DequantizeLinear nodes alone (weights only) int4-wo when a weight is int4
    and int8-wo otherwise; else the 16-bit float initializers or casts."""
    import onnx

    model = load_graph(path)
    declared = metadata_from_proto(model).get("precision")
    if declared in PRECISIONS:
        return declared
    types = {t.data_type for t in model.graph.initializer}
    if any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        return "fp8" if onnx.TensorProto.FLOAT8E4M3FN in types else "int8"
    if any(n.op_type == "DequantizeLinear" for n in model.graph.node):
        return "int4-wo" if onnx.TensorProto.INT4 in types else "int8-wo"
    types |= {a.i for n in model.graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"}
    if onnx.TensorProto.FLOAT16 in types:
        return "fp16"
    return "bf16" if onnx.TensorProto.BFLOAT16 in types else "fp32"


def engine_fields(path: str | Path) -> dict[str, Any]:
    """What an engine manifest takes from its ONNX graph: tasks, image size and the graph's metadata."""
    meta = onnx_metadata(path)
    tasks = meta.get("tasks")
    tasks = [t for t in tasks.split(",") if t] if isinstance(tasks, str) else tasks
    size = meta.get("image_size") or meta.get("input_size")
    size = size[-1] if isinstance(size, (list, tuple)) else size
    return {"tasks": tasks, "image_size": int(size) if size else None, "onnx_metadata": meta}
