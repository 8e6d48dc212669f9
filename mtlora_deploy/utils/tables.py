"""The table pieces every report shares, defined once: a GitHub-flavoured Markdown table (profile, compare and
served-load reports) and the parameter-count cell of the console tables (``mtlora info``, ``mtlora merge``).

What each report shows stays with its package (``profile.report``, ``compare.report``, ``serve.load``); only the
rendering they have in common is here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

PARAMETER_GROUPS = (("LoRA", "lora"), ("other backbone", "backbone"), ("decoders", "decoders"))
"""The parameter groups as tables label them, with the key prefix of their counts (``lora_trainable``, ...)."""


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def count_cell(n: int) -> str:
    """A parameter count: ``1,234,567 (1.23 M)``."""
    return f"{n:,} ({n / 1e6:.2f} M)"
