"""The MTLoRA multi-task model: Swin backbone, LoRA adapters, per-task decoders.

Importing the package imports the builder (``multitask``), which registers the ``multitask`` checkpoint kind.
"""

from mtlora_deploy.model.config import ALL_TASKS, DEFAULT_TASKS, ModelConfig
from mtlora_deploy.model.multitask import MultiTaskModel, build_model
from mtlora_deploy.model.presets import PRESETS, resolve_config

__all__ = ["ALL_TASKS", "DEFAULT_TASKS", "ModelConfig", "MultiTaskModel", "build_model", "PRESETS", "resolve_config"]
