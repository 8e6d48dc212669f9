"""Measuring one trained row: per-task metrics, trainable and deployed parameters, and deployed latency.

"Deployed" is what the toolkit ships for the preset: the task-agnostic merge (``merge_task_agnostic``), or for
the task-conditioned ``mtl-lora`` its per-task merged encoders run one after another (``PerTaskModels``). Latency
is ``profile``'s median over timed iterations of that deployed model on the torch backend.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from torch import nn

from mtlora_deploy.compare.runs import LAST
from mtlora_deploy.compare.settings import CompareSettings, RowSpec, resolve_device
from mtlora_deploy.model.multitask import MultiTaskModel
from mtlora_deploy.model.params import count_parameters


def load_last(run_dir: Path) -> MultiTaskModel:
    """The run's final model (``checkpoints/last``: the same budget for every row, no selection on val)."""
    from mtlora_deploy import load

    return load(run_dir / LAST)


def deployed_model(model: MultiTaskModel) -> nn.Module:
    """The model as deployed: merged, or for ``mtl-lora`` the per-task merged models (one encoder per task)."""
    from mtlora_deploy.deploy.merge import merge_task_agnostic
    from mtlora_deploy.deploy.merge_mtl import PerTaskModels, needs_per_task_merge

    if needs_per_task_merge(model):
        return PerTaskModels.from_model(model)
    return merge_task_agnostic(model)


def evaluate_model(model: nn.Module, data_root: str, settings: CompareSettings) -> dict[str, Any]:
    """Metrics of ``model`` on the val split of ``data_root`` (used when the run's own final validation is gone)."""
    from mtlora_deploy.trainer.evaluation import eval_dataset, evaluate_dataset

    config, device = model.config, resolve_device(settings.device)
    dataset = eval_dataset(data_root, "val", config.tasks, config.image_size)
    return evaluate_dataset(
        model.to(device).eval(),
        dataset,
        config.tasks,
        settings.batch_size,
        device,
        num_classes=config.num_classes or None,
    )


def measure_latency(name: str, model: nn.Module, settings: CompareSettings) -> dict[str, float]:
    """Latency statistics (ms) of ``model`` at the latency batch size, through ``run_profile``."""
    from mtlora_deploy.profile.api import run_profile

    report = run_profile(
        [(name, model)],
        backends=["torch"],
        batches=[settings.latency_batch],
        iterations=settings.latency_iterations,
        warmup=settings.latency_warmup,
        duration=0.0,
        rounds=min(10, max(2, settings.latency_iterations)),
        device=resolve_device(settings.device),
        comparisons=(),
        threads=settings.threads,
        seed=settings.seed,
    )
    return dict(report["measurements"][0]["latency_ms"])


def row_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The parts of an evaluation result a row keeps: primary and all metrics per task (JSON-safe floats)."""

    def clean(value: float) -> float | None:
        return float(value) if math.isfinite(float(value)) else None

    metrics = {t: {k: clean(v) for k, v in values.items()} for t, values in result["metrics"].items()}
    return {"primary": {t: clean(v) for t, v in result["primary"].items()}, "metrics": metrics}


def measure_row(
    row: RowSpec, run_dir: Path, settings: CompareSettings, data_root: str, fit_result: dict[str, Any] | None
) -> dict[str, Any]:
    """Everything the table shows for one row, from its run folder (and the fresh validation when it just trained)."""
    model = load_last(run_dir)
    params = count_parameters(model)
    deployed = deployed_model(model)
    evaluation = fit_result if fit_result and "primary" in fit_result else evaluate_model(model, data_root, settings)
    return {
        "name": row.name,
        "preset": row.preset,
        "task": row.task,
        "run_dir": str(run_dir),
        "tasks": list(model.tasks),
        "adapter": model.config.adapter,
        **row_metrics(evaluation),
        "trainable_params": params.trainable_params,
        "total_params": params.total_params,
        "deployed_params": count_parameters(deployed).total_params,
        "latency_ms": measure_latency(row.name, deployed, settings),
        "latency_settings": settings.latency_settings(),
    }
