"""``mtlora predict`` as a library call: images -> per-task PNGs and a panel, on any backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mtlora_deploy.errors import DataError
from mtlora_deploy.report.predict_inputs import check_images, output_names
from mtlora_deploy.report.visualize import task_panel, visualize_output
from mtlora_deploy.trainer.data import IMAGENET_MEAN, IMAGENET_STD
from mtlora_deploy.utils.atomic import atomic_path


def load_image(path: Path, size: int) -> tuple[np.ndarray, torch.Tensor]:
    """Read an RGB image, resize to size x size (bicubic, like the eval transform) and normalise."""
    try:
        rgb = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise DataError(f"image {path} could not be read ({type(exc).__name__}); expected a jpg/png file") from exc
    array = np.asarray(rgb)
    mean, std = np.asarray(IMAGENET_MEAN) * 255.0, np.asarray(IMAGENET_STD) * 255.0
    tensor = torch.from_numpy(((array - mean) / std).transpose(2, 0, 1).astype(np.float32))
    return array, tensor


def save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def predict_images(
    model_path: str | Path, images: list[str | Path], output: str | Path, backend: str = "auto", device: str = "cpu"
) -> list[Path]:
    """Write ``OUT/<image>_<task>.png`` for every task and ``OUT/<image>_panel.png``; returns the panels.

    All inputs are checked first; inputs with the same file name get their folders in the name (``a_cat``).
    """
    from mtlora_deploy.engines.registry import open_backend

    output, images = Path(output), [Path(p) for p in images]
    check_images(images)  # every input, before the first is written
    names = output_names(images)
    panels = []
    with open_backend(model_path, backend, device) as runner:
        for image_path, name in zip(images, names, strict=False):
            rgb, tensor = load_image(image_path, runner.image_size)
            outputs = runner.infer(tensor[None].to(runner.device))
            views = [visualize_output(task, outputs[task][0]) for task in runner.tasks]
            for task, view in zip(runner.tasks, views, strict=True):
                save_png(view, output / f"{name}_{task}.png")
            panels.append(output / f"{name}_panel.png")
            save_png(task_panel(rgb, dict(zip(runner.tasks, views, strict=True))), panels[-1])
    return panels
