"""Reference PASCAL-MT transforms (flip, scale-and-rotate, fixed resize, ignore regions, normalise).

They follow the cv2 recipe of the reference code with torch ops (cv2 is not a dependency): bicubic
(a = -0.75) for the image and normals, nearest for label maps, half-pixel centres, zero border.
Randomness comes only from the ``numpy.random.Generator`` passed in.

Samples enter as the readers' numpy dict (``image`` uint8 ``[H, W, 3]``, label maps ``[H, W]``,
``normals`` float ``[H, W, 3]`` with 255 = ignore) and leave as tensors at ``size x size``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from mtlora_deploy.trainer.data.layout import IGNORE_INDEX
from mtlora_deploy.utils.normalization import IMAGENET_MEAN, IMAGENET_STD

ROTATION_RANGE = (-20.0, 20.0)
SCALE_RANGE = (0.75, 1.25)
MIN_NORMAL_LENGTH = 1e-6
CUBIC_KEYS = ("image", "normals")  # continuous maps; everything else is a label map (nearest)
LONG_KEYS = ("semseg", "human_parts")
Planes = dict[str, torch.Tensor]  # key -> float32 [C, H, W]
PlaneOp = Callable[[torch.Tensor], torch.Tensor]  # [1, C, H, W] -> [1, C, H', W']


def as_generator(rng: np.random.Generator | int) -> np.random.Generator:
    """Accept a Generator or a seed, so callers never touch the global RNG."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def to_planes(sample: dict[str, np.ndarray]) -> Planes:
    """numpy ``[H, W(, C)]`` arrays -> float32 ``[C, H, W]`` tensors; normals' 255 ignore becomes 0 (zero length)."""
    planes: Planes = {}
    for key, array in sample.items():
        value = np.asarray(array, dtype=np.float32)
        if key == "normals":
            value = np.where((value == IGNORE_INDEX).all(axis=-1, keepdims=True), np.float32(0), value)
        value = value[None] if value.ndim == 2 else value.transpose(2, 0, 1)
        planes[key] = torch.from_numpy(np.ascontiguousarray(value))
    return planes


def hflip(planes: Planes) -> Planes:
    """Mirror every map left-right; the normals' x component changes sign."""
    out = {key: torch.flip(value, dims=[-1]) for key, value in planes.items()}
    if "normals" in out:
        out["normals"][0] = -out["normals"][0]
    return out


def rotation_matrix(angle_deg: float, scale: float, height: int, width: int) -> np.ndarray:
    """The 2x3 forward map of ``cv2.getRotationMatrix2D((w/2, h/2), angle, scale)`` (counter-clockwise)."""
    a = scale * math.cos(math.radians(angle_deg))
    b = scale * math.sin(math.radians(angle_deg))
    cx, cy = width / 2.0, height / 2.0
    return np.array([[a, b, (1 - a) * cx - b * cy], [-b, a, b * cx + (1 - a) * cy]], dtype=np.float64)


def _sampling_grid(matrix: np.ndarray, height: int, width: int) -> torch.Tensor:
    """``grid_sample`` grid ``[1, H, W, 2]`` that pulls each output pixel from ``matrix^-1`` of it."""
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    ys, xs = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    src_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    src_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    grid = np.stack([(2 * src_x + 1) / width - 1, (2 * src_y + 1) / height - 1], axis=-1)
    return torch.from_numpy(grid.astype(np.float32))[None]


