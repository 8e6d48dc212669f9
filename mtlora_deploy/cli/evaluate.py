"""``mtlora evaluate``: per-task metrics and delta-m for a checkpoint, ONNX model or engine."""

from __future__ import annotations

import click

from mtlora_deploy.cli.options import parse_baselines


@click.command("evaluate")
@click.argument("model_path", type=click.Path())
@click.option("--data", required=True, help="PASCAL-MT root, or 'synthetic' (the set inside the run folder).")
@click.option("--split", default="val", show_default=True, help="Split file name under ImageSets/Context.")
@click.option(
    "--backend", default="auto", show_default=True, help="auto, torch, torch-compiled, onnxruntime, tensorrt."
)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--num-images", default=None, type=click.IntRange(min=1), help="Evaluate only the first N images.")
@click.option(
    "--baseline",
    "baseline_items",
    multiple=True,
    metavar="TASK=VALUE",
    help="Single-task metric for delta-m (default: the reference Swin-T numbers).",
)
@click.option("--output", "-o", default=None, type=click.Path(dir_okay=False), help="Write the result as JSON.")
def evaluate(model_path, data, split, backend, device, batch_size, num_images, baseline_items, output) -> None:
    """Score a checkpoint, run folder, ONNX file or TensorRT plan on a dataset split.

    Example: mtlora evaluate runs/demo/train --data synthetic --split val -o runs/demo/eval.json
    """
    from rich.console import Console

    from mtlora_deploy.trainer.evaluate_api import evaluate_artifact
    from mtlora_deploy.trainer.logging import metrics_table

    from mtlora_deploy.cli.checks import check_output_file

    console = Console()
    baselines = parse_baselines(baseline_items)
    if output:
        check_output_file(output)
    result = evaluate_artifact(
        model_path, data, split, backend, device, batch_size, num_images, baselines, output, console=console
    )
    console.print(metrics_table(result, f"{model_path} [{result['backend']['backend']}] on {split}"))
    if output:
        console.print(f"wrote {output}")
