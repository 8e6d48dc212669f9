"""``mtlora predict``: per-task visualisations of images as PNG, locally or from a Triton server."""

from __future__ import annotations

import click

from mtlora_deploy.cli.options import LibraryDefault, given

PREDICT = "mtlora_deploy.report.predict:predict_images"  # the library call; its defaults are the options'


@click.command("predict")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--model", "-m", "model_path", type=click.Path(), help="Checkpoint, run folder, .onnx or plan.")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Folder for the PNG files.")
@click.option("--backend", cls=LibraryDefault, function=PREDICT, help="auto, torch, onnxruntime, tensorrt.")
@click.option("--device", cls=LibraryDefault, function=PREDICT, help="cpu or cuda[:N].")
@click.option(
    "--server", default=None, help="A Triton HTTP endpoint serving an export-triton repository (in place of --model)."
)
@click.option("--served-model", default=None, help="With --server: the ensemble [default: the only mtlora one served].")
def predict(images, model_path, output, backend, device, server, served_model) -> None:
    """Write colour segmentation maps, saliency, normals as RGB, edges and a side-by-side panel per image, each at
    the image's own size. IMAGES are files or folders (their image files). With --server the maps come from a Triton
    server (mtlora serve) and the pictures are the same as local ones.

    Example: mtlora predict runs/demo/train/data/JPEGImages/synth_000000.jpg --model runs/demo/train -o runs/demo/predictions
    """
    from rich.console import Console

    from mtlora_deploy.cli.checks import check_model_input, check_output_dir
    from mtlora_deploy.errors import ConfigError

    if (model_path is None) == (server is None):
        raise ConfigError("predict: give either --model MODEL (local) or --server URL (served), not both or neither")
    check_output_dir(output)
    if server is not None:
        from mtlora_deploy.serve.predict import predict_served

        panels = predict_served(server, list(images), output, served_model)
    else:
        from mtlora_deploy.report.predict import predict_images

        check_model_input(model_path, "--model")
        panels = predict_images(model_path, list(images), output, **given(backend=backend, device=device))
    for panel in panels:
        Console().print(f"[green]wrote[/] {panel}")
