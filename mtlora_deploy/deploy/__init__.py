"""Deployment: exact LoRA merge, ONNX export with checks, ONNX metadata.

Attributes import lazily so that loading a merged checkpoint does not pull in the ONNX stack.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "merge_task_agnostic": "mtlora_deploy.deploy.merge",
    "merge_checkpoint": "mtlora_deploy.deploy.merge",
    "MergeReport": "mtlora_deploy.deploy.merge",
    "is_merged": "mtlora_deploy.deploy.merge",
    "TaskBranchLinear": "mtlora_deploy.model.deployed",
    "export_onnx": "mtlora_deploy.deploy.export",
    "ExportReport": "mtlora_deploy.deploy.export",
    "read_onnx_metadata": "mtlora_deploy.deploy.metadata",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mtlora_deploy.deploy' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = list(_EXPORTS)
