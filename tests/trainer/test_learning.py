"""Acceptance: a short CPU run on the synthetic set improves every task clearly over the untrained model."""

import warnings

from mtlora_deploy.trainer.api import start_run
from mtlora_deploy.trainer.compare_untrained import untrained_vs_trained

# clear margins in each metric's own unit: mIoU / maxIoU / odsF points, normals mean-angle degrees
MARGINS = {"semseg": 2.0, "human_parts": 3.0, "sal": 5.0, "normals": 10.0, "edge": 3.0}


def test_short_cpu_training_beats_the_untrained_model_on_every_task(tmp_path):
    model = {
        "backbone": "swin_test_tiny",
        "image_size": 64,
        "decoder_widths": (8, 8, 16, 16),
        "head_channels": 64,
        "task_agnostic_rank": 8,
        "tasks": ("semseg", "human_parts", "sal", "normals", "edge"),
    }
    train = {
        "data": "synthetic",
        "synthetic_images": 48,
        "batch_size": 8,
        "num_workers": 0,
        "base_lr": 0.2,
        "warmup_steps": 3,
        "max_steps": 40,
        "eval_every": 100,
        "log_every": 20,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start_run("mtlora-r16", None, model, train, tmp_path / "run")
    rows = untrained_vs_trained(tmp_path / "run")
    print(rows)
    for task, row in rows.items():
        assert row["gain"] >= MARGINS[task], (task, row)
