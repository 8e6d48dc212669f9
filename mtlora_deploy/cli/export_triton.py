"""``mtlora export-triton``: a Triton model repository for an ONNX graph, a TensorRT plan or a run folder."""

from __future__ import annotations

import click


@click.command("export-triton")
@click.argument("model", type=click.Path())
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="The repository folder (new).")
@click.option("--name", default="mtlora", show_default=True, help="Ensemble name; the other models are NAME_*.")
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    default=None,
    help="max_batch_size [default: 8, or the plan's batch maximum].",
)
@click.option(
    "--instances",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Instances of each model (instance_group count).",
)
@click.option(
    "--max-queue-delay-us",
    type=click.IntRange(min=0),
    default=500,
    show_default=True,
    help="Dynamic batching: longest wait to fill a batch.",
)
@click.option("--ort-tensorrt-fp16", is_flag=True, help="ONNX on a GPU: ONNX Runtime's TensorRT accelerator in fp16.")
def export_triton(model, output, name, max_batch, instances, max_queue_delay_us, ort_tensorrt_fp16) -> None:
    """Write a Triton model repository: the model step (onnxruntime_onnx or tensorrt_plan, from the graph or the
    plan's manifest), a Python pre-step (encoded image or uint8 H x W x 3 -> model input) and post-step (per-task
    maps at the image's size), and the ensembles NAME (image bytes) and NAME_rgb (array). Every config.pbtxt is
    checked against Triton's schema. TensorRT-RTX plans are refused (no Triton backend loads them).

    Example: mtlora export-triton runs/demo/onnx/model.fp16.onnx -o runs/demo/triton_fp16
    """
    from rich.console import Console

    from mtlora_deploy.cli.checks import check_writable_parent
    from mtlora_deploy.serve.repository import RepositoryOptions, export_triton

    options = RepositoryOptions(name, max_batch, instances, max_queue_delay_us, ort_tensorrt_fp16)
    check_writable_parent(output, "-o/--output")
    report = export_triton(model, output, options)
    console = Console()
    for note in report.notes:
        console.print(f"[yellow]note[/] {note}")
    console.print(
        f"[green]wrote[/] {report.path}: {', '.join(report.models.values())} "
        f"({report.manifest['platform']}, max_batch_size {report.manifest['max_batch_size']}, "
        f"tasks {', '.join(report.manifest['tasks'])}); serve it with: mtlora serve {report.path}"
    )
