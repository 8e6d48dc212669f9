"""``mtlora make-dataset synthetic DIR``: the built-in synthetic PASCAL-MT set."""

from __future__ import annotations

import click


@click.command("make-dataset")
@click.argument("kind", type=click.Choice(["synthetic"]))
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "--images", default=200, show_default=True, type=click.IntRange(min=1), help="Number of images (train + val)."
)
@click.option(
    "--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Generation seed (same seed, same bytes)."
)
@click.option("--height", default=160, show_default=True, type=click.IntRange(min=32), help="Image height in pixels.")
@click.option("--width", default=192, show_default=True, type=click.IntRange(min=32), help="Image width in pixels.")
@click.option(
    "--val-fraction",
    default=0.25,
    show_default=True,
    type=click.FloatRange(min=0, max=1, max_open=True),
    help="Share of images in val.txt, in [0, 1).",
)
def make_dataset(kind, directory, images, seed, height, width, val_fraction) -> None:
    """Write a learnable synthetic dataset in exactly the PASCAL-MT layout and file formats.

    Example: mtlora make-dataset synthetic data/synthetic --images 200 --seed 0
    """
    from rich.console import Console

    from mtlora_deploy.cli.checks import check_output_dir
    from mtlora_deploy.trainer.data import make_synthetic_dataset

    check_output_dir(directory, "DIRECTORY")
    root = make_synthetic_dataset(
        directory, num_images=images, seed=seed, image_size=(height, width), val_fraction=val_fraction
    )
    Console().print(f"[green]wrote[/] {images} synthetic images to {root}")
