"""A small, learnable PASCAL-MT look-alike written in EXACTLY the real layout and file formats.

Tests, the demo and CI cannot download PASCAL, so the same loader reads this instead. Each scene is
a textured two-region background (an upper and a lower context class) with a few class-coloured,
class-striped objects; people are drawn from PASCAL-Part parts. All labels derive from one scene
description, so they agree: semseg = object classes, saliency = objects, human parts = person
parts, normals = gradient of a height map (objects are domes on two planes) and shading of the
image follows them, LabelMap = context classes (some normals-valid, some not), edges = its borders.

Image ``i`` depends only on ``(seed, i)``; files are byte-identical for a seed.
"""

from __future__ import annotations

import colorsys
import functools
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image
from scipy import ndimage

from mtlora_deploy.errors import DataError, OutputError
from mtlora_deploy.trainer.data.layout import PERSON_CLASS_IND, SOURCES, PascalLayout
from mtlora_deploy.utils.atomic import describe_os_error, write_json_atomic

SYNTHETIC_VERSION = 1
MARKER = "synthetic.json"
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
# PASCAL-Context (459-class) index of each VOC class (the 59-class subset list); about half are normals-valid.
VOC_TO_CONTEXT = (0, 2, 23, 25, 31, 34, 45, 59, 65, 72, 98, 397, 113, 207, 258, 284, 308, 347, 368, 416, 427)
UPPER_CONTEXT = (360, 440, 44, 68)  # sky, wall, building, ceiling (wall and ceiling are normals-valid)
LOWER_CONTEXT = (158, 189, 187, 324)  # floor, ground, grass, road (floor is normals-valid)
ANIMALS = (3, 8, 10, 12, 13, 17)  # PASCAL-Part also annotates their parts; the loader must skip them
LIGHT = np.array([-0.4, -0.5, 0.77]) / np.linalg.norm([-0.4, -0.5, 0.77])
_SKIN, _TROUSERS, _SHOES = (1.1, 0.9, 0.75), (0.4, 0.45, 0.8), (0.2, 0.2, 0.2)
_PART_TINT = {  # multiplies the person colour, so parts look different as on real people
    **dict.fromkeys(("head", "neck", "lhand", "rhand"), _SKIN),
    **dict.fromkeys(("luleg", "ruleg", "llleg", "rlleg"), _TROUSERS),
    **dict.fromkeys(("lfoot", "rfoot"), _SHOES),
    **dict.fromkeys(("llarm", "rlarm"), (0.8, 0.8, 0.8)),
    "hair": (0.3, 0.25, 0.2),
}
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by mtlora_deploy synthetic"  # fixed: scipy's holds the date


@dataclass
class SceneObject:
    """One annotated object: VOC class, full mask, named part masks (PASCAL-Part names)."""

    class_ind: int
    mask: np.ndarray
    parts: list[tuple[str, np.ndarray]] = field(default_factory=list)


@dataclass
class Scene:
    """Everything one image's files are rendered from."""

    horizon: int
    upper_context: int
    lower_context: int
    objects: list[SceneObject]


def class_colour(class_ind: int) -> np.ndarray:
    """A fixed RGB colour in [0, 1] per VOC class (hue spread, two brightness levels) so it can be learnt."""
    hue = (class_ind * 7 % 20) / 20.0
    value = 0.95 if class_ind % 2 else 0.7
    return np.array(colorsys.hsv_to_rgb(hue, 0.75, value))


