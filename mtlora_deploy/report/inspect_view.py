"""``mtlora inspect`` on a console: a description (:func:`~mtlora_deploy.report.inspect.inspect_artifact`) as rich
tables in words: summary with the kind's details, inputs/outputs, fidelity to fp32, files and their checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _text(value: Any, key: str = "") -> str:
    """A detail in words: counts as ``Op 12, ...`` (the 10 largest), checkpoint sets and calibration in a phrase,
    other mappings as ``key value, ...``; the JSON output keeps every value as it is."""
    if key == "op_types" and isinstance(value, dict):
        shown = ", ".join(f"{op} {n}" for op, n in list(value.items())[:10])
        return shown + (f", and {len(value) - 10} more op types" if len(value) > 10 else "")
    if key == "checkpoint_sets" and isinstance(value, list):
        return "; ".join(
            f"set {s['set']} (step {s['step']}{', current' if s['current'] else ''}): "
            + ("verified" if s["verified"] else str(s["problem"]))
            for s in value
        )
    if key == "calibration" and isinstance(value, dict) and "images" in value:
        return f"{value['images']} images of the {value.get('split') or '?'} split, {value.get('file')}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_text(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value) or "-"
    return "-" if value is None or value == "" else str(value)


def _verified(entry: dict[str, Any]) -> str:
    if entry["verified"] is None:
        return "no digest recorded"
    return "matches" if entry["verified"] else f"[red]{entry['problem']}[/]"


def inspect_renderables(record: dict[str, Any]) -> list[Any]:
    """Rich tables of a description: summary (with the kind's details), inputs/outputs, fidelity, files."""
    from rich.markup import escape
    from rich.table import Table

    summary = Table(title=f"{record['kind']}: {escape(record['path'])}", show_header=False)
    summary.add_column("field", style="bold")
    summary.add_column("value", overflow="fold")
    for field in ("tasks", "precision", "low_precision", "batch", "runtime"):
        value = ", ".join(record[field]) if field == "tasks" else record[field]
        summary.add_row(field.replace("_", " "), escape(_text(value)))
    for key, value in record["details"].items():
        summary.add_row(key.replace("_", " "), escape(_text(value, key)))
    shown: list[Any] = [summary]
    if record["inputs"] or record["outputs"]:
        io = Table(title="inputs and outputs")
        for column in ("", "name", "dtype", "shape"):
            io.add_column(column)
        for direction in ("inputs", "outputs"):
            for tensor in record[direction]:
                shape = " x ".join(str(d) for d in tensor.get("shape") or [])
                io.add_row(direction[:-1], tensor["name"], str(tensor.get("dtype")), shape)
        shown.append(io)
    if isinstance(record["fidelity"], dict) and "tasks" in record["fidelity"]:
        from mtlora_deploy.calib.fidelity import fidelity_table

        shown.append(fidelity_table(record["precision"], record["fidelity"]))
    if record["files"]:
        files = Table(title="files")
        for column in ("file", "bytes", "sha256", "check"):
            files.add_column(column, overflow="fold", justify="right" if column == "bytes" else "left")
        for entry in record["files"]:
            digest, name = (entry["sha256"] or "-")[:16], Path(entry["file"])
            if name.is_relative_to(record["path"]) and name != Path(record["path"]):
                name = name.relative_to(record["path"])  # files inside a folder: relative to it
            files.add_row(escape(str(name)), _text(entry["bytes"]), digest, _verified(entry))
        shown.append(files)
    return shown
