"""``mtlora evaluate``: per-task metrics and delta-m for a checkpoint, ONNX model or engine."""

from __future__ import annotations

import click

from mtlora_deploy.cli.options import LibraryDefault, given, parse_baselines

EVALUATE = "mtlora_deploy.report.evaluate:evaluate_artifact"  # the library call; its defaults are the options'


@click.command("evaluate")
@click.argument("model_path", type=click.Path())
@click.option("--data", required=True, help="PASCAL-MT root, or 'synthetic' (the set inside the run folder).")
@click.option("--split", cls=LibraryDefault, function=EVALUATE, help="Split file name under ImageSets/Context.")
@click.option(
    "--backend", cls=LibraryDefault, function=EVALUATE, help="auto, torch, torch-compiled, onnxruntime, tensorrt."
)
@click.option("--device", cls=LibraryDefault, function=EVALUATE, help="cpu or cuda[:N].")
@click.option("--batch-size", cls=LibraryDefault, function=EVALUATE, type=click.IntRange(min=1))
@click.option("--num-images", default=None, type=click.IntRange(min=1), help="Evaluate only the first N images.")
@click.option(
    "--baseline",
    "baseline_items",
    multiple=True,
    metavar="TASK=VALUE",
    help="Single-task metric delta-m is measured against, reported as delta_m_vs_given [default: the single-task "
    "Swin-T reference of the MTLoRA paper on PASCAL-Context, reported as delta_m_vs_single_task_reference].",
)
@click.option("--output", "-o", default=None, type=click.Path(dir_okay=False), help="Write the result as JSON.")
def evaluate(model_path, data, split, backend, device, batch_size, num_images, baseline_items, output) -> None:
    """Score a checkpoint, run folder, ONNX file or TensorRT plan on a dataset split.

    Example: mtlora evaluate runs/demo/train --data synthetic --split val -o runs/demo/eval.json
    """
    from rich.console import Console

    from mtlora_deploy.cli.checks import check_output_file

    console = Console()
    baselines = parse_baselines(baseline_items)
    if output:
        check_output_file(output)
    from mtlora_deploy.report.evaluate import evaluate_artifact
    from mtlora_deploy.trainer.logging import metrics_table

    options = given(split=split, backend=backend, device=device, batch_size=batch_size, num_images=num_images)
    result = evaluate_artifact(model_path, data, baselines=baselines, output=output, console=console, **options)
    console.print(metrics_table(result, f"{model_path} [{result['backend']['backend']}] on {result['split']}"))
    if output:
        console.print(f"wrote {output}")
