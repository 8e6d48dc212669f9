"""Profile reports: one JSON with everything (for machines), Markdown with tables and ratio lines, a rich table."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mtlora_deploy.utils.atomic import write_bytes_atomic, write_json_atomic

REPORT_FORMAT = "mtlora-deploy-profile"
LATENCY_KEYS = ("min", "median", "mean", "p90", "p95", "p99", "max")


def build_report(
    environment: dict[str, Any],
    run: dict[str, Any],
    measurements: list[dict[str, Any]],
    comparisons: dict[str, list[dict[str, Any]]],
    notes: list[str],
    metrics: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The report dict that ``profile.json`` holds."""
    return {
        "format": REPORT_FORMAT,
        "environment": environment,
        "run": run,
        "measurements": measurements,
        "comparisons": comparisons,
        "ratios": ratio_lines(comparisons),
        "notes": list(notes),
        "metrics": metrics or [],
        "plots": {},
    }


def _where(row: dict[str, Any]) -> str:
    return f"{row['backend']} {row['precision']}, batch {row['batch']}, {Path(str(row['source'])).name}"


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def ratio_lines(comparisons: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One sentence per ratio, the way the Markdown report and the console print them."""
    lines = [
        f"shared encoder, {len(r['tasks'])} tasks in one pass vs one single-task model per task ({_where(r)}): "
        f"speedup {_fmt(r['ratio'])}x ({_fmt(r['single_pass_ms'])} ms vs {_fmt(r['per_task_models_ms'])} ms)"
        for r in comparisons.get("shared_vs_per_task", [])
    ]
    lines += [
        f"merged vs unmerged ({_where(r)}): speedup {_fmt(r['speedup'])}x "
        f"({_fmt(r['merged_ms'])} ms vs {_fmt(r['unmerged_ms'])} ms)"
        for r in comparisons.get("merged_vs_unmerged", [])
    ]
    lines += [
        f"{r['compared'].replace('_', ' ')} / bare backbone ({_where(r)}): {_fmt(r['ratio'])}x "
        f"(target <= {r['target']}x for the merged model: {'met' if r['meets_target'] else 'not met'})"
        for r in comparisons.get("vs_bare_backbone", [])
    ]
    lines += [
        f"{r['precision']} vs {r['baseline_precision']} ({r['backend']}, {r['role'].replace('_', ' ')}, batch "
        f"{r['batch']}, {Path(str(r['source'])).name}): speedup {_fmt(r['speedup'])}x"
        for r in comparisons.get("precision", [])
        if r["precision"] != r["baseline_precision"]
    ]
    lines += [
        f"head cost of {r['task']} ({_where(r)}): {_fmt(r['head_cost_ms'], '.3f')} ms "
        f"({_fmt(100 * r['fraction_of_full'] if r['fraction_of_full'] is not None else None, '.1f')}% of the "
        "full pass)"
        for r in comparisons.get("head_cost", [])
    ]
    lines += [
        f"throughput at batch {r['batch']} vs the smallest batch ({r['backend']} {r['precision']}, "
        f"{r['role'].replace('_', ' ')}, {Path(str(r['source'])).name}): {_fmt(r['throughput_vs_smallest_batch'])}x"
        for r in comparisons.get("batch_sweep", [])
        if r["throughput_vs_smallest_batch"] not in (None, 1.0)
    ]
    lines += [
        f"{r['comparison']} ({_where(r)}): {_fmt(r['ratio'])}x ({_fmt(r['task_passes_ms'])} ms vs "
        f"{_fmt(r['mtlora_single_pass_ms'])} ms)"
        for r in comparisons.get("mtl_lora_vs_mtlora", [])
    ]
    return lines


# -- Markdown ----------------------------------------------------------------------------------------------------
def markdown_table(header: list[str], rows: Iterable[list[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _measurement_row(m: dict[str, Any]) -> list[Any]:
    lat = m["latency_ms"]
    memory = m["peak_memory_bytes"]
    return [
        Path(str(m["source"])).name,
        m["role"],
        m["backend"],
        m["precision"],
        m["batch"],
        *(f"{lat[k]:.3f}" for k in LATENCY_KEYS),
        f"{m['throughput_images_per_s']:.1f}",
        "n/a" if memory is None else f"{memory / 2**20:.1f}",
    ]


MEASUREMENT_HEADER = [
    "source",
    "role",
    "backend",
    "precision",
    "batch",
    *(f"{k} ms" for k in LATENCY_KEYS),
    "images/s",
    "peak MiB",
]


def _comparison_section(name: str, rows: list[dict[str, Any]]) -> str:
    header = list(rows[0])
    body = [[_cell(row.get(k)) for k in header] for row in rows]
    return f"### {name.replace('_', ' ')}\n\n" + markdown_table(header, body)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return "" if value is None else str(value)


def render_markdown(report: dict[str, Any]) -> str:
    """The Markdown report: settings, every measurement, the ratio lines, each comparison's table, notes, plots."""
    settings = {**report["environment"], **report["run"]}
    parts = [
        "# mtlora profile",
        "## Settings",
        markdown_table(["setting", "value"], [[k, _cell(v)] for k, v in settings.items()]),
        "## Measurements",
        markdown_table(MEASUREMENT_HEADER, map(_measurement_row, report["measurements"])),
        "## Ratios",
        "\n".join(f"- {line}" for line in report["ratios"]) or "_no comparison was measured_",
    ]
    parts += [_comparison_section(name, rows) for name, rows in report["comparisons"].items() if rows]
    if report["notes"]:
        parts += ["## Notes", "\n".join(f"- {note}" for note in report["notes"])]
    if report["plots"]:
        parts += ["## Plots", "\n".join(f"![{name}]({Path(path).name})" for name, path in report["plots"].items())]
    return "\n\n".join(parts) + "\n"


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``profile.json`` and ``profile.md`` into ``out_dir`` atomically; returns their paths."""
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "profile.json", "markdown": out_dir / "profile.md"}
    write_json_atomic(paths["json"], report)
    write_bytes_atomic(paths["markdown"], render_markdown(report).encode())
    return paths


# -- console -----------------------------------------------------------------------------------------------------
def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    """A rich table of every measurement, then the settings line, the ratios and the notes."""
    console = console or Console()
    env, run = report["environment"], report["run"]
    table = Table(title=f"mtlora profile on {env.get('gpu') or env.get('cpu')} ({run['timer']})")
    for column in MEASUREMENT_HEADER:
        table.add_column(column, justify="left" if column in ("source", "role", "backend", "precision") else "right")
    for m in report["measurements"]:
        table.add_row(*map(str, _measurement_row(m)))
    console.print(table)
    console.print(
        f"torch {env['torch']}, onnxruntime {env.get('onnxruntime')}, tensorrt {env.get('tensorrt')}, "
        f"{env['torch_threads']} threads, iterations {run['iterations']}, warm-up {run['warmup']}, "
        f"copies {'included' if run['include_copies'] else 'excluded'}, memory: {run['memory_method']}"
    )
    for line in report["ratios"]:
        console.print(f"  {line}")
    for note in report["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")
