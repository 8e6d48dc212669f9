"""Profile reports: one JSON with everything (for machines), Markdown with the full tables and ratio lines, and a
compact rich summary that fits 80 columns."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mtlora_deploy.profile.stats import BELOW_NOISE
from mtlora_deploy.utils.atomic import write_bytes_atomic, write_json_atomic

REPORT_FORMAT = "mtlora-deploy-profile"
REPORT_VERSION = 2
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
        "version": REPORT_VERSION,
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
    return f"{Path(str(row['source'])).name}, {row['backend']} {row['precision']} b{row['batch']}"


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def _interval(row: dict[str, Any], spec: str = ".2f") -> str:
    if row.get("ci_low") is None:
        return "(one round, no interval)"
    return f"[{format(row['ci_low'], spec)}, {format(row['ci_high'], spec)}]"


def _speedup(row: dict[str, Any], what: str) -> str:
    flop = f"; FLOP ratio {_fmt(row['flop_ratio'])}x" if row.get("flop_ratio") is not None else ""
    return f"{what} ({_where(row)}): {_fmt(row['value'])}x {_interval(row)} {row['verdict']}{flop}"


def _bare_line(row: dict[str, Any]) -> str:
    floor = row.get("flop_ratio")
    target = (
        ""
        if row.get("meets_target") is None
        else (f", target {row['target']}: {'met' if row['meets_target'] else 'not met'}")
    )
    return (
        f"{row['compared'].replace('_', ' ')} / bare backbone ({_where(row)}): {_fmt(row['value'])}x "
        f"{_interval(row)}; FLOP floor {_fmt(floor)}x{target}"
    )


def _head_line(row: dict[str, Any]) -> str:
    head = f"head cost of {row['task']} ({_where(row)}): "
    gmac = "" if row.get("head_gmac_per_image") is None else f", {row['head_gmac_per_image']:.3f} GMAC/image"
    if row["verdict"] == BELOW_NOISE:
        return head + f"below the noise (interval {_interval(row, '.3f')} ms){gmac}"
    if row["fraction_of_full"] is None:
        return head + f"{_fmt(row['value'], '.3f')} ms ({row['verdict']}){gmac}"
    return (
        head + f"{_fmt(row['value'], '.3f')} ms {_interval(row, '.3f')}, "
        f"{100 * row['fraction_of_full']:.1f}% of the full pass{gmac}"
    )


def ratio_lines(comparisons: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One sentence per ratio (value, 95% interval, verdict, FLOP ratio), as the Markdown report and console print."""
    lines = [
        _speedup(r, f"single pass vs {len(r['tasks'])} single-task models")
        for r in comparisons.get("shared_vs_per_task", [])
    ]
    lines += [_speedup(r, "merged vs unmerged") for r in comparisons.get("merged_vs_unmerged", [])]
    lines += [_bare_line(r) for r in comparisons.get("vs_bare_backbone", [])]
    lines += [
        _speedup(r, f"{r['precision']} vs {r['baseline_precision']} [{r['role'].replace('_', ' ')}]")
        for r in comparisons.get("precision", [])
    ]
    lines += [_head_line(r) for r in comparisons.get("head_cost", [])]
    lines += [
        _speedup(r, f"throughput at batch {r['batch']} vs batch {r['baseline_batch']} [{r['role'].replace('_', ' ')}]")
        for r in comparisons.get("batch_sweep", [])
    ]
    lines += [_speedup(r, r["comparison"]) for r in comparisons.get("mtl_lora_vs_mtlora", [])]
    return lines


