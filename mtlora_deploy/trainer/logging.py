"""Run logs: JSON lines for machines, TensorBoard for curves, rich progress and tables for people."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich import get_console
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class RunLogger:
    """Append-only ``metrics.jsonl`` plus TensorBoard scalars under ``tb/`` (rank 0 only)."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self._tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run_dir / "tb"))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as exc:  # the checkpoints stay as they were; the log line is what failed
            from mtlora_deploy.errors import OutputError
            from mtlora_deploy.utils.atomic import describe_os_error

            reason = describe_os_error(exc)
            raise OutputError(f"cannot append to {self.path}: {reason}", self.path, reason) from exc
        step = record.get("step", 0)
        for key, value in _flatten(record).items():
            if isinstance(value, (int, float)) and key not in ("step", "epoch") and math.isfinite(value):
                self._tb.add_scalar(key, value, step)
        self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def trim_log(path: Path, step: int) -> None:
    """Drop records after ``step`` (and a line cut by a crash) from a metrics log: a resumed run logs a step once."""
    if not path.is_file():
        return
    from mtlora_deploy.utils.atomic import write_bytes_atomic

    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line)
    write_bytes_atomic(path, "".join(f"{line}\n" for line in kept).encode())


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def training_progress(console: Console | None = None, disable: bool = False) -> Progress:
    """A rich bar: steps, per-task losses, lr, images/s, elapsed and ETA (gone when training ends: the log lines
    and the final table stay)."""
    return Progress(
        TextColumn("[bold]train"),
        BarColumn(bar_width=16),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable or not (console or get_console()).is_terminal,  # a log file gets the log lines only
        transient=True,
    )


SHORT_TASK = {"semseg": "seg", "human_parts": "parts", "normals": "nrm"}


def step_line(step: int, total: int, losses: dict[str, float], lr: float, images_per_s: float) -> str:
    """One training log line: ``step 10/150  loss 2.345 (seg 1.203 parts 0.512 ...)  lr 3.1e-03  95 img/s``."""
    tasks = " ".join(f"{SHORT_TASK.get(k, k)} {v:.3f}" for k, v in losses.items() if k != "loss")
    return f"step {step}/{total}  loss {losses['loss']:.3f} ({tasks})  lr {lr:.1e}  {images_per_s:.0f} img/s"


def delta_text(result: dict[str, Any]) -> str:
    """``delta-m +2.54 % vs the untrained model (...)``, or empty when the result has no delta-m."""
    from mtlora_deploy.trainer.delta import read_delta

    delta, baseline = read_delta(result)
    return "" if delta is None or baseline is None else f"delta-m {delta:+.2f} % vs {baseline.label}"


def validation_line(result: dict[str, Any], step: int, best: bool) -> str:
    """One validation log line: each task's primary metric and the delta-m, named with its baseline."""
    from mtlora_deploy.trainer.delta import read_delta

    tasks = " ".join(f"{SHORT_TASK.get(t, t)} {v:.2f}" for t, v in result["primary"].items())
    delta, baseline = read_delta(result)
    text = f"validation @ step {step}: {tasks}"
    if delta is not None and baseline is not None:
        text += f" | delta-m vs {baseline.short} {delta:+.2f} %"
    return text + (" (best)" if best else "")


def metrics_table(result: dict[str, Any], title: str) -> Table:
    """Per-task metric table with the primary metric first, the delta-m baseline's value beside it and the delta-m,
    named with its baseline, in the caption."""
    from mtlora_deploy.trainer.delta import read_delta

    _, baseline = read_delta(result)
    table = Table(title=title, caption=delta_text(result) or None)
    table.add_column("task")
    table.add_column("primary", justify="right")
    table.add_column("baseline", justify="right")
    table.add_column("all metrics")
    values = baseline.values if baseline else {}
    for task, metrics in result["metrics"].items():
        shown = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if "/" not in k and isinstance(v, float))
        baseline = values.get(task)
        table.add_row(task, f"{result['primary'][task]:.2f}", "-" if baseline is None else f"{baseline:.2f}", shown)
    return table
