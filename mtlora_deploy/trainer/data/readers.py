"""One small reader per PASCAL-MT label kind; every missing or broken file becomes a one-line DataError.

Readers return numpy arrays at the file's resolution (``H x W``), never write anything, and never
resize: the transforms do that. Label conventions follow the reference PASCAL-MT loader.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import scipy.io
from PIL import Image
from scipy import ndimage

from mtlora_deploy.errors import DataError
from mtlora_deploy.trainer.data.layout import (
    IGNORE_INDEX,
    NORMALS_VALID_CLASSES,
    PART_NAME_TO_ID,
    PERSON_CLASS_IND,
    SOURCES,
    TASK_SOURCES,
    TASKS,
    PascalLayout,
)

T = TypeVar("T")


def _describe(task: str) -> str:
    """``task`` is a task name, ``"image"`` (the input of every task) or any other phrase, e.g. a split."""
    if task == "image":
        return "the input image of every task"
    return f"task '{task}'" if task in TASKS else task


def read_file(path: Path, task: str, parse: Callable[[Path], T]) -> T:
    """Run ``parse(path)`` and turn a missing or unreadable file into a DataError naming file and task."""
    if not path.is_file():
        raise DataError(f"missing file {path} (needed by {_describe(task)})")
    try:
        return parse(path)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the file is unusable
        detail = " ".join(str(exc).split())
        raise DataError(f"cannot read {path} (needed by {_describe(task)}): {type(exc).__name__}: {detail}") from exc


def _png_array(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img).copy()


def read_image(path: Path) -> np.ndarray:
    """The RGB image as ``uint8 [H, W, 3]``."""

    def parse(p: Path) -> np.ndarray:
        with Image.open(p) as img:
            return np.asarray(img.convert("RGB")).copy()

    return read_file(path, "image", parse)


def read_semseg(path: Path) -> np.ndarray:
    """Semantic labels ``uint8 [H, W]``: 0 background, 1..20 VOC classes, 255 ignore (palette indices kept)."""

    def parse(p: Path) -> np.ndarray:
        arr = _png_array(p)
        if arr.ndim != 2:
            raise DataError(
                f"cannot read {p} (needed by task 'semseg'): expected a 1-channel label png, got {arr.shape}"
            )
        return arr.astype(np.uint8)

    return read_file(path, "semseg", parse)


def read_sal(path: Path) -> np.ndarray:
    """Saliency ``float32 [H, W]`` in {0, 1}: the distilled map thresholded at 0.5."""

    def parse(p: Path) -> np.ndarray:
        with Image.open(p) as img:
            grey = np.asarray(img.convert("L"), dtype=np.float32)
        return (grey / 255.0 > 0.5).astype(np.float32)

    return read_file(path, "sal", parse)


def read_label_map(path: Path, task: str) -> np.ndarray:
    """The 459-class PASCAL-Context ``LabelMap`` as ``int32 [H, W]`` (``task`` names who needs it)."""

    def parse(p: Path) -> np.ndarray:
        mat = scipy.io.loadmat(str(p))
        if "LabelMap" not in mat:
            raise KeyError("no 'LabelMap' variable")
        return np.asarray(mat["LabelMap"]).astype(np.int32)

    return read_file(path, task, parse)


def normals_valid_mask(label_map: np.ndarray) -> np.ndarray:
    """Pixels whose context class is one of the 170 normals-valid classes, ``bool [H, W]``."""
    valid = np.fromiter(sorted(NORMALS_VALID_CLASSES), dtype=np.int64)
    return np.isin(label_map, valid)


def decode_normals(rgb: np.ndarray, label_map: np.ndarray) -> np.ndarray:
    """Normals ``float32 [H, W, 3]`` = 2 v / 255 - 1, with invalid-class and zero-length pixels set to 255."""
    normals = 2.0 * rgb[..., :3].astype(np.float32) / 255.0 - 1.0
    keep = normals_valid_mask(label_map) & (np.linalg.norm(normals, axis=-1) > 0)
    return np.where(keep[..., None], normals, np.float32(IGNORE_INDEX)).astype(np.float32)


def read_normals(path: Path, label_map: np.ndarray) -> np.ndarray:
    """Read the distilled normals png and mask it with the LabelMap (see :func:`decode_normals`)."""

    def parse(p: Path) -> np.ndarray:
        rgb = _png_array(p)
        if rgb.ndim != 3 or rgb.shape[:2] != label_map.shape:
            raise ValueError(f"expected an RGB png of size {label_map.shape}, got {rgb.shape}")
        return decode_normals(rgb, label_map)

    return read_file(path, "normals", parse)


def edges_from_label_map(label_map: np.ndarray) -> np.ndarray:
    """Edge labels ``float32 [H, W]`` in {0, 1}: thinned non-zero |Laplacian| of the LabelMap."""
    from skimage.morphology import thin  # here: only the edge task needs scikit-image

    laplacian = ndimage.laplace(label_map.astype(np.float64))
    return thin(np.abs(laplacian) > 0).astype(np.float32)


def _mat_objects(path: Path) -> np.ndarray:
    """The ``anno.objects`` array of a PASCAL-Part file (``loadmat(f)['anno'][0][0][1][0]``)."""
    anno = scipy.io.loadmat(str(path))["anno"]
    objects = anno[0][0][1]
    return objects[0] if objects.size else np.empty(0, dtype=object)


def _person_parts(objects: np.ndarray) -> Iterable[tuple[Any, Any]]:
    """Yield ``(instance mask, parts array)`` of the person objects that carry parts."""
    for obj in objects:
        if int(np.asarray(obj[1]).ravel()[0]) == PERSON_CLASS_IND and len(obj[3]) != 0:
            yield obj[2], obj[3][0]


def parse_human_parts(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Human-part labels ``uint8 [H, W]``: 0..6 where a person has parts, all 255 for images without one."""
    target = np.full(shape, IGNORE_INDEX, dtype=np.uint8)
    for index, (_, parts) in enumerate(_person_parts(_mat_objects(path))):
        if index == 0:
            target[:] = 0
        for part in parts:
            name = str(part[0][0])
            if name not in PART_NAME_TO_ID:
                raise ValueError(f"unknown person part name {name!r}")
            target[np.asarray(part[1]).astype(bool)] = PART_NAME_TO_ID[name]
    return target


