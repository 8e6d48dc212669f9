"""The image pre-step and the per-task post-step, in numpy and PIL only: one file for local and served inference.

``mtlora predict`` runs these functions in the toolkit; ``mtlora export-triton`` copies this very file beside the
Python-backend pre- and post-step models of a Triton repository (a Triton container has no mtlora_deploy), so a
served answer is computed by the same code as a local one. It therefore imports nothing from the toolkit, and its
errors are :class:`ImageError` (a ``ValueError``) that each caller words for its user.

Pre-step: encoded bytes, a file or a uint8 array of any size and PIL mode -> 8-bit RGB (H, W, 3) -> bicubic resize
to the model's square input -> normalised (3, S, S). Post-step: one image's output of one task (C, h, w), logits or
the labels-mode output of ``mtlora export --outputs labels`` -> the map at the input's size: class ids (uint8,
(H, W)), a probability (float32, (H, W)) or unit normals (float32, (3, H, W)); logits are resized bilinearly before
the argmax / sigmoid / normalisation, as evaluation upsamples them.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

CLASS, SIGMOID, NORMAL = "class", "sigmoid", "normal"  # what a task's output is (the toolkit says which task is what)
MAP_KINDS = (CLASS, SIGMOID, NORMAL)
ALPHA_BACKGROUND = (255, 255, 255)  # transparent pixels are composited onto white
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


class ImageError(ValueError):
    """An input that is not an image, or one whose pixels have no defined 8-bit RGB meaning."""


def open_image(source) -> Image.Image:
    """A file path or the encoded bytes of an image file -> a PIL image turned upright by its EXIF orientation."""
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        image.load()
    except UnidentifiedImageError as exc:
        raise ImageError("not a readable image: PIL cannot identify its format") from exc
    except (OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ImageError(f"not a readable image ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})") from exc
    if image.width < 1 or image.height < 1:
        raise ImageError(f"image of {image.width} x {image.height} pixels has no pixels")
    return ImageOps.exif_transpose(image)


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> uint8 (H, W, 3): alpha composited onto white, 16-bit scaled to 8 bits, CMYK/YCbCr/palette/
    grey/1-bit converted by PIL; 32-bit float and signed or >16-bit integer pixels are refused (no defined range)."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8).copy()
    if mode in _SIXTEEN_BIT or mode == "I":
        return _grey16_to_rgb(np.asarray(image), mode)
    if mode == "F":
        raise ImageError("32-bit float pixels (PIL mode F) have no defined 8-bit range; save the image as 8 or 16 bit")
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8).copy()
    try:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (ValueError, OSError) as exc:
        raise ImageError(f"PIL mode {mode} cannot be converted to RGB ({exc}); save the image as RGB") from exc


def _grey16_to_rgb(values: np.ndarray, mode: str) -> np.ndarray:
    """16-bit grey (0..65535) -> 8-bit by rounding value / 257; PIL's own conversion would clip at 255 (white)."""
    values = values.astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ImageError(
            f"PIL mode {mode} pixels span {values.min()}..{values.max()}, outside the 16-bit range 0..65535; "
            "save the image as 8 or 16 bit"
        )
    grey = ((values * 255 + 32767) // 65535).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def decode_image(source) -> np.ndarray:
    """Encoded bytes or a file path -> upright uint8 RGB (H, W, 3)."""
    return to_rgb(open_image(source))


def check_rgb_array(array: np.ndarray) -> np.ndarray:
    """A client's uint8 (H, W, 3) array, checked (the served ``_rgb`` entry point takes these)."""
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3 or 0 in array.shape:
        raise ImageError(f"expected a uint8 (H, W, 3) RGB array, got {array.dtype} {tuple(array.shape)}")
    return array


def preprocess(rgb: np.ndarray, size: int, mean, std, dtype: str = "float32") -> np.ndarray:
    """uint8 RGB (H, W, 3) -> the model input (3, size, size): bicubic resize, then (x - 255 mean) / (255 std)."""
    resized = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BICUBIC))
    mean, std = np.asarray(mean) * 255.0, np.asarray(std) * 255.0
    return ((resized - mean) / std).transpose(2, 0, 1).astype(dtype)


def resize_channels(array: np.ndarray, height: int, width: int, nearest: bool = False) -> np.ndarray:
    """(C, h, w) -> (C, height, width), each channel resized by PIL (bilinear on float32, or nearest)."""
    if array.shape[-2:] == (height, width):
        return np.array(array, dtype=np.float32)
    method = Image.NEAREST if nearest else Image.BILINEAR
    out = np.empty((len(array), height, width), dtype=np.float32)
    for index, channel in enumerate(array):
        image = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32), mode="F")
        out[index] = np.asarray(image.resize((width, height), method))
    return out


def _resized_argmax(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """``resize_channels(logits).argmax(0)`` one channel at a time (the first maximum wins, as in argmax): a
    (C, H, W) stack of resized logits is never built, which makes large outputs several times faster."""
    best = resize_channels(logits[:1], height, width)[0]
    labels = np.zeros((height, width), dtype=np.uint8)
    for index in range(1, len(logits)):
        channel = resize_channels(logits[index : index + 1], height, width)[0]
        better = channel > best
        labels[better] = index
        np.maximum(best, channel, out=best)
    return labels


def task_map(output: np.ndarray, kind: str, graph_outputs: str, height: int, width: int) -> np.ndarray:
    """One image's output of one task (C, h, w) -> its map at (height, width).

    Args:
        output: the graph's output for one image: logits (C, h, w), or with ``graph_outputs == "labels"`` class ids
            (1, h, w), a probability (1, h, w) or unit vectors (3, h, w).
        kind: ``class``, ``sigmoid`` or ``normal``.
        graph_outputs: ``logits`` or ``labels`` (the graph's ``mtlora.outputs`` metadata).
        height, width: the input image's size.

    Returns:
        uint8 (H, W) class ids, float32 (H, W) probability, or float32 (3, H, W) unit normals.
    """
    if kind not in MAP_KINDS:
        raise ImageError(f"unknown map kind {kind!r}; expected one of {', '.join(MAP_KINDS)}")
    output = np.asarray(output)
    if kind == CLASS:
        if graph_outputs == "labels":
            return resize_channels(output[:1], height, width, nearest=True)[0].astype(np.uint8)
        return _resized_argmax(output, height, width)
    resized = resize_channels(output, height, width)
    if kind == SIGMOID:
        if graph_outputs == "labels":
            return resized[0]
        with np.errstate(over="ignore"):
            return (1.0 / (1.0 + np.exp(-resized[0].astype(np.float64)))).astype(np.float32)
    norm = np.sqrt((resized.astype(np.float64) ** 2).sum(axis=0, keepdims=True))
    return (resized / np.maximum(norm, 1e-12)).astype(np.float32)
