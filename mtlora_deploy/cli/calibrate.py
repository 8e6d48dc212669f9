"""``mtlora calibrate``: draw calibration images from a dataset split into an .npz (+ provenance JSON)."""

from __future__ import annotations

from pathlib import Path

import click

from mtlora_deploy.cli.options import image_size_option
from mtlora_deploy.errors import ConfigError


def model_input(model: str) -> tuple[str, int]:
    """(input name, image size) of an ONNX file, or ("image", config size) of a checkpoint / run folder."""
    path = Path(model)
    if path.suffix == ".onnx":
        import onnx

        from mtlora_deploy.calib.precision import graph_input

        return graph_input(onnx.load(str(path), load_external_data=False))
    from mtlora_deploy.model.checkpoint import read_checkpoint_info

    return "image", int(read_checkpoint_info(path)["model_config"]["image_size"])


@click.command("calibrate")
@click.option(
    "--data",
    required=True,
    help="PASCAL-MT root, or 'synthetic': the set inside the run folder around --model (or -o).",
)
@click.option("--split", default="train", show_default=True, help="Split to draw from (never the one you evaluate on).")
@click.option(
    "--num-images",
    default=500,
    show_default=True,
    type=click.IntRange(min=1),
    help="Images to draw (TensorRT: >= 500).",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Same seed and split: same ids and same bytes.",
)
@image_size_option("Model input side [default: from --model, else 448].")
@click.option("--model", default=None, type=click.Path(), help="ONNX file or checkpoint giving input name/size.")
@click.option("--input-name", default=None, help="Key of the array in the .npz [default: from --model, else image].")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="The .npz to write.")
def calibrate(data, split, num_images, seed, image_size, model, input_name, output) -> None:
    """Draw a deterministic calibration set (reference eval transform) for int8 and fp16 range checks.

    Writes OUTPUT (.npz keyed by the model's input name, float32 N x 3 x S x S) and OUTPUT with a .json
    suffix recording dataset root, split, ids, seed, transform, size and the array's sha256.

    Example: mtlora calibrate --data runs/demo/train/data --model runs/demo/onnx/model.fp32.onnx --num-images 32 -o runs/demo/calib/train32.npz
    """
    from rich.console import Console

    from mtlora_deploy.calib.dataset import draw_calibration_set
    from mtlora_deploy.cli.checks import check_output_file
    from mtlora_deploy.report.evaluate import resolve_eval_data

    check_output_file(output)
    name, size = model_input(model) if model else ("image", 448)
    if image_size is not None and model and image_size != size:
        raise ConfigError(f"--image-size {image_size} disagrees with --model {model}, which takes {size}; drop one")
    root = resolve_eval_data(data, Path(model or output).resolve())
    path = draw_calibration_set(root, split, num_images, image_size or size, seed, output, input_name or name)
    provenance = path.with_suffix(".json").name
    Console().print(f"[green]wrote[/] {num_images} {split} images of {root} to {path} (+ {provenance})")
