"""The MTLoRA multi-task model: Swin backbone, LoRA adapters, per-task decoders.

Attributes import lazily (PEP 562), so that ``mtlora_deploy.model.config`` and ``presets`` (the CLI's preset and
task names) load without torch. The builder (``multitask``) registers the ``multitask`` checkpoint kind when it is
imported: every module that loads checkpoints imports it (``mtlora_deploy.load`` through ``deploy.merge``).
"""

from __future__ import annotations

from mtlora_deploy.utils.imports import lazy_exports

_EXPORTS = {
    "ALL_TASKS": "mtlora_deploy.model.config",
    "DEFAULT_TASKS": "mtlora_deploy.model.config",
    "ModelConfig": "mtlora_deploy.model.config",
    "MultiTaskModel": "mtlora_deploy.model.multitask",
    "build_model": "mtlora_deploy.model.multitask",
    "PRESETS": "mtlora_deploy.model.presets",
    "resolve_config": "mtlora_deploy.model.presets",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
