"""Per-task visualisations of model outputs as RGB uint8 arrays, and a side-by-side panel."""

from __future__ import annotations

import numpy as np
import torch


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


def side_by_side(images: list[np.ndarray]) -> np.ndarray:
    """Concatenate RGB arrays of equal height horizontally with a 4-pixel white gap."""
    gap = np.full((images[0].shape[0], 4, 3), 255, dtype=np.uint8)
    parts = []
    for index, image in enumerate(images):
        parts += [image] if index == 0 else [gap, image]
    return np.concatenate(parts, axis=1)
