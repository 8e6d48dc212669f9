"""Multi-task performance delta (Maninis et al., 2019), the summary number of the MTLoRA tables.

``dm = (1/T) * sum_t (-1)^{l_t} (M_t - M_t^single) / M_t^single * 100`` with ``l_t = 1`` for
lower-is-better metrics, so a positive ``dm`` means the multi-task model beats the single-task
models on average.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

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


# name -> what a delta-m against it means, in the words every output uses (console, JSON, plots).
BASELINE_LABELS: Mapping[str, str] = {
    "single_task_reference": "the single-task Swin-T reference (MTLoRA paper, PASCAL-Context val)",
    "given": "the given single-task metrics",
    "untrained": "the untrained model (same architecture and seed)",
    "pytorch_fp32": "the same trained model in PyTorch fp32",
    "single_task": "single-task models trained with the same recipe",
}


@dataclass(frozen=True)
class DeltaBaseline:
    """What one delta-m is measured against: every delta-m the toolkit writes carries its baseline's name.

    In JSON the number is ``delta_m_vs_<name>`` (e.g. ``delta_m_vs_single_task_reference``) next to
    ``delta_m_baseline`` (this object); consoles and plots say "delta-m vs <label>".
    """

    name: str
    values: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ConfigError(f"delta-m baseline name: got {self.name!r}, expected a word such as 'untrained'")

    @property
    def key(self) -> str:
        """The JSON key of a delta-m against this baseline."""
        return f"delta_m_vs_{self.name}"

    @property
    def short(self) -> str:
        """A few words for log lines and table headers: ``untrained``, ``single-task reference``, ``PyTorch fp32``."""
        return self.name.replace("single_task", "single-task").replace("pytorch", "PyTorch").replace("_", " ")

    @property
    def label(self) -> str:
        """Words for people: ``the untrained model (same architecture and seed)``."""
        return BASELINE_LABELS.get(self.name, self.name.replace("_", " "))

    def to_dict(self, tasks: Collection[str] | None = None) -> dict[str, Any]:
        values = {t: float(v) for t, v in self.values.items() if tasks is None or t in tasks}
        return {"name": self.name, "label": self.label, "values": values}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeltaBaseline:
        return cls(str(data["name"]), {t: float(v) for t, v in dict(data.get("values") or {}).items()})


SINGLE_TASK_REFERENCE = DeltaBaseline("single_task_reference", REFERENCE_SINGLE_TASK)


def as_baseline(baselines: Mapping[str, float] | DeltaBaseline | None, name: str = "given") -> DeltaBaseline:
    """A :class:`DeltaBaseline` from one, from plain ``{task: value}`` (named ``name``), or the reference (None)."""
    if isinstance(baselines, DeltaBaseline):
        return baselines
    return SINGLE_TASK_REFERENCE if baselines is None else DeltaBaseline(name, dict(baselines))


def read_delta(result: Mapping[str, Any]) -> tuple[float | None, DeltaBaseline | None]:
    """The delta-m of a result written by ``evaluate`` and its baseline; an older file's unlabelled ``delta_m``
    comes back with a baseline named ``not_recorded``."""
    if "delta_m_baseline" in result:
        baseline = DeltaBaseline.from_dict(result["delta_m_baseline"])
        return result.get(baseline.key), baseline
    if "delta_m" in result:
        return result["delta_m"], DeltaBaseline("not_recorded", dict(result.get("baselines") or {}))
    return None, None
