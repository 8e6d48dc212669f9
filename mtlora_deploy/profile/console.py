"""The console summary of a profile: the measurement, ratio and head-cost tables, each narrow enough for 80 columns
with no cell wrapped or cut, the settings as short lines, and the notes (the full tables are in profile.md)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mtlora_deploy.profile.report import (
    COMPARISON_COLUMNS,
    HEAD_COST_COLUMNS,
    MEASUREMENT_COLUMNS,
    comparison_rows,
    head_cost_rows,
    measurement_rows,
)

CONSOLE_HEADERS = {"median ms": "median\nms", "FLOP ratio": "FLOP\nratio", "timed s": "timed\ns", "of full": "of\nfull"}
"""Two-line headers where the console's 80 columns need them (Markdown keeps one line)."""
LEFT_ALIGNED = {"configuration", "comparison", "config", "task", "verdict"}


def grouped_table(title: str, columns: Iterable[str], groups: list[tuple[str, list[list[str]]]]) -> Table:
    """A table with a bold row naming each group above its rows (indented by one space). Cells never wrap, bar the
    first column's, which folds a group name too long for 80 columns rather than cut it."""
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0), title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(
            CONSOLE_HEADERS.get(column, column),
            justify="left" if column in LEFT_ALIGNED else "right",
            no_wrap=index > 0,
            overflow="fold",
        )
    for group, rows in groups:
        table.add_row(f"[bold]{escape(group)}[/bold]", *[""] * (len(table.columns) - 1))
        for cells in rows:
            table.add_row(escape(" " + cells[0]), *map(escape, cells[1:]))
    return table


def summary_table(report: dict[str, Any]) -> Table:
    """One row per measurement, grouped by source and backend, narrow enough for 80 columns."""
    env, run = report["environment"], report["run"]
    title = f"mtlora profile on {env.get('gpu') or env.get('cpu')} ({run['timer']})"
    return grouped_table(title, MEASUREMENT_COLUMNS, measurement_rows(report["measurements"]))


def settings_lines(report: dict[str, Any]) -> list[str]:
    """The settings behind the numbers, as short lines (the full list is in profile.md)."""
    from mtlora_deploy.profile.memory import SHORT_METHODS

    env, run = report["environment"], report["run"]
    runtimes = [f"{name} {env[key]}" for key, name in RUNTIMES if env.get(key)]
    memory = SHORT_METHODS.get(run["memory_method"], run["memory_method"])
    budget = "" if run.get("budget_s") is None else f" (budget {run['budget_s']:g} s)"
    return [
        ", ".join(runtimes) + f"; torch threads: {env['torch_threads']}",
        f"each row: {run['warmup']} warm-up calls; >= {run['duration_s']:g} s and >= {run['min_iterations']} "
        "timed calls",
        f"{run['rounds']} interleaved rounds; median over rounds; 95% interval: sign test",
        f"copies {'included' if run['include_copies'] else 'excluded'}; memory: {memory}",
        f"measured in {run.get('measure_s', 0.0):.1f} s{budget}; details: profile.md",
    ]


RUNTIMES = (
    ("torch", "torch"),
    ("onnxruntime", "onnxruntime"),
    ("tensorrt", "TensorRT"),
    ("tensorrt_rtx", "TensorRT-RTX"),
)


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    """The measurement, ratio and head-cost tables, the settings lines and the notes (the full tables are in
    profile.md)."""
    console = console or Console()
    comparisons = report["comparisons"]
    console.print(summary_table(report))
    for line in settings_lines(report):
        console.print(escape(line), overflow="fold")
    ratios = comparison_rows(comparisons)
    if ratios:
        console.print()
        console.print(grouped_table("ratios (> 1: faster than the baseline)", COMPARISON_COLUMNS, ratios))
    costs = head_cost_rows(comparisons)
    if costs:
        console.print()
        console.print(grouped_table("head cost (full pass minus the pass without it)", HEAD_COST_COLUMNS, costs))
    for note in report["notes"]:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", overflow="fold")
