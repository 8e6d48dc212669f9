"""Comparisons: the baseline matrix (``mtlora compare``: train presets on one budget, tabulate them like the MTLoRA
paper) and a run's checkpoint against the same architecture untrained (``untrained``).

Attributes import lazily so ``import mtlora_deploy.compare`` stays cheap.
"""

from __future__ import annotations

from mtlora_deploy.utils.imports import lazy_exports

_EXPORTS = {
    "run_comparison": "mtlora_deploy.compare.api",
    "compare": "mtlora_deploy.compare.api",
    "CompareSettings": "mtlora_deploy.compare.settings",
    "DEFAULT_PRESETS": "mtlora_deploy.compare.settings",
    "render_markdown": "mtlora_deploy.compare.report",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
