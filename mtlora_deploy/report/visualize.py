"""Per-task visualisations of model outputs as RGB uint8 arrays, and a panel: the photo, the segmentation laid over
it, one titled picture per task and a colour legend of the classes present."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from mtlora_deploy.trainer.data.layout import HUMAN_PART_CLASSES
from mtlora_deploy.trainer.data.synthetic import VOC_CLASSES

CLASS_NAMES: Mapping[str, Sequence[str]] = {"semseg": VOC_CLASSES, "human_parts": HUMAN_PART_CLASSES}
TITLE_HEIGHT, SWATCH, GAP = 14, 10, 4
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def voc_palette(num_classes: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved), (num_classes, 3) uint8."""
    palette = np.zeros((num_classes, 3), dtype=np.uint8)
    for index in range(num_classes):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((value >> 0) & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[index] = (r, g, b)
    return palette


def colorize_labels(labels: np.ndarray) -> np.ndarray:
    """(H, W) integer labels -> (H, W, 3) VOC colours."""
    return voc_palette()[np.clip(labels, 0, 255).astype(np.int64)]


def grey(values: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) grey."""
    return np.repeat((np.clip(values, 0, 1) * 255).round().astype(np.uint8)[..., None], 3, axis=-1)


def normals_rgb(normals: np.ndarray) -> np.ndarray:
    """(3, H, W) vectors -> unit length -> (H, W, 3) with rgb = (n + 1) / 2 * 255."""
    unit = normals / np.maximum(np.linalg.norm(normals, axis=0, keepdims=True), 1e-12)
    return ((unit.transpose(1, 2, 0) + 1) / 2 * 255).round().clip(0, 255).astype(np.uint8)


def visualize_output(task: str, output: torch.Tensor) -> np.ndarray:
    """One image's output (C, H, W) logits, or labels/probabilities from a labels-mode graph -> RGB."""
    array = output.detach().float().cpu().numpy()
    if task in ("semseg", "human_parts"):
        labels = array[0] if array.shape[0] == 1 or array.ndim == 2 else array.argmax(0)
        return colorize_labels(labels if labels.ndim == 2 else labels.squeeze())
    if task in ("sal", "edge"):
        values = array.reshape(array.shape[-2:])
        probabilities = values if values.min() >= 0 and values.max() <= 1 else 1 / (1 + np.exp(-values))
        return grey(probabilities)
    return normals_rgb(array)


def side_by_side(images: list[np.ndarray], titles: Sequence[str] | None = None) -> np.ndarray:
    """Concatenate RGB arrays of equal height horizontally with a 4-pixel white gap; with ``titles``, each picture
    gets its title written in a white strip above it."""
    if titles is not None:
        images = [titled(image, title) for image, title in zip(images, titles, strict=True)]
    gap = np.full((images[0].shape[0], GAP, 3), 255, dtype=np.uint8)
    parts = []
    for index, image in enumerate(images):
        parts += [image] if index == 0 else [gap, image]
    return np.concatenate(parts, axis=1)


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
    """``text``, shortened with an ellipsis until it fits ``width`` pixels."""
    font = _font()
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..." if text else ""


def titled(image: np.ndarray, title: str) -> np.ndarray:
    """``image`` under a white strip with ``title`` in black (shortened to the image's width)."""
    strip = Image.new("RGB", (image.shape[1], TITLE_HEIGHT), WHITE)
    draw = ImageDraw.Draw(strip)
    draw.text((2, 1), _fit(draw, title, image.shape[1] - 4), fill=BLACK, font=_font())
    return np.concatenate([np.asarray(strip), image], axis=0)


def classes_present(view: np.ndarray) -> list[int]:
    """The class ids a colourised label map shows (the VOC palette gives every id its own colour), in id order."""
    palette = voc_palette()
    colours = np.unique(view.reshape(-1, 3), axis=0)
    lookup = {tuple(int(c) for c in colour): index for index, colour in enumerate(palette)}
    return sorted(lookup[tuple(int(c) for c in colour)] for colour in colours if tuple(colour) in lookup)


def legend(entries: Sequence[tuple[tuple[int, int, int], str]], width: int) -> np.ndarray:
    """A white strip ``width`` wide of colour swatches with their names, wrapped into as many rows as needed."""
    font, probe = _font(), ImageDraw.Draw(Image.new("RGB", (1, 1)))
    rows: list[list[tuple[tuple[int, int, int], str, int]]] = [[]]
    used = GAP
    for colour, name in entries:
        item = SWATCH + 3 + int(probe.textlength(name, font=font)) + 2 * GAP
        if rows[-1] and used + item > width:
            rows.append([])
            used = GAP
        rows[-1].append((colour, name, used))
        used += item
    strip = Image.new("RGB", (width, len(rows) * TITLE_HEIGHT + GAP), WHITE)
    draw = ImageDraw.Draw(strip)
    for row, items in enumerate(rows):
        top = GAP + row * TITLE_HEIGHT
        for colour, name, left in items:
            draw.rectangle((left, top, left + SWATCH, top + SWATCH), fill=tuple(colour), outline=BLACK)
            draw.text((left + SWATCH + 3, top - 1), name, fill=BLACK, font=font)
    return np.asarray(strip)


def overlay(photo: np.ndarray, view: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A colourised label map blended over the photo; background (class 0, black) leaves the photo as it is."""
    foreground = view.any(axis=-1, keepdims=True)
    blended = (1 - alpha) * photo.astype(np.float32) + alpha * view.astype(np.float32)
    return np.where(foreground, blended.round().clip(0, 255), photo).astype(np.uint8)


def task_panel(photo: np.ndarray, views: Mapping[str, np.ndarray], alpha: float = 0.5) -> np.ndarray:
    """The panel of one image: the photo, the first segmentation task laid over it, each task's picture titled
    with its name, and a legend of the classes present in the segmentation pictures (name per colour).

    Args:
        photo: the input image, RGB uint8 (H, W, 3).
        views: task -> its picture (:func:`visualize_output`), each (H, W, 3) like ``photo``.
        alpha: weight of the segmentation colours over the photo.
    """
    segmentation = [task for task in views if task in CLASS_NAMES]
    pictures, titles = [photo], ["input"]
    if segmentation:
        pictures.append(overlay(photo, views[segmentation[0]], alpha))
        titles.append(f"{segmentation[0]} on input")
    pictures += list(views.values())
    titles += list(views)
    panel = side_by_side(pictures, titles)
    entries = []
    palette = voc_palette()
    for task in segmentation:
        names = CLASS_NAMES[task]
        for index in classes_present(views[task]):
            name = names[index] if index < len(names) else str(index)
            entries.append(
                (tuple(int(c) for c in palette[index]), f"{name}" if len(segmentation) == 1 else f"{task}: {name}")
            )
    if not entries:
        return panel
    return np.concatenate([panel, legend(entries, panel.shape[1])], axis=0)
