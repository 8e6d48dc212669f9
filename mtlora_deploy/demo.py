"""The end-to-end job on built-in synthetic data: train -> evaluate -> merge -> export -> precisions -> profile.

Every stage writes into ``workdir`` and is skipped when its output already exists, so an interrupted demo
continues where it stopped.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

DEMO_MODEL = {"backbone": "swin_test_tiny", "image_size": 64, "decoder_widths": (8, 8, 16, 16), "head_channels": 64,
              "task_agnostic_rank": 8, "tasks": ("semseg", "human_parts", "sal", "normals")}
DEMO_TRAIN = {"data": "synthetic", "synthetic_images": 96, "batch_size": 8, "num_workers": 0, "base_lr": 0.2,
              "warmup_steps": 5, "max_steps": 150, "eval_every": 5, "log_every": 10}


def train_stage(workdir: Path, console: Console) -> Path:
    """Train the demo preset (resumes an interrupted run, skips a finished one)."""
    from mtlora_deploy.trainer.api import resume_run, start_run

    run_dir = workdir / "train"
    console.rule("1. train mtlora-r16 (tiny Swin, 64x64) on the synthetic PASCAL-MT set")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not (run_dir / "checkpoints" / "last.json").exists():
            start_run("mtlora-r16", None, dict(DEMO_MODEL), dict(DEMO_TRAIN), run_dir)
        elif not _finished(run_dir):
            resume_run(run_dir)
    return run_dir


def _finished(run_dir: Path) -> bool:
    import json

    import yaml

    step = json.loads((run_dir / "checkpoints" / "last.json").read_text())["metadata"]["step"]
    return step >= yaml.safe_load((run_dir / "config.yaml").read_text())["resolved"]["total_steps"]


def improvement_stage(run_dir: Path, console: Console) -> dict[str, Any]:
    """Show that every task beats the untrained model."""
    from mtlora_deploy.trainer.compare_untrained import untrained_vs_trained

    console.rule("2. trained vs untrained (val split)")
    rows = untrained_vs_trained(run_dir)
    table = Table(title="primary metric per task")
    for column in ("task", "metric", "untrained", "trained", "better?"):
        table.add_column(column)
    for task, row in rows.items():
        verdict = "[green]yes[/]" if row["improved"] else "[red]no[/]"
        table.add_row(task, row["metric"], f"{row['untrained']:.2f}", f"{row['trained']:.2f}", verdict)
    console.print(table)
    return rows


def run_demo(workdir: str | Path = "runs/demo", console: Console | None = None) -> dict[str, Any]:
    """Run every stage and return a summary (paths and results)."""
    console = console or Console()
    workdir = Path(workdir)
    run_dir = train_stage(workdir, console)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "improvement": improvement_stage(run_dir, console)}
    console.rule("done")
    console.print(f"run folder: {run_dir}")
    return summary
