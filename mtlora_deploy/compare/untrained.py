"""Did training help? Score a run's checkpoint and the same architecture untrained on the same split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from mtlora_deploy.model.config import ModelConfig
from mtlora_deploy.model.multitask import build_model
from mtlora_deploy.trainer.evaluation import eval_dataset, evaluate_dataset
from mtlora_deploy.trainer.metrics import primary_metric


def _score(model: torch.nn.Module, dataset, batch_size: int) -> dict[str, Any]:
    return evaluate_dataset(model.eval(), dataset, model.config.tasks, batch_size)


def untrained_metrics(config: ModelConfig, seed: int, dataset, batch_size: int = 8) -> dict[str, Any]:
    """Metrics of ``config`` built with ``seed`` and never trained: the floor a run must beat on its own data, and
    the delta-m baselines where no single-task runs of that data exist (the synthetic set)."""
    torch.manual_seed(seed)
    untrained = build_model(config, warn_without_weights=False)  # as the run was built: weights or random init
    return _score(untrained, dataset, batch_size)


def untrained_vs_trained(run_dir: str | Path, split: str = "val", batch_size: int = 8) -> dict[str, dict[str, Any]]:
    """Per task: untrained and trained primary metric, the gain in the metric's good direction, and a verdict."""
    from mtlora_deploy.model.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    config = ModelConfig.from_dict(saved["model"])
    data = run_dir / "data" if saved["train"]["data"] == "synthetic" else saved["train"]["data"]
    dataset = eval_dataset(data, split, config.tasks, config.image_size)
    before = untrained_metrics(config, saved["train"]["seed"], dataset, batch_size)
    after = _score(load_checkpoint(run_dir), dataset, batch_size)
    rows = {}
    for task in config.tasks:
        metric = primary_metric(task)
        old, new = before["primary"][task], after["primary"][task]
        gain = (new - old) if metric.higher_is_better else (old - new)
        rows[task] = {"metric": metric.name, "untrained": old, "trained": new, "gain": gain, "improved": gain > 0}
    return rows