def rotate_normals(normals: torch.Tensor, angle_deg: float) -> torch.Tensor:
    """Turn the in-plane (x, y) part of ``[3, H, W]`` normals with the image (the reference's formula)."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    x, y = normals[0], normals[1]
    return torch.stack([c * x + s * y, c * y - s * x, normals[2]])


def _apply_grouped(planes: Planes, op_cubic: PlaneOp, op_nearest: PlaneOp) -> Planes:
    """Run one op over all cubic maps and one over all label maps, each stacked along channels."""
    out: Planes = {}
    for keys, op in (
        (tuple(k for k in planes if k in CUBIC_KEYS), op_cubic),
        (tuple(k for k in planes if k not in CUBIC_KEYS), op_nearest),
    ):
        if not keys:
            continue
        stacked = op(torch.cat([planes[k] for k in keys])[None])[0]
        sizes = [planes[k].shape[0] for k in keys]
        out.update(zip(keys, torch.split(stacked, sizes), strict=True))
    return {key: out[key].contiguous() for key in planes}


def warp_affine(planes: Planes, angle_deg: float, scale: float) -> Planes:
    """Rotate by ``angle_deg`` and scale about the centre, same size, zero border (``cv2.warpAffine``)."""
    height, width = next(iter(planes.values())).shape[-2:]
    grid = _sampling_grid(rotation_matrix(angle_deg, scale, height, width), height, width)
    out = _apply_grouped(
        planes,
        lambda x: F.grid_sample(x, grid, mode="bicubic", padding_mode="zeros", align_corners=False),
        lambda x: F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False),
    )
    if "normals" in out:
        out["normals"] = rotate_normals(out["normals"], angle_deg)
    return out


def resize(planes: Planes, size: int) -> Planes:
    """Direct resize to ``size x size`` (no crop, no aspect preservation), like ``cv2.resize``."""
    return _apply_grouped(
        planes,
        lambda x: F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False),
        lambda x: F.interpolate(x, size=(size, size), mode="nearest"),
    )


def add_ignore_regions(planes: Planes) -> Planes:
    """Re-normalise normals, mark zero-length ones 255; a human_parts map without parts becomes all 255."""
    out = dict(planes)
    if "normals" in out:
        normals = out["normals"]
        norm = torch.linalg.vector_norm(normals, dim=0, keepdim=True)
        valid = norm > MIN_NORMAL_LENGTH  # "zero length" up to interpolation round-off, so kept ones are unit
        unit = normals / norm.clamp_min(MIN_NORMAL_LENGTH)
        out["normals"] = torch.where(valid, unit, torch.full_like(unit, IGNORE_INDEX))
    if "human_parts" in out:
        parts = out["human_parts"]
        if not bool(((parts > 0) & (parts < IGNORE_INDEX)).any()):
            out["human_parts"] = torch.full_like(parts, IGNORE_INDEX)
    return out


def normalize_image(image: torch.Tensor) -> torch.Tensor:
    """0..255 ``[3, H, W]`` -> ImageNet-standardised float32 (values clipped to the valid range first)."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image.clamp(0, 255) / 255.0 - mean) / std


def finalize(planes: Planes) -> dict[str, torch.Tensor]:
    """Ignore regions, image normalisation and the output dtypes/shapes of the dataset sample."""
    out = add_ignore_regions(planes)
    if "image" in out:
        out["image"] = normalize_image(out["image"])
    for key in LONG_KEYS:
        if key in out:
            out[key] = out[key][0].round().to(torch.int64)
    return out


def sample_affine(rng: np.random.Generator) -> tuple[float, float]:
    """Draw (angle in degrees, scale) uniformly from the reference ranges."""
    return float(rng.uniform(*ROTATION_RANGE)), float(rng.uniform(*SCALE_RANGE))


def train_transform(
    sample: dict[str, np.ndarray], rng: np.random.Generator | int, size: int = 448
) -> dict[str, torch.Tensor]:
    """Training augmentation: hflip p=0.5, one random scale+rotate, resize, ignore, normalise.

    Args:
        sample: the readers' numpy dict (any subset of image and task labels).
        rng: Generator (or seed) that owns all randomness of this call.
        size: output side ``S``; tensors come out ``[C, S, S]`` (semseg/human_parts ``[S, S]`` int64).
    """
    rng = as_generator(rng)
    planes = to_planes(sample)
    if rng.random() < 0.5:
        planes = hflip(planes)
    angle, scale = sample_affine(rng)
    planes = warp_affine(planes, angle, scale)
    return finalize(resize(planes, size))


def eval_transform(sample: dict[str, np.ndarray], size: int = 448) -> dict[str, torch.Tensor]:
    """Evaluation: resize image and labels to ``size x size`` (metrics are computed there), ignore, normalise."""
    return finalize(resize(to_planes(sample), size))
