"""Acceptance: a short CPU run on the synthetic set improves every task clearly over the untrained model."""

import pytest

from mtlora_deploy.compare.untrained import untrained_vs_trained
from tests.conftest import train_tiny_run

# clear margins in each metric's own unit: mIoU / maxIoU / odsF points, normals mean-angle degrees
MARGINS = {"semseg": 2.0, "human_parts": 3.0, "sal": 5.0, "normals": 10.0, "edge": 3.0}


@pytest.mark.slow  # a 40-step training run and two evaluations (~130 CPU-s)
def test_short_cpu_training_beats_the_untrained_model_on_every_task(tmp_path):
    train_tiny_run(
        tmp_path / "run",
        model={"tasks": ("semseg", "human_parts", "sal", "normals", "edge")},
        synthetic_images=48,
        batch_size=8,
        warmup_steps=3,
        max_steps=40,
        eval_every=100,
        log_every=20,
    )
    rows = untrained_vs_trained(tmp_path / "run")
    print(rows)
    for task, row in rows.items():
        assert row["gain"] >= MARGINS[task], (task, row)