def class_stripes(class_ind: int, shape: tuple[int, int]) -> np.ndarray:
    """A class-specific stripe texture in [0, 1]: orientation and period depend on the class."""
    theta = np.pi / 4 * (class_ind % 4)
    period = 4.0 + 2.0 * (class_ind % 5)
    ys, xs = np.ogrid[: shape[0], : shape[1]]
    return 0.5 + 0.5 * np.sin(2 * np.pi * (xs * np.cos(theta) + ys * np.sin(theta)) / period)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int = 16) -> np.ndarray:
    """Low-frequency noise in [0, 1] (bilinear upsampling of a coarse random grid)."""
    coarse = rng.random((shape[0] // cell + 2, shape[1] // cell + 2))
    return ndimage.zoom(coarse, cell, order=1)[: shape[0], : shape[1]]


def _ellipse(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    ys, xs = np.ogrid[: shape[0], : shape[1]]
    return ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1.0


def _box(shape: tuple[int, int], top: float, left: float, height: float, width: float) -> np.ndarray:
    ys, xs = np.ogrid[: shape[0], : shape[1]]
    return (ys >= top) & (ys < top + height) & (xs >= left) & (xs < left + width)


def person_parts(shape: tuple[int, int], top: float, left: float, height: float) -> list[tuple[str, np.ndarray]]:
    """A standing figure as PASCAL-Part named masks (head, hair, neck, torso, arms, hands, legs, feet)."""
    u = height / 10.0  # one body unit; the figure is 10 units tall and 6 wide
    cx = left + 3 * u
    head = _ellipse(shape, top + u, cx, u, 0.9 * u)
    hair = head & _box(shape, top - u, left, 1.6 * u, 6 * u)
    parts = [("hair", hair), ("head", head & ~hair), ("neck", _box(shape, top + 2 * u, cx - 0.4 * u, 0.5 * u, 0.8 * u))]
    parts.append(("torso", _box(shape, top + 2.5 * u, cx - 1.2 * u, 3 * u, 2.4 * u)))
    for side, sign in (("l", 1), ("r", -1)):
        arm_left = cx + sign * 1.2 * u - (0 if sign > 0 else 0.7 * u)
        parts.append((f"{side}uarm", _box(shape, top + 2.5 * u, arm_left, 1.5 * u, 0.7 * u)))
        parts.append((f"{side}larm", _box(shape, top + 4 * u, arm_left, 1.3 * u, 0.7 * u)))
        parts.append((f"{side}hand", _box(shape, top + 5.3 * u, arm_left, 0.5 * u, 0.7 * u)))
        leg_left = cx + (0.1 * u if sign > 0 else -1.1 * u)
        parts.append((f"{side}uleg", _box(shape, top + 5.5 * u, leg_left, 2 * u, u)))
        parts.append((f"{side}lleg", _box(shape, top + 7.5 * u, leg_left, 1.8 * u, u)))
        parts.append((f"{side}foot", _box(shape, top + 9.3 * u, leg_left, 0.7 * u, u)))
    return [(name, mask) for name, mask in parts if mask.any()]


def _animal_parts(mask: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Head/torso parts of an animal: upper third is 'head' (names a careless loader would count)."""
    rows = np.nonzero(mask.any(axis=1))[0]
    cut = rows[0] + (rows[-1] - rows[0] + 1) // 3
    head = mask.copy()
    head[cut:] = False
    return [("head", head), ("torso", mask & ~head)]


def random_object(rng: np.random.Generator, shape: tuple[int, int]) -> SceneObject:
    """A person (about a third of objects) or another VOC class as an ellipse or box."""
    height, width = shape
    if rng.random() < 0.35:
        size = rng.uniform(0.45, 0.8) * height
        top, left = rng.uniform(-0.05, 1.0) * (height - size), rng.uniform(0, width - 0.6 * size)
        parts = person_parts(shape, top, left, size)
        mask = np.logical_or.reduce([m for _, m in parts])
        return SceneObject(PERSON_CLASS_IND, mask, parts)
    class_ind = int(rng.choice([c for c in range(1, 21) if c != PERSON_CLASS_IND]))
    ry, rx = rng.uniform(0.12, 0.3) * height, rng.uniform(0.12, 0.3) * width
    cy, cx = rng.uniform(ry, height - ry), rng.uniform(rx, width - rx)
    mask = _ellipse(shape, cy, cx, ry, rx) if rng.random() < 0.5 else _box(shape, cy - ry, cx - rx, 2 * ry, 2 * rx)
    return SceneObject(class_ind, mask, _animal_parts(mask) if class_ind in ANIMALS else [])


def random_scene(rng: np.random.Generator, shape: tuple[int, int]) -> Scene:
    """1-4 objects in paint order; masks are cut to what stays visible, like real annotations."""
    objects = [random_object(rng, shape) for _ in range(int(rng.integers(1, 5)))]
    covered = np.zeros(shape, dtype=bool)
    for obj in reversed(objects):
        visible = obj.mask & ~covered
        obj.parts = [(name, m & visible) for name, m in obj.parts if (m & visible).any()]
        obj.mask, covered = visible, covered | obj.mask
    objects = [o for o in objects if o.mask.any()]
    horizon = int(rng.uniform(0.3, 0.6) * shape[0])
    return Scene(horizon, int(rng.choice(UPPER_CONTEXT)), int(rng.choice(LOWER_CONTEXT)), objects)


def semseg_label(scene: Scene, shape: tuple[int, int]) -> np.ndarray:
    """VOC class per pixel (0 = background)."""
    label = np.zeros(shape, dtype=np.uint8)
    for obj in scene.objects:
        label[obj.mask] = obj.class_ind
    return label


def label_map(scene: Scene, shape: tuple[int, int]) -> np.ndarray:
    """459-class context labels: upper/lower background classes, then each object's context class."""
    labels = np.full(shape, scene.lower_context, dtype=np.uint16)
    labels[: scene.horizon] = scene.upper_context
    for obj in scene.objects:
        labels[obj.mask] = VOC_TO_CONTEXT[obj.class_ind]
    return labels


def surface_normals(scene: Scene, shape: tuple[int, int]) -> np.ndarray:
    """Unit normals ``[H, W, 3]``: a frontal upper plane, a tilted floor, and a smooth dome per object."""
    normals = np.zeros((*shape, 3))
    normals[: scene.horizon] = (0.0, 0.0, 1.0)
    normals[scene.horizon :] = (0.0, -0.6, 0.8)
    for obj in scene.objects:
        sigma = max(2.0, np.sqrt(obj.mask.sum()) / 6)
        height = 4 * sigma * ndimage.gaussian_filter(obj.mask.astype(np.float64), sigma)
        gy, gx = np.gradient(height)
        dome = np.stack([-gx, -gy, np.ones_like(gx)], axis=-1)
        normals[obj.mask] = (dome / np.linalg.norm(dome, axis=-1, keepdims=True))[obj.mask]
    return normals


def render_image(rng: np.random.Generator, scene: Scene, normals: np.ndarray) -> np.ndarray:
    """RGB uint8: class colour x class stripes per object, textured background, Lambertian shading."""
    shape = normals.shape[:2]
    image = np.empty((*shape, 3))
    for rows, context in (
        (slice(0, scene.horizon), scene.upper_context),
        (slice(scene.horizon, None), scene.lower_context),
    ):
        base = np.array(colorsys.hsv_to_rgb((context % 17) / 17.0, 0.35, 0.75))
        image[rows] = base * (0.7 + 0.3 * smooth_noise(rng, shape))[rows, :, None]
    for obj in scene.objects:
        texture = class_colour(obj.class_ind) * (0.75 + 0.25 * class_stripes(obj.class_ind, shape))[..., None]
        image[obj.mask] = texture[obj.mask]
        if obj.class_ind == PERSON_CLASS_IND:  # skin, hair, trousers: parts are visible, as on real people
            for name, mask in obj.parts:
                image[mask] = image[mask] * _PART_TINT.get(name, 1.0)
    shading = 0.55 + 0.45 * np.clip(normals @ LIGHT, 0, 1)
    image = image * shading[..., None] * 255 + rng.normal(0, 3, (*shape, 3))
    return np.clip(image, 0, 255).round().astype(np.uint8)


@functools.cache
def voc_palette() -> tuple[int, ...]:
    """The standard VOC colour map (bit-interleaved), as a flat 768-entry PIL palette."""
    palette = []
    for index in range(256):
        rgb, c = [0, 0, 0], index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((c >> channel) & 1) << shift
            c >>= 3
        palette.extend(rgb)
    return tuple(palette)


def _image_bytes(img: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def palette_png(indices: np.ndarray) -> bytes:
    """A mode-'P' png like VOC's label files: pixel values are the class indices."""
    img = Image.frombytes("P", (indices.shape[1], indices.shape[0]), np.ascontiguousarray(indices, np.uint8).tobytes())
    img.putpalette(list(voc_palette()))
    return _image_bytes(img, "PNG")


def mat_bytes(variables: dict[str, object]) -> bytes:
    """``scipy.io.savemat`` output with a fixed header text, so the bytes do not depend on the clock."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables, do_compression=True)
    data = bytearray(buffer.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")
    return bytes(data)


def parts_struct(image_id: str, scene: Scene) -> dict[str, object]:
    """The PASCAL-Part ``anno`` struct: ``loadmat(f)['anno'][0][0][1][0]`` is the objects array."""
    objects = np.zeros(
        (1, len(scene.objects)), dtype=[("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")]
    )
    for i, obj in enumerate(scene.objects):
        parts = np.zeros((1, len(obj.parts)), dtype=[("part_name", "O"), ("mask", "O")])
        for j, (name, mask) in enumerate(obj.parts):
            parts[0, j] = (name, mask.astype(np.uint8))
        parts_value = parts if obj.parts else np.zeros((0, 0))
        objects[0, i] = (
            VOC_CLASSES[obj.class_ind],
            np.array([[obj.class_ind]], np.uint8),
            obj.mask.astype(np.uint8),
            parts_value,
        )
    return {"anno": {"imname": f"{image_id}.jpg", "objects": objects}}


def render_files(image_id: str, rng: np.random.Generator, shape: tuple[int, int]) -> dict[str, bytes]:
    """All files of one synthetic image, keyed by :data:`SOURCES` name."""
    scene = random_scene(rng, shape)
    normals = surface_normals(scene, shape)
    semseg = semseg_label(scene, shape)
    image = render_image(rng, scene, normals)
    normals_rgb = np.clip(np.round((normals + 1) / 2 * 255), 0, 255).astype(np.uint8)
    return {
        "image": _image_bytes(Image.fromarray(image), "JPEG", quality=90),
        "semseg_voc": palette_png(semseg),
        "human_parts": mat_bytes(parts_struct(image_id, scene)),
        "normals": _image_bytes(Image.fromarray(normals_rgb), "PNG"),
        "sal": _image_bytes(Image.fromarray(np.where(semseg > 0, 255, 0).astype(np.uint8)), "PNG"),
        "label_map": mat_bytes({"LabelMap": label_map(scene, shape)}),
    }


def synthetic_ids(num_images: int) -> list[str]:
    """Image ids ``synth_000000``, ``synth_000001``, ... (sorted like PASCAL's)."""
    return [f"synth_{i:06d}" for i in range(num_images)]


def split_ids(ids: list[str], seed: int, val_fraction: float) -> tuple[list[str], list[str]]:
    """A seeded train/val partition; each list stays sorted like the real split files."""
    num_val = int(round(len(ids) * val_fraction))
    order = np.random.default_rng([seed, len(ids)]).permutation(len(ids))
    val = set(order[:num_val].tolist())
    return [x for i, x in enumerate(ids) if i not in val], [x for i, x in enumerate(ids) if i in val]


def _check_arguments(num_images: int, image_size: tuple[int, int], val_fraction: float) -> None:
    if num_images < 1:
        raise DataError(f"num_images must be >= 1, got {num_images}")
    if len(image_size) != 2 or min(image_size) < 32:
        raise DataError(f"image_size must be (height, width) with both >= 32, got {image_size}")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")


def _prepare_root(root: Path, provenance: dict[str, object]) -> bool:
    """Make ``root`` ready; True if it already holds exactly this complete set (nothing to write).

    Only an empty folder or an earlier synthetic set (which is then replaced) may be written into.
    """
    marker = root / MARKER
    if root.exists() and not root.is_dir():
        raise DataError(f"synthetic dataset root {root} is a file; pass a folder")
    if root.is_dir() and any(root.iterdir()):
        if not marker.is_file():
            raise DataError(
                f"refusing to write a synthetic dataset into non-empty folder {root}; pass an empty or new folder"
            )
        if json.loads(marker.read_text()) == {**provenance, "complete": True}:
            return True
        for folder in {SOURCES[s][0].split("/")[0] for s in SOURCES} | {"ImageSets"}:
            shutil.rmtree(root / folder, ignore_errors=True)
    write_json_atomic(marker, {**provenance, "complete": False})
    return False


def make_synthetic_dataset(
    root: str | Path,
    num_images: int,
    seed: int = 0,
    image_size: tuple[int, int] = (160, 192),
    val_fraction: float = 0.25,
) -> Path:
    """Write a synthetic PASCAL-MT set that :class:`PascalMTDataset` reads like the real one.

    Args:
        root: an empty or new folder, or an earlier synthetic set (reused if identical, else replaced).
        num_images: total images; ``round(num_images * val_fraction)`` go to ``val.txt``.
        seed: image ``i`` is drawn from ``(seed, i)``; equal arguments give byte-identical files.
        image_size: ``(height, width)`` of every image and label.
        val_fraction: share of ids in the val split.

    Returns:
        The dataset root, with ``synthetic.json`` recording seed, count, size and version.
    """
    _check_arguments(num_images, image_size, val_fraction)
    root, shape = Path(root), (int(image_size[0]), int(image_size[1]))
    provenance = {
        "kind": "mtlora_deploy synthetic PASCAL-MT",
        "version": SYNTHETIC_VERSION,
        "seed": int(seed),
        "num_images": int(num_images),
        "image_size": list(shape),
        "val_fraction": float(val_fraction),
    }
    created = not root.exists()
    try:
        if _prepare_root(root, provenance):
            return root
        _write_files(PascalLayout(root), num_images, seed, shape, val_fraction)
        write_json_atomic(root / MARKER, {**provenance, "complete": True})
    except (OSError, OutputError) as exc:  # a full disk: remove what this call wrote, say it in one line
        _remove_partial(root, created)
        reason = exc.reason if isinstance(exc, OutputError) else describe_os_error(exc)
        raise OutputError(f"cannot write the synthetic dataset {root}: {reason}; nothing was left there") from exc
    return root


def _write_files(layout: PascalLayout, num_images: int, seed: int, shape: tuple[int, int], val_fraction: float):
    for folder in {layout.path(s, "x").parent for s in SOURCES if s != "semseg_context"}:
        folder.mkdir(parents=True, exist_ok=True)
    ids = synthetic_ids(num_images)
    for index, image_id in enumerate(ids):
        for source, data in render_files(image_id, np.random.default_rng([seed, index]), shape).items():
            layout.path(source, image_id).write_bytes(data)
    for split, split_list in zip(("train", "val"), split_ids(ids, seed, val_fraction), strict=True):
        layout.split_file(split).parent.mkdir(parents=True, exist_ok=True)
        layout.split_file(split).write_text("".join(f"{x}\n" for x in split_list))


def _remove_partial(root: Path, created: bool) -> None:
    """Remove the folders and marker of an unfinished set (and ``root`` itself when this call created it)."""
    for folder in {SOURCES[s][0].split("/")[0] for s in SOURCES} | {"ImageSets"}:
        shutil.rmtree(root / folder, ignore_errors=True)
    (root / MARKER).unlink(missing_ok=True)
    if created:
        shutil.rmtree(root, ignore_errors=True)
