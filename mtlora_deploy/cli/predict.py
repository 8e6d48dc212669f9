"""``mtlora predict``: per-task visualisations of images as PNG."""

from __future__ import annotations

import click

from mtlora_deploy.cli.options import LibraryDefault, given

PREDICT = "mtlora_deploy.report.predict:predict_images"  # the library call; its defaults are the options'


@click.command("predict")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--model", "-m", "model_path", required=True, type=click.Path(), help="Checkpoint, run folder, .onnx or plan."
)
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Folder for the PNG files.")
@click.option("--backend", cls=LibraryDefault, function=PREDICT, help="auto, torch, onnxruntime, tensorrt.")
@click.option("--device", cls=LibraryDefault, function=PREDICT, help="cpu or cuda[:N].")
def predict(images, model_path, output, backend, device) -> None:
    """Write colour segmentation maps, saliency, normals as RGB, edges and a side-by-side panel per image.

    Example: mtlora predict runs/demo/train/data/JPEGImages/synth_000000.jpg --model runs/demo/train -o runs/demo/predictions
    """
    from rich.console import Console

    from mtlora_deploy.cli.checks import check_model_input, check_output_dir
    from mtlora_deploy.report.predict import predict_images

    check_model_input(model_path, "--model")
    check_output_dir(output)
    panels = predict_images(model_path, list(images), output, **given(backend=backend, device=device))
    for panel in panels:
        Console().print(f"[green]wrote[/] {panel}")
