"""Profile reports: one JSON with everything (for machines) and Markdown with the full tables (the console summary:
``console``). Every table cell is formatted here once, so the console, the Markdown and the report's ``ratios``
lines show the same numbers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mtlora_deploy.profile.stats import STATISTIC
from mtlora_deploy.utils.atomic import write_bytes_atomic, write_json_atomic
from mtlora_deploy.utils.tables import markdown_table

REPORT_FORMAT = "mtlora-deploy-profile"
REPORT_VERSION = 3
LATENCY_KEYS = ("min", "median", "mean", "p90", "p95", "p99", "max")
NA = "n/a"


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


# -- cells -------------------------------------------------------------------------------------------------------
def sig(value: float | None) -> str:
    """Three significant digits without an exponent (12345 -> 12345, 67.61 -> 67.6, 0.01234 -> 0.0123)."""
    if value is None:
        return NA
    size = abs(value)
    decimals = 0 if size >= 100 else 1 if size >= 10 else 2 if size >= 1 or size == 0 else 3 if size >= 0.1 else 4
    return f"{value:.{decimals}f}"


def times(value: float | None) -> str:
    """A ratio: ``1.23x``."""
    return NA if value is None else f"{value:.2f}x"


def interval(low: float | None, high: float | None, fmt: Callable[[float | None], str] = sig) -> str:
    """``[low, high]`` with the value's own format; n/a without an interval (too few rounds)."""
    return NA if low is None or high is None else f"[{fmt(low).rstrip('x')}, {fmt(high).rstrip('x')}]"


def source_name(row: dict[str, Any]) -> str:
    return Path(str(row["source"])).name


def group_label(row: dict[str, Any]) -> str:
    """Where a row belongs: ``train: torch`` for a model on a torch backend, the file name for an ONNX file or a
    plan (its backend follows from it), ``onnxruntime files`` for a comparison between files."""
    if "subject_source" in row and str(row["family"]).endswith((" files", " plans")):
        return row["family"]
    return f"{source_name(row)}: {row['backend']}" if row["backend"].startswith("torch") else source_name(row)


SHORT_ROLES = {
    "single_pass": "single pass",
    "bare_backbone": "bare backbone",
    "mtlora_single_pass": "mtlora pass",
}


def short_role(role: str, tasks: Iterable[str] = ()) -> str:
    if role == "per_task":
        return f"{len(list(tasks))} x 1-task"
    if role.startswith("without:"):
        return "w/o " + role.split(":", 1)[1]
    return SHORT_ROLES.get(role, role)


def _label_per_task(row):
    return f"single pass vs {len(row['tasks'])} x 1-task"


def _label_precision(row):
    role = "" if row["role"] == "file" else f", {short_role(row['role'])}"
    return f"{row['precision']} vs {row['baseline_precision']}{role}"


def _label_batch(row):
    role = "" if row["role"] == "file" else f", {short_role(row['role'])}"
    return f"img/s vs b{row['baseline_batch']}{role}"


COMPARISON_LABELS: dict[str, Callable[[dict[str, Any]], str]] = {
    "shared_vs_per_task": _label_per_task,
    "merged_vs_unmerged": lambda row: "merged vs unmerged",
    "vs_bare_backbone": lambda row: f"{short_role(row['compared'])} / bare backbone",
    "mtl_lora_vs_mtlora": lambda row: "mtlora pass vs task passes",
    "precision": _label_precision,
    "batch_sweep": _label_batch,
}
"""The comparisons of the ratio table, in order, and each row's name in it (head costs have their own table)."""

COMPARISON_COLUMNS = ("comparison", "config", "ratio", "95% interval", "verdict", "FLOP ratio")
HEAD_COST_COLUMNS = ("task", "config", "cost ms", "95% interval", "verdict", "of full", "GMAC")
MEASUREMENT_COLUMNS = ("configuration", "median ms", "95% interval", "img/s", "GFLOP/s", "rounds", "timed s")


