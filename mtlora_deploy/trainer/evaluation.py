"""Backend-agnostic evaluation, the one home of scoring: anything that maps images to ``{task: output}`` (a torch
model, an ONNX Runtime session, a TensorRT plan) gets per-task metrics and delta-m over a dataset split.

Training's validation, ``mtlora evaluate`` (``report.evaluate`` opens the artefact on its backend), the
trained-vs-untrained check (``compare.untrained``) and ``mtlora compare``'s rows all score through here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from mtlora_deploy.trainer.data import PascalMTDataset
from mtlora_deploy.trainer.data_setup import make_loader
from mtlora_deploy.trainer.delta import DeltaBaseline, as_baseline, multi_task_delta
from mtlora_deploy.trainer.distributed import DistContext, all_reduce_sum
from mtlora_deploy.trainer.metrics import build_metrics, lower_is_better_tasks, primary_values

Predictor = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]


def delta_for(primary: Mapping[str, float], baselines: Mapping[str, float]) -> float | None:
    """delta-m over the tasks that have a baseline and a finite metric; None when there is none."""
    usable = {t: v for t, v in primary.items() if t in baselines and math.isfinite(v)}
    if not usable:
        return None
    return multi_task_delta(usable, baselines, lower_is_better_tasks(list(usable)))


def attach_delta(result: dict[str, Any], baseline: DeltaBaseline) -> dict[str, Any]:
    """Set the result's one delta-m: ``delta_m_vs_<name>`` and ``delta_m_baseline`` (any earlier delta-m of the
    result is dropped, so a result never carries two unlabelled numbers)."""
    for key in [k for k in result if k.startswith("delta_m")] + ["baselines"]:
        result.pop(key, None)
    result[baseline.key] = delta_for(result["primary"], baseline.values)
    result["delta_m_baseline"] = baseline.to_dict(result["primary"])
    return result


@torch.no_grad()
def evaluate_predictor(
    predict: Predictor,
    batches: Iterable[dict[str, Any]],
    tasks: tuple[str, ...],
    device: torch.device | str = "cpu",
    num_classes: Mapping[str, int] | None = None,
    baselines: Mapping[str, float] | DeltaBaseline | None = None,
    context: DistContext | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run ``predict`` over ``batches`` and return metrics per task, primary metrics and delta-m
    (``delta_m_vs_<baseline>``, with ``delta_m_baseline`` saying what it is measured against).

    Args:
        predict: images (B, 3, H, W) on ``device`` -> ``{task: logits at H x W}`` (torch, ORT or TensorRT).
        batches: loader yielding the dataset's batch dicts.
        tasks: the tasks to score (each must be in every output and batch).
        baselines: what delta-m is measured against: a :class:`DeltaBaseline`, plain ``{task: value}`` single-task
            metrics (named ``given``), or None for the reference Swin-T numbers (``single_task_reference``).
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
    result = {"metrics": results, "primary": primary_values(results), "num_images": count}
    return attach_delta(result, as_baseline(baselines))


def eval_dataset(
    root: str | Path, split: str, tasks: Iterable[str], image_size: int, num_images: int | None = None
) -> Dataset:
    """``split`` of the dataset at ``root`` as evaluation reads it (eval transforms at ``image_size``); with
    ``num_images``, only its first ``num_images`` samples."""
    dataset = PascalMTDataset(root, split=split, tasks=tuple(tasks), image_size=image_size, train=False)
    if num_images is not None:
        return Subset(dataset, range(min(num_images, len(dataset))))
    return dataset


def evaluate_dataset(
    predict: Predictor,
    dataset: Dataset,
    tasks: tuple[str, ...],
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    workers: int | None = 0,
    num_classes: Mapping[str, int] | None = None,
    baselines: Mapping[str, float] | DeltaBaseline | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """:func:`evaluate_predictor` over ``dataset`` in order, ``batch_size`` images at a time (one process)."""
    loader = make_loader(dataset, None, batch_size, workers, False, device)
    return evaluate_predictor(
        predict, loader, tasks, device, num_classes=num_classes, baselines=baselines, on_batch=on_batch
    )
