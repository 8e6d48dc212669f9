"""The comparison table in the MTLoRA paper's layout: one row per method, per-task metric, delta-m, parameters.

Delta-m (Maninis et al.) is measured against the single-task rows of the SAME comparison, so the single-task
row is 0 by construction and every number comes from one budget, one dataset and one seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mtlora_deploy.trainer.delta import multi_task_delta
from mtlora_deploy.trainer.metrics import lower_is_better_tasks, primary_metric

SINGLE_TASK_ROW = "single-task (one model per task)"


def usable_baselines(singles: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Each task's single-task primary metric, where it is finite and non-zero (delta-m divides by it)."""
    values = {r["task"]: r["primary"].get(r["task"]) for r in singles}
    return {t: float(v) for t, v in values.items() if v is not None and math.isfinite(v) and v != 0}


def delta_m(primary: Mapping[str, float | None], baselines: Mapping[str, float]) -> float | None:
    """Delta-m in % over the tasks with a finite metric and a usable baseline; None when there is none."""
    usable = {t: float(v) for t, v in primary.items() if t in baselines and v is not None and math.isfinite(v)}
    if not usable:
        return None
    return multi_task_delta(usable, baselines, lower_is_better_tasks(list(usable)))


def single_task_row(singles: Sequence[dict[str, Any]], baselines: Mapping[str, float]) -> dict[str, Any]:
    """The paper's single-task row: each task's own model, parameters and latencies summed over the T models."""
    primary = {r["task"]: r["primary"].get(r["task"]) for r in singles}
    return {
        "name": SINGLE_TASK_ROW,
        "kind": "single-task",
        "preset": "single-task",
        "primary": primary,
        "delta_m_vs_single_task": delta_m(primary, baselines),
        **{key: sum(r[key] for r in singles) for key in ("trainable_params", "total_params", "deployed_params")},
        "latency_median_ms": sum(r["latency_ms"]["median"] for r in singles),
        "run_dirs": [r["run_dir"] for r in singles],
    }


def method_row(record: dict[str, Any], baselines: Mapping[str, float]) -> dict[str, Any]:
    """A multi-task method's row from its measured record."""
    keys = ("name", "preset", "primary", "trainable_params", "total_params", "deployed_params")
    return {
        **{k: record[k] for k in keys},
        "kind": "multi-task",
        "delta_m_vs_single_task": delta_m(record["primary"], baselines),
        "latency_median_ms": record["latency_ms"]["median"],
        "run_dirs": [record["run_dir"]],
    }


def build_rows(records: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The table's rows (single-task first, then the methods in order) and the baselines they are measured against."""
    singles = [r for r in records if r["task"] is not None]
    baselines = usable_baselines(singles)
    rows = [single_task_row(singles, baselines)] if singles else []
    return rows + [method_row(r, baselines) for r in records if r["task"] is None], baselines


def metric_header(task: str) -> str:
    """``semseg mIoU ↑`` / ``normals mean ↓``: the task, its primary metric and its good direction."""
    metric = primary_metric(task)
    return f"{task} {metric.name} {'↑' if metric.higher_is_better else '↓'}"


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def table_cells(row: dict[str, Any], tasks: Sequence[str]) -> list[str]:
    """One row's cells: metrics (2 decimals), delta-m (signed %), parameters (M), latency (ms)."""
    return [
        row["name"],
        *(_number(row["primary"].get(t), ".2f") for t in tasks),
        _number(row["delta_m_vs_single_task"], "+.2f"),
        f"{row['trainable_params'] / 1e6:.3f}",
        f"{row['deployed_params'] / 1e6:.3f}",
        _number(row["latency_median_ms"], ".2f"),
    ]


def table_header(tasks: Sequence[str], latency_label: str) -> list[str]:
    """Method, one column per task, delta-m, trainable and deployed parameters (M), deployed latency."""
    return [
        "method",
        *map(metric_header, tasks),
        "Δm (%) ↑",
        "trainable (M)",
        "deployed (M)",
        latency_label,
    ]
