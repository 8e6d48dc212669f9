"""``mtlora compare`` as a library call: train every row on one budget, measure, tabulate, plot.

Each row's measurements are kept in ``OUTPUT/runs/ROW/compare_row.json``; with its run finished a later call
reuses them (re-timing only when the latency settings changed), so an interrupted comparison continues.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from mtlora_deploy.compare.measure import deployed_model, load_last, measure_latency, measure_row
from mtlora_deploy.compare.plot import plot_pareto
from mtlora_deploy.compare.report import FORMAT, print_result, write_result
from mtlora_deploy.compare.runs import prepare_data, train_row
from mtlora_deploy.compare.settings import DEFAULT_PRESETS, CompareSettings, RowSpec, resolve_device
from mtlora_deploy.compare.table import build_rows
from mtlora_deploy.utils.atomic import write_json_atomic

ROW_FILE = "compare_row.json"


def record_row(row: RowSpec, settings: CompareSettings, run_dir: Path, data_root: str) -> tuple[dict[str, Any], bool]:
    """Train the row if needed and measure it; returns its record and whether it was reused as it was."""
    fit = train_row(row, settings, run_dir, data_root)
    saved = run_dir / ROW_FILE
    if fit is None and saved.is_file():
        record = json.loads(saved.read_text())
        if record.get("latency_settings") == settings.latency_settings():
            return record, True
        record["latency_ms"] = measure_latency(row.name, deployed_model(load_last(run_dir)), settings)
        record["latency_settings"] = settings.latency_settings()
    else:
        record = measure_row(row, run_dir, settings, data_root, fit)
    write_json_atomic(saved, record)
    return record, False


def _record_all(
    settings: CompareSettings, output_dir: Path, data_root: str, console: Console
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every row's record in table order, and the names of the rows reused from an earlier call."""
    records, reused, rows = [], [], settings.rows()
    for index, row in enumerate(rows, 1):
        console.rule(f"[{index}/{len(rows)}] {row.name}")
        record, was_reused = record_row(row, settings, output_dir / "runs" / row.folder, data_root)
        records.append(record)
        if was_reused:
            reused.append(row.name)
    return records, reused


def _notes(settings: CompareSettings, baselines: dict[str, float], reused: list[str]) -> list[str]:
    notes = []
    if not settings.model_overrides.get("pretrained"):
        notes.append(
            "the backbone is random-init (no ImageNet weights; the model config field pretrained adds them), so the "
            "ranking need not be the MTLoRA paper's, which fine-tunes an ImageNet-pretrained Swin"
        )
    if settings.data == "synthetic":
        notes.append(
            f"data: the built-in synthetic PASCAL-MT look-alike ({settings.synthetic_images} images, "
            "75% train / 25% val), not PASCAL-Context"
        )
    missing = [t for t in settings.tasks if t not in baselines]
    if missing:
        notes.append(f"Δm leaves out {', '.join(missing)}: its single-task metric is 0 or not finite")
    if reused:
        notes.append(f"reused finished rows from an earlier call (not retrained): {', '.join(reused)}")
    return notes


def assemble(
    records: list[dict[str, Any]], settings: CompareSettings, reused: list[str], command: str | None
) -> dict[str, Any]:
    """The result dict (what compare.json holds) from every row's record."""
    from mtlora_deploy.profile.runs import environment_settings

    device = resolve_device(settings.device)
    rows, baselines = build_rows(records)
    return {
        "format": FORMAT,
        "command": command,
        "settings": settings.to_dict(),
        "environment": environment_settings(torch.device(device)),
        "tasks": list(settings.tasks),
        "baselines": baselines,
        "latency_label": f"latency ms ({device}, batch {settings.latency_batch})",
        "rows": rows,
        "records": records,
        "notes": _notes(settings, baselines, reused),
        "plots": {},
    }


def compare(
    settings: CompareSettings, output_dir: str | Path, command: str | None = None, console: Console | None = None
) -> dict[str, Any]:
    """Run the comparison ``settings`` describes into ``output_dir``; returns the result dict."""
    console = console or Console()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    data_root = prepare_data(settings, output_dir)
    previous_threads = torch.get_num_threads()
    try:
        if settings.threads:
            torch.set_num_threads(settings.threads)
        records, reused = _record_all(settings, output_dir, data_root, console)
        result = assemble(records, settings, reused, command)  # the environment as timed (threads)
    finally:
        torch.set_num_threads(previous_threads)
    title = f"Δm vs trainable parameters ({len(settings.tasks)} tasks)"
    result["plots"] = {"pareto": str(plot_pareto(result["rows"], output_dir / "pareto.png", title))}
    result["files"] = {"json": str(output_dir / "compare.json"), "markdown": str(output_dir / "compare.md")}
    write_result(result, output_dir)
    print_result(result, console)
    return result


def run_comparison(
    presets: Sequence[str] = DEFAULT_PRESETS,
    data: str = "synthetic",
    steps: int | None = None,
    batch_size: int = 32,
    lr: float = 5e-4,
    seed: int = 0,
    output_dir: str | Path = "runs/compare",
    model_overrides: dict[str, Any] | None = None,
    train_overrides: dict[str, Any] | None = None,
    command: str | None = None,
    console: Console | None = None,
    **measurement: Any,
) -> dict[str, Any]:
    """Train ``presets`` (plus one single-task run per task) on one budget and tabulate them like the MTLoRA paper.

    Args:
        presets: preset names in table order; ``single-task`` rows are always added (delta-m needs them).
        data: ``synthetic`` (generated once into ``output_dir/data``) or a PASCAL-MT root.
        steps, batch_size, lr, seed: the budget every row shares (``lr`` is the nominal LR for batch 512, as in
            ``mtlora train --lr``; ``steps`` None is the reference 300-epoch schedule).
        output_dir: run folders, compare.json, compare.md and pareto.png.
        model_overrides: model config fields for every row (``backbone``, ``image_size``, ``tasks``, ...).
        train_overrides: further train config fields (``warmup_steps``, ``num_workers``, ...).
        command: the command line, printed in compare.md.
        measurement: ``CompareSettings`` fields: synthetic_images, device, latency_batch, latency_iterations,
            latency_warmup, threads.

    Returns:
        The result dict: settings, environment, rows (with delta-m), per-row records, baselines, notes, files.
    """
    settings = CompareSettings(
        presets=tuple(presets),
        data=data,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        model_overrides=dict(model_overrides or {}),
        train_overrides=dict(train_overrides or {}),
        **measurement,
    )
    return compare(settings, output_dir, command, console)