# -- Markdown ----------------------------------------------------------------------------------------------------
def markdown_table(header: list[str], rows: Iterable[list[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _measurement_row(m: dict[str, Any], memory: bool) -> list[Any]:
    lat = m["latency_ms"]
    row = [
        Path(str(m["source"])).name,
        m["role"],
        m["backend"],
        m["precision"],
        m["batch"],
        m["n"],
        m["rounds"],
        *(_ms(lat[k]) for k in ("min", "median")),
        "n/a" if m["ci_low_ms"] is None else f"{m['ci_low_ms']:.3f}-{m['ci_high_ms']:.3f}",
        *(_ms(lat[k]) for k in ("mean", "p90", "p95", "p99", "max")),
        f"{m['median_ms_per_image']:.3f}",
        f"{m['throughput_images_per_s']:.1f}",
        _fmt(m["gmac_per_image"], ".3f"),
        _fmt(m["gflops_per_s"], ".1f"),
    ]
    if memory:
        row.append("n/a" if m["peak_memory_bytes"] is None else f"{m['peak_memory_bytes'] / 2**20:.1f}")
    return row


MEASUREMENT_HEADER = [
    "source",
    "role",
    "backend",
    "precision",
    "batch",
    "n",
    "rounds",
    "min ms",
    "median ms",
    "95% CI ms",
    "mean ms",
    "p90 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
    "ms/image",
    "images/s",
    "GMAC/image",
    "GFLOP/s",
]


def _has_memory(report: dict[str, Any]) -> bool:
    return any(m["peak_memory_bytes"] is not None for m in report["measurements"])


def _comparison_section(name: str, rows: list[dict[str, Any]]) -> str:
    header = list(dict.fromkeys(k for row in rows for k in row))
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
    memory = _has_memory(report)
    header = MEASUREMENT_HEADER + (["peak MiB"] if memory else [])
    parts = [
        "# mtlora profile",
        "## Settings",
        markdown_table(["setting", "value"], [[k, _cell(v)] for k, v in settings.items()]),
        "## Measurements",
        f"Percentiles need enough samples ({', '.join(f'{k} {v}' for k, v in report['run']['percentiles'].items())})"
        "; n/a below that. 95% CI: bootstrap interval of the median over the interleaved rounds. GMAC per image "
        "from FlopCounterMode (torch) or the graph's MatMul/Gemm/Conv shapes (ONNX); GFLOP/s = 2 x GMAC x images/s.",
        markdown_table(header, (_measurement_row(m, memory) for m in report["measurements"])),
        "## Ratios",
        "Each ratio: value, 95% paired-bootstrap interval over the interleaved rounds, verdict, and the ratio the "
        "FLOP counts predict.",
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
SHORT_ROLES = {"single_pass": "single pass", "bare_backbone": "bare backbone", "mtlora_single_pass": "mtlora pass"}


def _short_role(m: dict[str, Any]) -> str:
    role = m["role"]
    if role == "per_task":
        return f"{len(m['tasks'])} x 1-task"
    if role.startswith("without:"):
        return "w/o " + role.split(":", 1)[1]
    return SHORT_ROLES.get(role, role)


def summary_table(report: dict[str, Any]) -> Table:
    """The compact summary: one row per measurement, grouped by source and backend, narrow enough for 80 columns."""
    env, run = report["environment"], report["run"]
    table = Table(
        title=f"mtlora profile on {env.get('gpu') or env.get('cpu')} ({run['timer']})",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1),
    )
    for column, justify in (
        ("configuration", "left"),
        ("median ms", "right"),
        ("95% CI", "right"),
        ("img/s", "right"),
        ("GMAC", "right"),
        ("GFLOP/s", "right"),
    ):
        table.add_column(column, justify=justify, overflow="fold")
    group = None
    for m in report["measurements"]:
        here = f"{Path(str(m['source'])).name} ({m['backend']})"
        if here != group:
            group = here
            table.add_row(f"[bold]{escape(here)}[/bold]", "", "", "", "", "")
        ci = "n/a" if m["ci_low_ms"] is None else f"{m['ci_low_ms']:.3g}-{m['ci_high_ms']:.3g}"
        table.add_row(
            f" {_short_role(m)} {m['precision']} b{m['batch']}",
            f"{m['median_ms']:.3g}",
            ci,
            f"{m['throughput_images_per_s']:.4g}",
            _fmt(m["gmac_per_image"], ".3g"),
            _fmt(m["gflops_per_s"], ".3g"),
        )
    return table


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    """The compact summary table, the settings line, the ratios and the notes (the full table is in profile.md)."""
    console = console or Console()
    env, run = report["environment"], report["run"]
    console.print(summary_table(report))
    console.print(
        f"torch {env['torch']}, onnxruntime {env.get('onnxruntime')}, tensorrt {env.get('tensorrt')}, "
        f"{env['torch_threads']} threads; per (candidate, batch): {run['warmup']} warm-up calls, then >= "
        f"{run['duration_s']} s and >= {run['min_iterations']} calls in {run['rounds']} interleaved rounds; "
        f"copies {'included' if run['include_copies'] else 'excluded'}; memory: {run['memory_method']}",
        overflow="fold",
    )
    for line in report["ratios"]:
        console.print(f"  {escape(line)}", overflow="fold")
    for note in report["notes"]:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", overflow="fold")
