"""The baseline matrix (``mtlora compare``): train presets on one budget, tabulate them like the MTLoRA paper.

Attributes import lazily so ``import mtlora_deploy.compare`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run_comparison": "mtlora_deploy.compare.api",
    "compare": "mtlora_deploy.compare.api",
    "CompareSettings": "mtlora_deploy.compare.settings",
    "DEFAULT_PRESETS": "mtlora_deploy.compare.settings",
    "render_markdown": "mtlora_deploy.compare.report",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mtlora_deploy.compare' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = list(_EXPORTS)
