"""Which metric ranks each task, and one fresh accumulator per task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.trainer.metrics.base import DEFAULT_NUM_CLASSES, MetricAccumulator
from mtlora_deploy.trainer.metrics.edge import EdgeMeter
from mtlora_deploy.trainer.metrics.normals import NormalsMeter
from mtlora_deploy.trainer.metrics.saliency import SaliencyMeter
from mtlora_deploy.trainer.metrics.segmentation import SegmentationMeter


@dataclass(frozen=True)
class PrimaryMetric:
    """The metric a task is ranked by (checkpoint selection, multi-task delta).

    Attributes:
        name: key in the task's ``compute()`` dict.
        higher_is_better: direction; False for error metrics (normals mean angle).
    """

    name: str
    higher_is_better: bool


PRIMARY_METRICS: Mapping[str, PrimaryMetric] = {
    "semseg": PrimaryMetric("mIoU", True),
    "human_parts": PrimaryMetric("mIoU", True),
    "sal": PrimaryMetric("mIoU", True),
    "normals": PrimaryMetric("mean", False),
    "edge": PrimaryMetric("odsF", True),
}


def primary_metric(task: str) -> PrimaryMetric:
    """The primary metric of ``task``; raises ConfigError for an unknown task."""
    if task not in PRIMARY_METRICS:
        raise ConfigError(f"unknown task '{task}'; known tasks: {sorted(PRIMARY_METRICS)}")
    return PRIMARY_METRICS[task]


def primary_values(results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Pick each task's primary value from ``{task: compute() dict}``, e.g. for ``multi_task_delta``."""
    return {task: float(values[primary_metric(task).name]) for task, values in results.items()}


def lower_is_better_tasks(tasks: Sequence[str]) -> set[str]:
    """Tasks whose primary metric is an error (lower is better)."""
    return {task for task in tasks if not primary_metric(task).higher_is_better}


def _check_num_classes(num_classes: Mapping[str, int] | None) -> dict[str, int]:
    """Merge user class counts over the PASCAL-MT defaults and check them."""
    merged = dict(DEFAULT_NUM_CLASSES)
    for task, n in (num_classes or {}).items():
        if task not in DEFAULT_NUM_CLASSES:
            raise ConfigError(
                f"num_classes given for '{task}', which has no classes; allowed: {sorted(DEFAULT_NUM_CLASSES)}"
            )
        if int(n) < 1:
            raise ConfigError(f"num_classes['{task}'] must be >= 1, got {n}")
        merged[task] = int(n)
    return merged


def build_metrics(
    tasks: Sequence[str], num_classes: Mapping[str, int] | None = None, edge_tolerance_px: int = 2
) -> dict[str, MetricAccumulator]:
    """One fresh accumulator per task.

    Args:
        tasks: task names (semseg, human_parts, sal, normals, edge).
        num_classes: class counts for semseg / human_parts (default 21 / 7).
        edge_tolerance_px: match distance of the edge F-measure, in pixels.

    Returns:
        task -> accumulator, in the order of ``tasks``.

    Raises:
        ConfigError: for an unknown task or a bad class count.
    """
    counts = _check_num_classes(num_classes)
    meters: dict[str, MetricAccumulator] = {}
    for task in tasks:
        primary_metric(task)  # validates the name
        if task in counts:
            meters[task] = SegmentationMeter(counts[task])
        elif task == "sal":
            meters[task] = SaliencyMeter()
        elif task == "normals":
            meters[task] = NormalsMeter()
        else:
            meters[task] = EdgeMeter(tolerance_px=edge_tolerance_px)
    return meters
