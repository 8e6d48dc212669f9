"""ONNX export of the task-conditioned ``mtl-lora`` model (docs/mtl_lora.md, "Deployment").

Its encoder depends on the task, so the merged deployment is one encoder per task with ``W_t`` folded in. Two
layouts, both exact (each graph checked against PyTorch by ``export_onnx``):

- ``export_per_task``: one graph per task, ``NAME.<task>.onnx`` (what ``mtlora export`` writes). Each file is an
  ordinary single-task model; a server runs only the tasks it needs.
- ``export_one_graph``: the T per-task merged encoders in one graph, one output per task (``PerTaskModels``):
  one session for all tasks, T times the encoder weights, the encoders run one after another.

The batched unmerged model (images repeated T times, per-sample task ids) is not exported: it keeps the adapter
cost that merging removes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from mtlora_deploy.deploy.export import ExportReport, export_onnx, resize_model
from mtlora_deploy.deploy.merge_mtl import (
    TASK_CONDITIONED,
    PerTaskModels,
    is_task_conditioned,
    merge_per_task,
    needs_per_task_merge,
)
from mtlora_deploy.errors import ConfigError, WeightsError
from mtlora_deploy.model.checkpoint import load_checkpoint, read_checkpoint_info
from mtlora_deploy.model.multitask import MultiTaskModel


def per_task_path(output: str | Path, task: str) -> Path:
    """``model.onnx`` -> ``model.<task>.onnx`` (beside it)."""
    output = Path(output)
    suffix = output.suffix or ".onnx"
    stem = output.stem if output.suffix else output.name
    return output.with_name(f"{stem}.{task}{suffix}")


def needs_per_task_export(source: str | Path | nn.Module) -> bool:
    """True for an unmerged multi-task ``mtl-lora`` model or checkpoint (read from its JSON, no tensors loaded).

    Anything else (and a path that is not a readable checkpoint) is ``export_onnx``'s to handle or refuse.
    """
    if isinstance(source, nn.Module):
        return needs_per_task_merge(source)
    path = Path(source)
    if path.suffix == ".onnx" or not path.exists():
        return False
    try:
        info = read_checkpoint_info(path)
    except WeightsError:
        return False
    config = info.get("model_config", {})
    multi_task = len(config.get("tasks", ())) > 1
    return info.get("kind") != "merged" and config.get("adapter") == TASK_CONDITIONED and multi_task


def _load_task_conditioned(source: str | Path | nn.Module) -> tuple[MultiTaskModel, str]:
    if isinstance(source, nn.Module):
        model, name = source, f"<in-memory {type(source).__name__}>"
    else:
        if not Path(source).exists():
            raise WeightsError(f"{source}: checkpoint does not exist (expected a run folder or checkpoint)")
        model, name = load_checkpoint(source), str(source)
    if not isinstance(model, MultiTaskModel) or not is_task_conditioned(model):
        raise ConfigError(f"{name}: expected an unmerged {TASK_CONDITIONED} model to export per task")
    return model, name


def _chosen_tasks(model: MultiTaskModel, tasks: Sequence[str] | None) -> tuple[str, ...]:
    chosen = tuple(tasks) if tasks else model.tasks
    unknown = [t for t in chosen if t not in model.tasks]
    if unknown:
        raise ConfigError(f"got {','.join(unknown)}, expected a subset of {','.join(model.tasks)}", field="tasks")
    return chosen


def export_per_task(
    source: str | Path | nn.Module, output: str | Path, tasks: Sequence[str] | None = None, **options: Any
) -> dict[str, ExportReport]:
    """Merge per task and export each task's model to ``NAME.<task>.onnx``, every file checked like ``export_onnx``.

    Args:
        source: an unmerged ``mtl-lora`` model, run folder or checkpoint.
        output: the ``NAME.onnx`` path the per-task names derive from (it is not written itself).
        tasks: the tasks to export (default all).
        options: passed to ``export_onnx`` (image_size, outputs, opset, check, legacy, rtol, ...).

    Returns:
        ``{task: ExportReport}`` in task order.
    """
    model, name = _load_task_conditioned(source)
    return {
        task: export_onnx(
            merge_per_task(model, task), per_task_path(output, task), source_name=f"{name} [{task}]", **options
        )
        for task in _chosen_tasks(model, tasks)
    }


def export_one_graph(
    source: str | Path | nn.Module, output: str | Path, image_size: int | None = None, **options: Any
) -> ExportReport:
    """The T per-task merged encoders in one graph with one output per task (see the module docstring)."""
    model, name = _load_task_conditioned(source)
    per_task = {task: resize_model(merge_per_task(model, task), image_size) for task in model.tasks}
    size = next(iter(per_task.values())).config.image_size
    combined = PerTaskModels(model.config.replace(image_size=size, pretrained=None), per_task).eval()
    return export_onnx(
        combined, output, source_name=f"{name} [one graph, {len(per_task)} per-task encoders]", **options
    )
