"""ONNX export of the merged model (docs/deploy.md, "Export"): one graph, input ``image``, one output per task.

The torch.export-based exporter is the default (folded graph, LayerNormalization native, no Roll); the
TorchScript exporter remains behind ``legacy=True``. The file is written through a temporary path and renamed
only after every check passed, so a failed export leaves nothing at the output path.
"""

from __future__ import annotations

import collections
import contextlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch
from torch import nn

from mtlora_deploy.deploy.graph_passes import simplify_graph
from mtlora_deploy.deploy.merge import build_merged, merge_task_agnostic
from mtlora_deploy.deploy.merge_mtl import PerTaskModels
from mtlora_deploy.deploy.metadata import attach_metadata, build_metadata
from mtlora_deploy.deploy.onnx_checks import (
    ExportCheckError,
    TaskParity,
    check_onnx_model,
    check_tensorrt_ops,
    compare_with_onnxruntime,
    raise_on_parity_failure,
)
from mtlora_deploy.deploy.postprocess import ExportHead
from mtlora_deploy.errors import ConfigError, WeightsError
from mtlora_deploy.model.checkpoint import load_checkpoint
from mtlora_deploy.model.config import ModelConfig, check_window_tiling
from mtlora_deploy.model.multitask import MultiTaskModel
from mtlora_deploy.model.state_io import load_state_strict
from mtlora_deploy.utils.atomic import atomic_path
from mtlora_deploy.utils.noise import quiet_known_noise

LEGACY_OPSET = 17
SINGLE_FILE_LIMIT = 2**31 - 64 * 2**20  # protobuf's 2 GB, less room for the graph itself
# Nodes per Swin block and per task-stage pair after clean-up are about 40-55; above this a regression is likely.
NODES_PER_BLOCK, NODES_PER_TASK_STAGE, NODES_BASE = 80, 40, 100


@dataclass
class ExportReport:
    """What ``export_onnx`` wrote and measured (``parity`` is empty when checks were skipped)."""

    path: Path
    node_count: int
    op_types: dict[str, int]
    parity: list[TaskParity]
    seconds: float
    exporter: str
    opset: int
    image_size: int
    outputs: str
    tasks: tuple[str, ...]
    file_bytes: int
    warnings: list[str] = field(default_factory=list)


def resolve_model(source: str | Path | nn.Module) -> tuple[MultiTaskModel | PerTaskModels, str]:
    """A merged, eval-mode copy of a model or of the checkpoint/run folder at ``source``, and a name for it.

    ``PerTaskModels`` (the ``mtl-lora`` per-task merged encoders, already merged) is taken as it is.
    """
    if isinstance(source, PerTaskModels):
        return source.eval(), f"<in-memory {type(source).__name__}>"
    if isinstance(source, nn.Module):
        if not isinstance(source, MultiTaskModel):
            raise ConfigError(f"export: expected a MultiTaskModel, got {type(source).__name__}")
        return merge_task_agnostic(source), f"<in-memory {type(source).__name__}>"
    path = Path(source)
    if path.suffix == ".onnx":
        raise ConfigError(f"{path}: already an ONNX file; export takes a checkpoint, run folder or merged folder")
    if not path.exists():
        raise WeightsError(f"{path}: checkpoint does not exist (expected a run folder, checkpoint or merged folder)")
    model = load_checkpoint(path)  # every kind: this package's merge module registers "merged"
    if not isinstance(model, MultiTaskModel):
        raise WeightsError(f"{path}: expected a multi-task model checkpoint, got {type(model).__name__}")
    return merge_task_agnostic(model), str(path)


def resize_model(model: MultiTaskModel, image_size: int | None) -> MultiTaskModel:
    """The merged model rebuilt at ``image_size`` from ``config.replace(image_size=...)`` with the same tensors."""
    size = model.config.image_size if image_size is None else int(image_size)
    check_window_tiling(model.config, size)
    if size == model.config.image_size:
        return model
    config = model.config.replace(image_size=size)
    resized = build_merged(config)
    load_state_strict(resized, model.state_dict(), f"`image_size` {image_size}")
    return resized.eval().requires_grad_(False)


def _quiet():
    """The exporters print progress lines and warnings of their own; the CLI prints its own summary."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(quiet_known_noise())
    return stack


def _export_dynamo(head: nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    from onnxscript import ir

    batch = torch.export.Dim("batch", min=1)
    with _quiet():
        program = torch.onnx.export(
            head,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=["image"],
            output_names=list(head.tasks),
            dynamic_shapes={"image": {0: batch}},
            external_data=False,
            optimize=False,
            verify=False,
        )
        simplify_graph(program.model)
    return ir.serde.serialize_model(program.model)


def _export_legacy(head: nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    buffer = io.BytesIO()
    axes = {name: {0: "batch"} for name in ("image", *head.tasks)}
    with _quiet():
        torch.onnx.export(
            head,
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=["image"],
            output_names=list(head.tasks),
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    return onnx.load_from_string(buffer.getvalue())


def export_graph(head: nn.Module, example: torch.Tensor, opset: int, exporter: str) -> onnx.ModelProto:
    """Run one exporter on ``head`` (``forward(image)`` -> one tensor per name in ``head.tasks``, batch dynamic).

    Its failures become one line that suggests the other exporter (the cause is chained to it). The parameters
    of ``head`` must not require grad: torch.export then traces a training graph whose SDPA decomposition fails.
    """
    try:
        return (_export_legacy if exporter == "torchscript" else _export_dynamo)(head, example, opset)
    except Exception as exc:  # any exporter failure is reported the same way
        other = "the default exporter" if exporter == "torchscript" else "`legacy`"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportCheckError(
            f"{exporter} export failed: {first[:300]}; try {other}, or `debug` for the traceback"
        ) from exc


def node_budget(config: ModelConfig) -> int:
    """A generous node count for the clean graph of ``config``; exceeding it flags an exporter regression."""
    blocks, stages = sum(config.arch["depths"]), len(config.arch["depths"])
    return NODES_BASE + NODES_PER_BLOCK * blocks + NODES_PER_TASK_STAGE * stages * len(config.tasks)


def check_opset(opset: int, legacy: bool) -> None:
    """torch.export's exporter starts at opset 18; below 17 LayerNormalization would be decomposed."""
    low = LEGACY_OPSET if legacy else 18
    if opset < low:
        hint = "" if legacy else " (or `legacy` for opset 17)"
        raise ConfigError(
            f"got {opset}, expected >= {low} with the {'TorchScript' if legacy else 'torch.export'} exporter{hint}",
            field="opset",
        )


