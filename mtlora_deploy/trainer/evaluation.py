"""Backend-agnostic evaluation: anything that maps images to ``{task: output}`` gets per-task metrics and delta-m."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from mtlora_deploy.trainer.delta import REFERENCE_SINGLE_TASK, multi_task_delta
from mtlora_deploy.trainer.distributed import DistContext, all_reduce_sum
from mtlora_deploy.trainer.metrics import build_metrics, lower_is_better_tasks, primary_values

Predictor = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]


def delta_for(primary: Mapping[str, float], baselines: Mapping[str, float]) -> float | None:
    """delta-m over the tasks that have a baseline and a finite metric; None when there is none."""
    usable = {t: v for t, v in primary.items() if t in baselines and math.isfinite(v)}
    if not usable:
        return None
    return multi_task_delta(usable, baselines, lower_is_better_tasks(list(usable)))


@torch.no_grad()
def evaluate_predictor(
    predict: Predictor,
    batches: Iterable[dict[str, Any]],
    tasks: tuple[str, ...],
    device: torch.device | str = "cpu",
    num_classes: Mapping[str, int] | None = None,
    baselines: Mapping[str, float] | None = None,
    context: DistContext | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run ``predict`` over ``batches`` and return metrics per task, primary metrics and delta-m.

    Args:
        predict: images (B, 3, H, W) on ``device`` -> ``{task: logits at H x W}`` (torch, ORT or TensorRT).
        batches: loader yielding the dataset's batch dicts.
        tasks: the tasks to score (each must be in every output and batch).
        baselines: single-task metrics for delta-m (the reference Swin-T numbers by default).
        context: when distributed, metric states are summed across ranks before computing.
        on_batch: called with the batch size after each batch (progress bars).
    """
    meters = build_metrics(tasks, num_classes)
    count = 0
    for batch in batches:
        images = batch["image"].to(device, non_blocking=True)
        outputs = predict(images)
        for task in tasks:
            meters[task].update(outputs[task].float(), batch[task].to(outputs[task].device))
        count += images.shape[0]
        if on_batch is not None:
            on_batch(images.shape[0])
    if context is not None and context.enabled:
        for meter in meters.values():
            meter.load_state_tensors(all_reduce_sum(meter.state_tensors(), context))
        count = int(all_reduce_sum([torch.tensor([count])], context)[0].item())
    results = {task: meter.compute() for task, meter in meters.items()}
    primary = primary_values(results)
    baselines = dict(REFERENCE_SINGLE_TASK if baselines is None else baselines)
    return {
        "metrics": results,
        "primary": primary,
        "delta_m": delta_for(primary, baselines),
        "baselines": {t: baselines[t] for t in tasks if t in baselines},
        "num_images": count,
    }