def _config(row: dict[str, Any], precision: bool = True) -> str:
    return f"{row['precision']} b{row['batch']}" if precision else f"b{row['batch']}"


def comparison_cells(name: str, row: dict[str, Any]) -> list[str]:
    """One ratio as the ratio table shows it (``COMPARISON_COLUMNS``)."""
    return [
        COMPARISON_LABELS[name](row),
        _config(row, name != "precision"),
        times(row["value"]),
        interval(row["ci_low"], row["ci_high"], times),
        row["verdict"],
        times(row.get("flop_ratio")),
    ]


def head_cost_cells(row: dict[str, Any]) -> list[str]:
    """One head cost as its table shows it (``HEAD_COST_COLUMNS``)."""
    share = row.get("fraction_of_full")
    return [
        row["task"],
        _config(row),
        sig(row["value"]),
        interval(row["ci_low"], row["ci_high"]),
        row["verdict"],
        NA if share is None else f"{100 * share:.1f}%",
        sig(row.get("head_gmac_per_image")),
    ]


def measurement_cells(m: dict[str, Any]) -> list[str]:
    """One measurement as the summary shows it (``MEASUREMENT_COLUMNS``)."""
    config = f"{short_role(m['role'], m['tasks'])} {m['precision']} b{m['batch']}".removeprefix("file ")
    return [
        config,
        sig(m["median_ms"]),
        interval(m["ci_low_ms"], m["ci_high_ms"]),
        sig(m["throughput_images_per_s"]),
        sig(m["gflops_per_s"]),
        str(m["rounds"]),
        sig(m.get("timed_s")),
    ]


def grouped(rows: Iterable[tuple[str, list[str]]]) -> list[tuple[str, list[list[str]]]]:
    """(group, cells) pairs gathered by group, in order of first appearance."""
    groups: dict[str, list[list[str]]] = {}
    for group, cells in rows:
        groups.setdefault(group, []).append(cells)
    return list(groups.items())


def comparison_rows(comparisons: dict[str, list[dict[str, Any]]]) -> list[tuple[str, list[list[str]]]]:
    return grouped(
        (group_label(row), comparison_cells(name, row))
        for name in COMPARISON_LABELS
        for row in comparisons.get(name, [])
    )


def head_cost_rows(comparisons: dict[str, list[dict[str, Any]]]) -> list[tuple[str, list[list[str]]]]:
    return grouped((group_label(row), head_cost_cells(row)) for row in comparisons.get("head_cost", []))


def measurement_rows(measurements: list[dict[str, Any]]) -> list[tuple[str, list[list[str]]]]:
    return grouped((group_label(m), measurement_cells(m)) for m in measurements)


