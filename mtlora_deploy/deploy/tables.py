"""Rich tables for the merge and export commands (the library returns reports; the CLI prints these)."""

from __future__ import annotations

from rich.table import Table

from mtlora_deploy.deploy.export import ExportReport
from mtlora_deploy.deploy.merge import MergeReport
from mtlora_deploy.utils.tables import PARAMETER_GROUPS, count_cell


def merge_table(report: MergeReport) -> Table:
    """Parameters per group before and after merging, with the deployed count the unmerged model predicts."""
    before, after = report.tables["before"], report.tables["after"]
    table = Table(title=f"merge {report.source} -> {report.output}")
    for name, justify in (("group", "left"), ("before", "right"), ("after", "right")):
        table.add_column(name, justify=justify)
    for label, key in PARAMETER_GROUPS:
        table.add_row(
            label,
            count_cell(before[f"{key}_trainable"] + before[f"{key}_frozen"]),
            count_cell(after[f"{key}_trainable"] + after[f"{key}_frozen"]),
        )
    table.add_row("total", count_cell(report.params_before), count_cell(report.params_after), style="bold")
    table.add_row("expected after merge (deployed)", "", count_cell(report.deployed_expected))
    return table


def parity_table(report: ExportReport) -> Table:
    """ONNX Runtime vs PyTorch per task: max abs error and relative error (max abs / max|ref|)."""
    table = Table(title=f"ONNX Runtime (CPU) vs PyTorch, {report.outputs}")
    for name in ("task", "dtype", "max abs error", "relative error", "tolerance", "ok"):
        table.add_column(name, justify="left" if name in ("task", "dtype") else "right")
    for row in report.parity:
        table.add_row(
            row.task,
            row.dtype,
            f"{row.max_abs:.3e}",
            f"{row.relative:.3e}",
            f"{row.tolerance:.0e}",
            "[green]yes[/green]" if row.ok else "[red]no[/red]",
        )
    if any("int" in row.dtype for row in report.parity):
        table.caption = "integer label maps: relative error = share of pixels that differ"
    return table


def export_summary_table(report: ExportReport) -> Table:
    """Path, exporter, opset, size, node count and the op types of the graph."""
    table = Table(title=f"exported {report.path}", show_header=False)
    table.add_column("key")
    table.add_column("value")
    table.add_row("exporter / opset", f"{report.exporter} / {report.opset}")
    table.add_row("input", f"image (batch, 3, {report.image_size}, {report.image_size}) float32")
    table.add_row("outputs", f"{', '.join(report.tasks)} ({report.outputs})")
    table.add_row("file size", f"{report.file_bytes / 2**20:.1f} MiB")
    table.add_row("nodes", str(report.node_count))
    table.add_row(
        "op types", ", ".join(f"{op} {n}" for op, n in sorted(report.op_types.items(), key=lambda kv: -kv[1]))
    )
    table.add_row("time", f"{report.seconds:.1f} s")
    return table