def _check_size(model: nn.Module) -> None:
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    if size > SINGLE_FILE_LIMIT:
        raise ConfigError(f"model weights are {size / 2**30:.1f} GiB; a single-file ONNX holds at most 2 GB")


def _output_dtypes(model: onnx.ModelProto) -> dict[str, str]:
    return {o.name: onnx.helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type).name for o in model.graph.output}


def export_onnx(
    source: str | Path | nn.Module,
    output: str | Path,
    image_size: int | None = None,
    outputs: str = "logits",
    opset: int | None = None,
    check: bool = True,
    legacy: bool = False,
    rtol: float = 1e-4,
    check_batch: int = 2,
    seed: int = 0,
    source_name: str | None = None,
) -> ExportReport:
    """Export the merged model to one ONNX file with metadata, checked and written atomically.

    Args:
        source: a MultiTaskModel (merged or not), or a checkpoint / run folder / merged folder.
        output: the ``.onnx`` path to write.
        image_size: static H = W of the graph (default: the config's); the model is rebuilt at that size.
        outputs: ``logits`` or ``labels`` (in-graph argmax / sigmoid / normalisation).
        opset: ONNX opset (default 18 for torch.export, 17 for the TorchScript exporter).
        check: run onnx.checker, the TensorRT op check and the ONNX Runtime parity check.
        legacy: use the TorchScript exporter (``dynamo=False``) instead of torch.export.
        rtol: tolerance on max|ort - torch| / max|torch| per float output.
        check_batch: batch size of the example input the graph is traced with; parity runs at check_batch + 1.
        source_name: what the metadata names as the source (default: the path, or ``<in-memory ...>``).

    Raises:
        ConfigError, WeightsError: bad source, image size or option.
        ExportCheckError: the graph failed a check (nothing is left at ``output``).

    A multi-task ``mtl-lora`` model has no single merged graph: ``export_mtl.export_per_task`` writes one per task.
    """
    start = time.perf_counter()
    opset = opset if opset is not None else (LEGACY_OPSET if legacy else 18)
    check_opset(opset, legacy)
    model, resolved_name = resolve_model(source)
    source_name = source_name or resolved_name
    model = resize_model(model, image_size)
    _check_size(model)
    head = ExportHead(model, outputs).eval()
    size = model.config.image_size
    images = torch.randn(check_batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    exporter = "torchscript" if legacy else "torch.export"
    proto = export_graph(head, images, opset, exporter)
    attach_metadata(proto, build_metadata(model.config, outputs, source_name, exporter, opset, _output_dtypes(proto)))
    report = ExportReport(
        path=Path(output),
        node_count=len(proto.graph.node),
        op_types=dict(collections.Counter(n.op_type for n in proto.graph.node)),
        parity=[],
        seconds=0.0,
        exporter=exporter,
        opset=opset,
        image_size=size,
        outputs=outputs,
        tasks=head.tasks,
        file_bytes=0,
    )
    with atomic_path(output) as tmp:
        onnx.save_model(proto, str(tmp))
        if check:  # parity at another batch than the example's: the graph's batch axis must really be dynamic
            checked = torch.randn(check_batch + 1, 3, size, size, generator=torch.Generator().manual_seed(seed + 1))
            _run_checks(proto, tmp, head, checked, rtol, report)
        report.file_bytes = tmp.stat().st_size
    report.seconds = time.perf_counter() - start
    return report


def _run_checks(
    proto: onnx.ModelProto, path: Path, head: ExportHead, images: torch.Tensor, rtol: float, report: ExportReport
) -> None:
    check_onnx_model(proto)
    check_tensorrt_ops(proto)
    report.parity = compare_with_onnxruntime(path, head, head.tasks, images, rtol=rtol)
    raise_on_parity_failure(report.parity)
    encoders = len(head.tasks) if isinstance(head.model, PerTaskModels) else 1
    budget = encoders * node_budget(head.model.config)
    if report.node_count > budget:
        report.warnings.append(
            f"{report.node_count} nodes, above the expected {budget} for this model "
            f"({report.exporter}); the exporter may have stopped folding something"
        )


__all__ = [
    "ExportCheckError",
    "ExportReport",
    "check_window_tiling",
    "export_graph",
    "export_onnx",
    "resize_model",
    "resolve_model",
]