def read_human_parts(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Read a PASCAL-Part ``.mat`` into 6-part labels (see :func:`parse_human_parts`); ``shape`` is the image's."""
    return read_file(path, "human_parts", lambda p: parse_human_parts(p, shape))


def has_person_parts(path: Path) -> bool:
    """Whether a PASCAL-Part file holds at least one person with parts (for the cached id set)."""
    return read_file(path, "human_parts", lambda p: any(True for _ in _person_parts(_mat_objects(p))))


def check_files(layout: PascalLayout, ids: Collection[str], tasks: Iterable[str]) -> None:
    """Fail fast, before training, on the first file a selected task needs but the dataset lacks.

    One directory listing per folder keeps this cheap for the 10k-image split.
    """
    for task in ("image", *tasks):
        for sources in TASK_SOURCES[task]:
            present: set[str] = set()
            for source in sources:
                folder, suffix = layout.root / SOURCES[source][0], SOURCES[source][1]
                names = os.listdir(folder) if folder.is_dir() else []
                present.update(n[: -len(suffix)] for n in names if n.endswith(suffix))
            missing = next((i for i in ids if i not in present), None)
            if missing is not None:
                raise DataError(f"missing file {layout.path(sources[0], missing)} (needed by {_describe(task)})")


def _check_shape(array: np.ndarray, shape: tuple[int, ...], path: Path, task: str) -> np.ndarray:
    if array.shape[:2] != shape:
        raise DataError(f"{path} (needed by {_describe(task)}) is {array.shape[:2]}, but the image is {shape}")
    return array


def read_sample(
    layout: PascalLayout, image_id: str, tasks: Iterable[str], ids_with_parts: Collection[str] | None = None
) -> dict[str, np.ndarray]:
    """Read the image and the selected tasks' labels of one id, all at the image's resolution.

    Args:
        layout: where the files are.
        image_id: e.g. ``"2008_000002"``.
        tasks: subset of :data:`TASKS`; only their files are opened.
        ids_with_parts: ids known to have a person with parts; the others skip the ``.mat`` read
            and get an all-ignore human_parts label. ``None`` reads every file.
    """
    tasks = tuple(tasks)
    sample = {"image": read_image(layout.image(image_id))}
    shape = sample["image"].shape[:2]
    label_map = _shared_label_map(layout, image_id, tasks, shape)
    readers: dict[str, tuple[Path, Callable[[Path], np.ndarray]]] = {
        "semseg": (layout.semseg(image_id), read_semseg),
        "human_parts": (layout.human_parts(image_id), lambda p: _read_parts(p, image_id, shape, ids_with_parts)),
        "sal": (layout.sal(image_id), read_sal),
        "normals": (layout.normals(image_id), lambda p: read_normals(p, label_map)),
        "edge": (layout.label_map(image_id), lambda p: edges_from_label_map(label_map)),
    }
    for task in tasks:
        path, reader = readers[task]
        sample[task] = _check_shape(reader(path), shape, path, task)
    return sample


def _shared_label_map(
    layout: PascalLayout, image_id: str, tasks: tuple[str, ...], shape: tuple[int, int]
) -> np.ndarray | None:
    """The LabelMap, read once when normals (its mask) or edge (its boundaries) need it."""
    users = [task for task in ("normals", "edge") if task in tasks]
    if not users:
        return None
    path = layout.label_map(image_id)
    return _check_shape(read_label_map(path, users[0]), shape, path, users[0])


def _read_parts(
    path: Path, image_id: str, shape: tuple[int, int], ids_with_parts: Collection[str] | None
) -> np.ndarray:
    if ids_with_parts is not None and image_id not in ids_with_parts:
        return np.full(shape, IGNORE_INDEX, dtype=np.uint8)
    return read_human_parts(path, shape)
