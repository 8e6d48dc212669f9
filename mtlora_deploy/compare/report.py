"""Writing a comparison: compare.json (everything), compare.md (the table, its settings and notes), a rich table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mtlora_deploy.compare.table import table_cells, table_header
from mtlora_deploy.utils.atomic import write_bytes_atomic, write_json_atomic
from mtlora_deploy.utils.tables import markdown_table

FORMAT = "mtlora-deploy-compare"
DEFINITIONS = (
    (
        "Δm: mean over tasks of the signed relative change against the single-task rows of this comparison, in % "
        "(positive: better than single-task; lower-is-better metrics such as the normals mean angle count reversed)."
    ),
    (
        "trainable: parameters updated in training. deployed: parameters of the shipped model after merging "
        "(task-agnostic LoRA folded; mtl-lora: one merged encoder per task; single-task: the T models together)."
    ),
    (
        "latency: median of the deployed model in PyTorch eager via mtlora profile (single-task: the T models one "
        "after another; mtl-lora: its T per-task merged encoders one after another)."
    ),
)


def _settings_lines(result: dict[str, Any]) -> list[str]:
    s, env = result["settings"], result["environment"]
    steps = s["steps"] if s["steps"] is not None else "the 300-epoch recipe"
    budget = (
        f"{steps} steps, batch {s['batch_size']}, nominal LR {s['lr']:g} (for batch 512, scaled linearly), "
        f"seed {s['seed']}, data {s['data']}"
    )
    latency = (
        f"{result['latency_label']}, {s['latency_iterations']} timed iterations after {s['latency_warmup']} "
        f"warm-up; torch threads {s['threads'] or 'default'} (training and timing)"
    )
    return [
        f"- presets: {', '.join(s['presets'])}; tasks: {', '.join(s['tasks'])}",
        f"- budget per row: {budget}",
        f"- model overrides: {s['model_overrides'] or 'none'}; train overrides: {s['train_overrides'] or 'none'}",
        f"- latency: {latency}",
        f"- environment: torch {env['torch']}, {env['cpu']}, {env['torch_threads']} threads, device {env['device']}",
    ]


def render_markdown(result: dict[str, Any]) -> str:
    """The Markdown report: command, settings, the table, the single-task runs, definitions, notes, plot."""
    tasks = result["tasks"]
    parts = ["# mtlora compare"]
    if result.get("command"):
        parts.append(f"```\n{result['command']}\n```")
    parts += [
        "## Settings",
        "\n".join(_settings_lines(result)),
        "## Results",
        markdown_table(table_header(tasks, result["latency_label"]), [table_cells(r, tasks) for r in result["rows"]]),
    ]
    singles = [r for r in result["records"] if r["task"] is not None]
    if singles:
        parts += [
            "### Single-task runs",
            markdown_table(
                ["run", "task", "metric", "trainable (M)", "deployed (M)", "latency (ms)"],
                [
                    [
                        r["name"],
                        r["task"],
                        f"{r['primary'][r['task']]:.2f}",
                        f"{r['trainable_params'] / 1e6:.3f}",
                        f"{r['deployed_params'] / 1e6:.3f}",
                        f"{r['latency_ms']['median']:.2f}",
                    ]
                    for r in singles
                ],
            ),
        ]
    parts += ["## Definitions", "\n".join(f"- {line}" for line in DEFINITIONS)]
    if result["notes"]:
        parts += ["## Notes", "\n".join(f"- {note}" for note in result["notes"])]
    if result.get("plots"):
        parts += ["## Pareto plot", "\n".join(f"![{k}]({Path(v).name})" for k, v in result["plots"].items())]
    return "\n\n".join(parts) + "\n"


def write_result(result: dict[str, Any], output_dir: Path) -> dict[str, Path]:
    """``compare.json`` and ``compare.md`` in ``output_dir``, each written atomically."""
    paths = {"json": output_dir / "compare.json", "markdown": output_dir / "compare.md"}
    write_json_atomic(paths["json"], result)
    write_bytes_atomic(paths["markdown"], render_markdown(result).encode())
    return paths


def print_result(result: dict[str, Any], console: Console) -> None:
    """The table in the terminal, then the notes."""
    tasks = result["tasks"]
    table = Table(title=f"mtlora compare ({result['latency_label']})", caption="Δm: vs the single-task rows above")
    for index, column in enumerate(table_header(tasks, result["latency_label"])):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in result["rows"]:
        table.add_row(*table_cells(row, tasks), style="bold" if row["kind"] == "single-task" else None)
    console.print(table)
    for note in result["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")
