"""Triton's ModelConfig schema, from the ``model_config_pb2.py`` that ``tritonclient`` ships.

The module is loaded as a file: importing ``tritonclient.grpc`` would pull in grpc and its protobuf < 7 pin, while
this generated module needs only ``google.protobuf``. Configs are built as ModelConfig messages and written with
``text_format``, and every written ``config.pbtxt`` is parsed back with the same schema, which refuses an unknown
or misspelt field the way Triton's own parser does.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType

from mtlora_deploy.errors import ConfigError, MissingDependencyError

INSTALL = "pip install 'mtlora-deploy[serve]' (tritonclient, for Triton's model configuration schema)"


@functools.cache
def model_config_pb2() -> ModuleType:
    """Triton's ``model_config_pb2`` module (``inference.ModelConfig``), or a one-line error saying what to install."""
    spec = importlib.util.find_spec("tritonclient")
    path = Path(spec.submodule_search_locations[0]) / "grpc" / "model_config_pb2.py" if spec else None
    if path is None or not path.is_file():
        raise MissingDependencyError(
            f"Triton's model configuration schema is not installed; install it with: {INSTALL}"
        )
    loader_spec = importlib.util.spec_from_file_location("mtlora_deploy_triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(loader_spec)
    loader_spec.loader.exec_module(module)
    return module


def new_config(**fields):
    """An ``inference.ModelConfig`` message with ``fields`` set."""
    return model_config_pb2().ModelConfig(**fields)


def config_text(config) -> str:
    """A ModelConfig message as ``config.pbtxt`` text (checked by parsing it back)."""
    from google.protobuf import text_format

    text = text_format.MessageToString(config)
    parse_config(text, f"config of {config.name}")
    return text


def parse_config(text: str, where: str | Path = "config.pbtxt"):
    """Parse ``config.pbtxt`` text with Triton's schema; an unknown field or bad value is a one-line ConfigError."""
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, model_config_pb2().ModelConfig())
    except text_format.ParseError as exc:
        raise ConfigError(f"{where}: not a valid Triton model configuration: {exc}") from exc


def check_repository(repository: str | Path) -> dict[str, object]:
    """Parse every ``*/config.pbtxt`` of a model repository; returns ``{model name: ModelConfig}``.

    Raises:
        ConfigError: a config does not parse, or its ``name`` differs from its folder (Triton refuses both).
    """
    configs = {}
    for path in sorted(Path(repository).glob("*/config.pbtxt")):
        config = parse_config(path.read_text(), path)
        if config.name and config.name != path.parent.name:
            raise ConfigError(f"{path}: name {config.name!r} differs from its folder {path.parent.name!r}")
        configs[path.parent.name] = config
    if not configs:
        raise ConfigError(f"{repository}: no */config.pbtxt; not a Triton model repository")
    return configs
