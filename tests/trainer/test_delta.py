"""Multi-task delta against hand values and the MTLoRA paper table (docs/training.md, "Delta-m")."""

from __future__ import annotations

import itertools

import pytest

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.trainer.delta import REFERENCE_SINGLE_TASK, multi_task_delta

TASKS = ("semseg", "human_parts", "sal", "normals")

# method: (semseg, parts, sal, normals, dm reported in the paper)
PAPER_ROWS = {
    "MTL decoders only": (65.09, 53.48, 57.46, 20.69, -9.95),
    "MTL LoRA": (70.12, 57.73, 61.90, 18.96, -2.17),
    "Polyhistor": (70.87, 59.54, 65.47, 17.47, 2.34),
    "MTLoRA r=16": (68.19, 58.99, 64.48, 17.03, 1.35),
    "MTLoRA r=32": (67.74, 59.46, 64.90, 16.59, 2.16),
    "MTLoRA r=64": (67.90, 59.84, 65.40, 16.60, 2.55),
}


def as_metrics(row: tuple[float, ...]) -> dict[str, float]:
    return dict(zip(TASKS, row[:4], strict=True))


def rounding_envelope(row: tuple[float, ...]) -> tuple[float, float]:
    """Smallest and largest dm when every table entry (model and baseline) is off by up to 0.005."""
    values = []
    for signs in itertools.product((-0.005, 0.005), repeat=8):
        metrics = {t: v + s for t, v, s in zip(TASKS, row[:4], signs[:4], strict=True)}
        baselines = {t: REFERENCE_SINGLE_TASK[t] + s for t, s in zip(TASKS, signs[4:], strict=True)}
        values.append(multi_task_delta(metrics, baselines, {"normals"}))
    return min(values), max(values)


def test_reference_single_task_row() -> None:
    assert dict(REFERENCE_SINGLE_TASK) == {"semseg": 67.21, "human_parts": 61.93, "sal": 62.35, "normals": 17.97}
    assert multi_task_delta(dict(REFERENCE_SINGLE_TASK), REFERENCE_SINGLE_TASK, {"normals"}) == 0.0


def test_hand_value_two_tasks() -> None:
    # semseg +10 % (higher better), normals 20 -> 18 is -10 % error, i.e. +10 % -> dm = +10
    # semseg 60 -> 57 is -5 %; normals 20 -> 22 is +10 % error, i.e. -10 % -> dm = -7.5
    baselines = {"semseg": 60.0, "normals": 20.0}
    assert multi_task_delta({"semseg": 66.0, "normals": 18.0}, baselines, {"normals"}) == pytest.approx(10.0)
    assert multi_task_delta({"semseg": 57.0, "normals": 22.0}, baselines, {"normals"}) == pytest.approx(-7.5)


def test_mtlora_r64_row_gives_plus_2_55() -> None:
    # From the rounded table entries dm = +2.5419; the paper prints +2.55, computed from unrounded
    # metrics. |2.5419 - 2.55| = 0.0081 < 0.01, and 2.55 lies inside the +-0.005 rounding envelope.
    dm = multi_task_delta(as_metrics(PAPER_ROWS["MTLoRA r=64"]), REFERENCE_SINGLE_TASK, {"normals"})
    assert dm == pytest.approx(2.5419, abs=1e-4)
    assert abs(dm - 2.55) < 0.01


@pytest.mark.parametrize("method", sorted(PAPER_ROWS))
def test_paper_rows_within_rounding_of_the_table(method: str) -> None:
    # r=16 (1.3395 vs 1.35) and r=32 (2.1424 vs 2.16) miss by more than 0.01 from the rounded
    # entries, but every printed dm is reachable by metrics that round to the printed ones.
    row = PAPER_ROWS[method]
    low, high = rounding_envelope(row)
    assert low <= row[4] <= high


def test_paper_full_finetuning_row_is_not_reproducible() -> None:
    # The table's "MTL full FT" row (67.56 / 60.24 / 65.21 / 16.64) gives +2.445, not the printed
    # +2.23, and no rounding of the entries explains the gap: a paper inconsistency, kept visible.
    row = (67.56, 60.24, 65.21, 16.64, 2.23)
    assert multi_task_delta(as_metrics(row), REFERENCE_SINGLE_TASK, {"normals"}) == pytest.approx(2.445, abs=1e-3)
    low, high = rounding_envelope(row)
    assert not low <= row[4] <= high


def test_default_baselines_and_direction() -> None:
    metrics = as_metrics(PAPER_ROWS["MTLoRA r=64"])
    assert multi_task_delta(metrics) == multi_task_delta(metrics, REFERENCE_SINGLE_TASK, {"normals"})


def test_subset_of_tasks_ignores_extra_baselines() -> None:
    # only semseg evaluated: T = 1
    dm = multi_task_delta({"semseg": 67.90}, REFERENCE_SINGLE_TASK, set())
    assert dm == pytest.approx((67.90 - 67.21) / 67.21 * 100)


def test_missing_baseline_names_the_task() -> None:
    with pytest.raises(ConfigError, match="edge"):
        multi_task_delta({"semseg": 67.9, "edge": 70.0}, REFERENCE_SINGLE_TASK, {"normals"})


@pytest.mark.parametrize(("metrics", "baselines"), [({}, REFERENCE_SINGLE_TASK), ({"semseg": 1.0}, {"semseg": 0.0})])
def test_rejects_empty_metrics_and_zero_baseline(metrics: dict, baselines: dict) -> None:
    with pytest.raises(ConfigError):
        multi_task_delta(metrics, baselines, set())


def test_every_delta_m_is_named_with_its_baseline():
    from mtlora_deploy.trainer.delta import SINGLE_TASK_REFERENCE, DeltaBaseline, read_delta
    from mtlora_deploy.trainer.evaluation import attach_delta

    result = {"primary": {"semseg": 70.0, "normals": 17.0}}
    attach_delta(result, SINGLE_TASK_REFERENCE)
    expected = multi_task_delta({"semseg": 70.0, "normals": 17.0})
    assert result["delta_m_vs_single_task_reference"] == pytest.approx(expected)
    assert result["delta_m_baseline"]["values"] == {"semseg": 67.21, "normals": 17.97}
    untrained = DeltaBaseline("untrained", {"semseg": 35.0, "normals": 34.0})
    attach_delta(result, untrained)  # replaces the earlier one: one delta-m per result
    assert [k for k in result if k.startswith("delta_m")] == ["delta_m_vs_untrained", "delta_m_baseline"]
    assert result["delta_m_vs_untrained"] == pytest.approx((100.0 + 50.0) / 2)
    value, baseline = read_delta(result)
    assert value == result["delta_m_vs_untrained"] and baseline.label.startswith("the untrained model")
    assert read_delta({"delta_m": 1.5})[1].name == "not_recorded"  # an evaluate file of an older version
    with pytest.raises(ConfigError):
        DeltaBaseline("not a name")