def ratio_lines(comparisons: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One line per row of the ratio and head-cost tables, with the same cells (for drivers and the JSON)."""
    lines = [
        f"{group}: {c[0]} {c[1]}: {c[2]} {c[3]} {c[4]}; FLOP ratio {c[5]}"
        for group, rows in comparison_rows(comparisons)
        for c in rows
    ]
    lines += [
        f"{group}: head cost of {c[0]} {c[1]}: {c[2]} ms {c[3]} {c[4]}; {c[5]} of the full pass; {c[6]} GMAC/image"
        for group, rows in head_cost_rows(comparisons)
        for c in rows
    ]
    return lines


# -- Markdown ----------------------------------------------------------------------------------------------------
def _grouped_markdown(header: Iterable[str], groups: list[tuple[str, list[list[str]]]]) -> str:
    return markdown_table(["group", *header], ([group, *cells] for group, rows in groups for cells in rows))


def _ms(value: float | None) -> str:
    return NA if value is None else f"{value:.3f}"


def _measurement_row(m: dict[str, Any], memory: bool) -> list[Any]:
    lat = m["latency_ms"]
    row = [
        source_name(m),
        m["role"],
        m["backend"],
        m["precision"],
        m["batch"],
        m["n"],
        m["rounds"],
        m.get("calls_per_round", NA),
        sig(m.get("timed_s")),
        sig(m.get("prepare_s")),
        sig(m.get("open_s")),
        *(_ms(lat[k]) for k in ("min", "median")),
        interval(m["ci_low_ms"], m["ci_high_ms"], _ms),
        *(_ms(lat[k]) for k in ("mean", "p90", "p95", "p99", "max")),
        f"{m['median_ms_per_image']:.3f}",
        f"{m['throughput_images_per_s']:.1f}",
        sig(m["gmac_per_image"]),
        sig(m["gflops_per_s"]),
    ]
    if memory:
        row.append(NA if m["peak_memory_bytes"] is None else f"{m['peak_memory_bytes'] / 2**20:.1f}")
    return row


MEASUREMENT_HEADER = [
    "source",
    "role",
    "backend",
    "precision",
    "batch",
    "n",
    "rounds",
    "calls/round",
    "timed s",
    "prepare s",
    "open s",
    "min ms",
    "median ms",
    "95% interval ms",
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


RATIOS_TEXT = (
    "ratio: the subject's speed over its baseline's (> 1: faster), the median over paired rounds of the per-round "
    "ratio; FLOP ratio: that ratio as the FLOP counts predict it. A bare-backbone row is the deployed model's time "
    "over the bare backbone's; its target: <= 1.05 x the FLOP ratio."
)
HEAD_COST_TEXT = (
    "cost: the full pass's time minus the time without the task (its head and task-specific layers), the median "
    "over paired rounds; of full: its share of the full pass; GMAC: the task's multiply-accumulates per image."
)


def render_markdown(report: dict[str, Any]) -> str:
    """The Markdown report: settings, every measurement, the ratio and head-cost tables, each comparison's full
    table, notes, plots."""
    settings = {**report["environment"], **report["run"]}
    memory = _has_memory(report)
    header = MEASUREMENT_HEADER + (["peak MiB"] if memory else [])
    comparisons = report["comparisons"]
    percentiles = report["run"].get("percentiles", {})
    parts = [
        "# mtlora profile",
        "## Settings",
        markdown_table(["setting", "value"], [[k, _cell(v)] for k, v in settings.items()]),
        "## Measurements",
        f"Median and 95% interval: {STATISTIC}. min, mean, max and percentiles are over all timed calls; "
        f"percentiles need enough calls ({', '.join(f'{k} {v}' for k, v in percentiles.items())}), n/a below "
        "that. timed s: the seconds of the timed rounds; prepare s: the first call and warm-up; open s: opening "
        "the candidate (shared by its batch sizes). GMAC per image from FlopCounterMode (torch) or the graph's "
        "MatMul/Gemm/Conv shapes (ONNX); GFLOP/s = 2 x GMAC x images/s.",
        markdown_table(header, (_measurement_row(m, memory) for m in report["measurements"])),
    ]
    ratios, costs = comparison_rows(comparisons), head_cost_rows(comparisons)
    if ratios:
        parts += ["## Ratios", RATIOS_TEXT, _grouped_markdown(COMPARISON_COLUMNS, ratios)]
    if costs:
        parts += ["## Head cost", HEAD_COST_TEXT, _grouped_markdown(HEAD_COST_COLUMNS, costs)]
    details = [_comparison_section(name, rows) for name, rows in comparisons.items() if rows]
    if details:
        parts += ["## Comparison details", *details]
    if report["notes"]:
        parts += ["## Notes", "\n".join(f"- {note}" for note in report["notes"])]
    if report["plots"]:
        parts += ["## Plots", "\n".join(f"![{name}]({Path(path).name})" for name, path in report["plots"].items())]
    return "\n\n".join(part for part in parts if part) + "\n"


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``profile.json`` and ``profile.md`` into ``out_dir`` atomically; returns their paths."""
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "profile.json", "markdown": out_dir / "profile.md"}
    write_json_atomic(paths["json"], report)
    write_bytes_atomic(paths["markdown"], render_markdown(report).encode())
    return paths
