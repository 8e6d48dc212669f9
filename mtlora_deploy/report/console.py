"""Rich tables for the CLI."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from mtlora_deploy.utils.tables import PARAMETER_GROUPS, count_cell


def print_model_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    """Parameter groups (trainable / frozen) and task outputs of ``describe_model``."""
    console = console or Console()
    table = Table(title=f"{summary['backbone']} | adapter={summary['adapter']} | trainable={summary['trainable_mode']}")
    table.add_column("group")
    table.add_column("trainable", justify="right")
    table.add_column("frozen", justify="right")
    for group, key in PARAMETER_GROUPS:
        table.add_row(group, count_cell(summary[f"{key}_trainable"]), count_cell(summary[f"{key}_frozen"]))
    frozen = summary["total_params"] - summary["trainable_params"]
    table.add_row("total", count_cell(summary["trainable_params"]), count_cell(frozen), style="bold")
    table.add_row("after merging (deployed)", "", count_cell(summary["deployed_params"]))
    console.print(table)
    outputs = Table(title="task outputs (logits)")
    outputs.add_column("task")
    outputs.add_column("shape (per image)")
    for task, spec in summary["tasks"].items():
        outputs.add_row(task, " x ".join(map(str, spec["shape"])))
    console.print(outputs)
