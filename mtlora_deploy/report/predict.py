"""``mtlora predict`` as a library call: images -> per-task maps at each image's size -> PNGs and a panel.

The pre-step (any PIL mode -> normalised input) and the post-step (outputs -> maps at the image's size) are
``utils.imaging``, the file a Triton repository's Python steps run too, so ``predict --server`` draws the same
pictures from the served maps as this draws from local ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mtlora_deploy.deploy.postprocess import CLASS_TASKS, NORMAL_TASKS, SIGMOID_TASKS
from mtlora_deploy.errors import ConfigError, DataError
from mtlora_deploy.report.predict_inputs import check_images, collect_images, output_names
from mtlora_deploy.report.visualize import task_panel, visualize_output
from mtlora_deploy.utils import imaging
from mtlora_deploy.utils.atomic import atomic_path
from mtlora_deploy.utils.normalization import IMAGENET_MEAN, IMAGENET_STD


def map_kind(task: str) -> str:
    """``class``, ``sigmoid`` or ``normal``: what the post-step makes of the task's output (deploy's task groups)."""
    for tasks, kind in ((CLASS_TASKS, imaging.CLASS), (SIGMOID_TASKS, imaging.SIGMOID), (NORMAL_TASKS, imaging.NORMAL)):
        if task in tasks:
            return kind
    raise ConfigError(f"task {task!r} has no map defined; expected one of {CLASS_TASKS + SIGMOID_TASKS + NORMAL_TASKS}")


def graph_conventions(metadata: dict[str, Any]) -> dict[str, Any]:
    """The graph's output mode and input normalisation from its metadata (an ONNX graph's, or a plan manifest's copy
    of it); a torch model gives logits and uses the ImageNet statistics the toolkit trains with."""
    graph = metadata.get("onnx_metadata") or metadata.get("manifest", {}).get("onnx_metadata") or metadata
    return {
        "outputs": graph.get("outputs") or "logits",
        "mean": list(graph.get("mean") or IMAGENET_MEAN),
        "std": list(graph.get("std") or IMAGENET_STD),
    }


def read_rgb(path: Path) -> np.ndarray:
    """An image file in any PIL mode -> its upright RGB uint8 (H, W, 3), or a one-line DataError naming it."""
    try:
        return imaging.decode_image(path)
    except imaging.ImageError as exc:
        raise DataError(f"image {path} could not be read: {exc}") from exc


def predict_maps(runner, rgb: np.ndarray, conventions: dict[str, Any]) -> dict[str, np.ndarray]:
    """One RGB image -> ``{task: map}`` at the image's size (class ids, probability or unit normals)."""
    tensor = torch.from_numpy(imaging.preprocess(rgb, runner.image_size, conventions["mean"], conventions["std"]))
    outputs = runner.infer(tensor[None].to(runner.device))
    height, width = rgb.shape[:2]
    return {
        task: imaging.task_map(
            outputs[task][0].detach().cpu().numpy(), map_kind(task), conventions["outputs"], height, width
        )
        for task in runner.tasks
    }


def save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def write_pictures(rgb: np.ndarray, maps: dict[str, np.ndarray], output: Path, name: str) -> Path:
    """``OUT/<name>_<task>.png`` for every map and ``OUT/<name>_panel.png`` (input first); returns the panel."""
    views = {task: visualize_output(task, torch.from_numpy(m if m.ndim == 3 else m[None])) for task, m in maps.items()}
    for task, view in views.items():
        save_png(view, output / f"{name}_{task}.png")
    panel = output / f"{name}_panel.png"
    save_png(task_panel(rgb, views), panel)
    return panel


def predict_images(
    model_path: str | Path, images: list[str | Path], output: str | Path, backend: str = "auto", device: str = "cpu"
) -> list[Path]:
    """Write ``OUT/<image>_<task>.png`` for every task and ``OUT/<image>_panel.png``, at each image's size; returns
    the panels. ``images`` are files or folders (their image files, not recursively).

    All inputs are checked (decoded) first; inputs with the same file name get their folders in the name (``a_cat``).
    """
    from mtlora_deploy.engines.registry import open_backend

    output, images = Path(output), collect_images([Path(p) for p in images])
    check_images(images)  # every input, before the first is written
    names = output_names(images)
    panels = []
    with open_backend(model_path, backend, device) as runner:
        conventions = graph_conventions(runner.metadata)
        for image_path, name in zip(images, names, strict=True):
            rgb = read_rgb(image_path)
            panels.append(write_pictures(rgb, predict_maps(runner, rgb, conventions), output, name))
    return panels
