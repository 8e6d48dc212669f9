"""Multi-task performance delta (Maninis et al., 2019), the summary number of the MTLoRA tables.

``dm = (1/T) * sum_t (-1)^{l_t} (M_t - M_t^single) / M_t^single * 100`` with ``l_t = 1`` for
lower-is-better metrics, so a positive ``dm`` means the multi-task model beats the single-task
models on average.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.trainer.metrics import lower_is_better_tasks

REFERENCE_SINGLE_TASK: Mapping[str, float] = {
    "semseg": 67.21,
    "human_parts": 61.93,
    "sal": 62.35,
    "normals": 17.97,
}
"""Single-task full fine-tuning of Swin-T (MTLoRA paper, PASCAL-Context val): the default baselines.

semseg / human_parts / sal are mIoU (%), normals the mean angular error (degrees). There is no
published edge baseline: users training edge supply their own.
"""


def _relative_gain(task: str, value: float, baseline: float, lower_is_better: Collection[str]) -> float:
    """Signed relative change of one task in %, positive when the model is better than the baseline."""
    if not math.isfinite(baseline) or baseline == 0:
        raise ConfigError(f"baseline for task '{task}' must be a finite non-zero number, got {baseline}")
    sign = -1.0 if task in lower_is_better else 1.0
    return sign * (value - baseline) / baseline * 100.0


def multi_task_delta(
    metrics: Mapping[str, float],
    baselines: Mapping[str, float] = REFERENCE_SINGLE_TASK,
    lower_is_better: Collection[str] | None = None,
) -> float:
    """Average signed relative improvement over single-task baselines, in %.

    Every task in ``metrics`` enters the average (T = number of tasks in ``metrics``); tasks of
    ``baselines`` that were not evaluated are ignored, so one baseline table serves every task
    subset.

    Args:
        metrics: task -> primary metric of the evaluated model (e.g. from ``primary_values``).
        baselines: task -> the same metric of the single-task model(s);
            default ``REFERENCE_SINGLE_TASK``.
        lower_is_better: tasks whose metric is an error; default: those whose primary metric is
            lower-is-better (normals).

    Returns:
        ``dm`` in percent (e.g. ``2.54`` for +2.54 %).

    Raises:
        ConfigError: if ``metrics`` is empty or a task has no (usable) baseline.
    """
    if not metrics:
        raise ConfigError("multi_task_delta needs at least one task metric")
    missing = [task for task in metrics if task not in baselines]
    if missing:
        raise ConfigError(
            f"no single-task baseline for tasks {missing}; baselines exist for {sorted(baselines)}; "
            "pass baselines={task: value, ...} (e.g. from your own single-task runs)"
        )
    if lower_is_better is None:
        lower_is_better = lower_is_better_tasks(list(metrics))
    gains = [
        _relative_gain(task, float(value), float(baselines[task]), lower_is_better) for task, value in metrics.items()
    ]
    return sum(gains) / len(gains)
