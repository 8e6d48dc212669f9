"""Deployment: exact LoRA merge, ONNX export with checks, ONNX metadata.

Attributes import lazily so that loading a merged checkpoint does not pull in the ONNX stack.
"""

from __future__ import annotations

from mtlora_deploy.utils.imports import lazy_exports

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

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
