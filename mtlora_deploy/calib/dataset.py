"""Calibration inputs: a seeded draw of split images, eval-transformed, stored as ``.npz`` with provenance.

INT8 scales (and fp16 range checks) are only as good as the images they saw, so the set is drawn
deterministically from a named split with the reference EVAL transform (the same pixels the model sees
at evaluation) and written with a JSON file recording where every image came from.
"""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from rich import get_console
from rich.progress import Progress

from mtlora_deploy.errors import ConfigError, DataError, OutputError
from mtlora_deploy.trainer.data.layout import PascalLayout
from mtlora_deploy.trainer.data.pascal import read_split
from mtlora_deploy.trainer.data.readers import check_files, read_sample
from mtlora_deploy.trainer.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from mtlora_deploy.utils.atomic import atomic_path, write_json_atomic
from mtlora_deploy.utils.hashing import file_sha256

RECOMMENDED_IMAGES = 500  # TensorRT's advice for INT8 calibration
DEFAULT_MIN_IMAGES = 8
PROVENANCE_FORMAT = "mtlora-deploy-calibration"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed entry time: the same draw gives the same file bytes


def provenance_path(path: str | Path) -> Path:
    """``calib/NAME.npz`` -> ``calib/NAME.json``."""
    return Path(path).with_suffix(".json")


def choose_ids(ids: list[str], num_images: int, seed: int) -> list[str]:
    """``num_images`` distinct ids drawn with ``seed`` (kept in split order, so the file reads like the split)."""
    if num_images < 1:
        raise ConfigError(f"got {num_images}, expected at least 1", field="num_images")
    if num_images > len(ids):
        raise ConfigError(f"asked for {num_images}, but the split has only {len(ids)} images", field="num_images")
    picked = np.random.default_rng(seed).choice(len(ids), size=num_images, replace=False)
    return [ids[i] for i in sorted(picked.tolist())]


def array_sha256(array: np.ndarray) -> str:
    """Digest of the C-ordered array bytes (independent of the container file)."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed ``.npz`` with fixed entry times (``np.savez`` stamps the clock), written atomically."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            with archive.open(info, "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.ascontiguousarray(array), allow_pickle=False)


def load_images(layout: PascalLayout, ids: list[str], image_size: int) -> np.ndarray:
    """Eval-transformed images ``float32 [N, 3, S, S]`` (the transform :class:`PascalMTDataset` uses at eval)."""
    out = np.empty((len(ids), 3, image_size, image_size), dtype=np.float32)
    with Progress(transient=True, disable=not get_console().is_terminal) as bar:  # no bar (or blank line) in logs
        task = bar.add_task(f"calibration images {image_size}x{image_size}", total=len(ids))
        for index, image_id in enumerate(ids):
            out[index] = eval_transform(read_sample(layout, image_id, ()), image_size)["image"].numpy()
            bar.advance(task)
    return out


def _provenance(
    root: Path, split: str, ids: list[str], seed: int, image_size: int, input_name: str, images: np.ndarray
) -> dict[str, Any]:
    from mtlora_deploy import __version__

    return {
        "format": PROVENANCE_FORMAT,
        "input_name": input_name,
        "dataset_root": str(root.resolve()),
        "split": split,
        "seed": int(seed),
        "count": len(ids),
        "image_size": int(image_size),
        "shape": list(images.shape),
        "dtype": str(images.dtype),
        "transform": {
            "name": "eval",
            "resize": "bicubic, direct to SxS (no crop)",
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
        },
        "array_sha256": array_sha256(images),
        "toolkit_version": __version__,
        "ids": ids,
    }


def draw_calibration_set(
    data_root: str | Path,
    split: str,
    num_images: int,
    image_size: int,
    seed: int,
    output: str | Path,
    input_name: str = "image",
) -> Path:
    """Draw ``num_images`` images of ``split`` with ``seed`` and write ``output`` (.npz) plus its provenance JSON.

    Args:
        data_root: a PASCAL-MT folder (or the synthetic set); only ``JPEGImages`` and the split file are read.
        split: split file name under ``ImageSets/Context`` (``train`` for calibration, never the eval split).
        num_images: how many images (TensorRT recommends at least 500).
        image_size: the model's input side ``S``.
        seed: the same seed and split give the same ids and identical file bytes.
        output: the ``.npz`` path; ``output.with_suffix('.json')`` receives the provenance.
        input_name: the ONNX input the array is keyed by.

    Returns:
        The ``.npz`` path.
    """
    output, layout = Path(output), PascalLayout(Path(data_root))
    if output.suffix != ".npz":
        raise ConfigError(f"got {output}, expected a .npz file name (e.g. calib/train_500.npz)", field="output")
    if not layout.root.is_dir():
        raise DataError(f"{layout.root} is not a folder; pass the PASCAL-MT root or a synthetic set", field="data_root")
    ids = choose_ids(read_split(layout, split), num_images, seed)
    check_files(layout, ids, ())
    images = load_images(layout, ids, int(image_size))
    write_npz(output, {input_name: images})
    provenance = _provenance(layout.root, split, ids, seed, image_size, input_name, images)
    try:
        write_json_atomic(provenance_path(output), {**provenance, "file_sha256": file_sha256(output)})
    except OutputError:
        output.unlink(missing_ok=True)  # a set without its provenance is not left behind
        raise
    return output


def read_provenance(path: str | Path) -> dict[str, Any] | None:
    """The JSON beside a calibration file, or None when there is none (a hand-made .npz)."""
    meta = provenance_path(path)
    return json.loads(meta.read_text()) if meta.is_file() else None


def _check_images(
    shape: tuple[int, ...], dtype: np.dtype, path: Path, input_name: str, image_size: int, min_images: int
) -> None:
    expected = (3, image_size, image_size)
    if len(shape) != 4 or tuple(shape[1:]) != expected:
        raise DataError(
            f"calibration file {path}: '{input_name}' holds images of shape {tuple(shape[1:])}, "
            f"but the model takes {expected}; redraw it with mtlora calibrate --image-size {image_size}"
        )
    if not np.issubdtype(dtype, np.floating):
        raise DataError(f"calibration file {path}: '{input_name}' is {dtype}, expected float32 images")
    if shape[0] < min_images:
        raise DataError(
            f"calibration file {path} has {shape[0]} images, at least {min_images} are needed "
            f"({RECOMMENDED_IMAGES} recommended); redraw it with: mtlora calibrate --num-images {RECOMMENDED_IMAGES}"
        )
    if shape[0] < RECOMMENDED_IMAGES:
        warnings.warn(
            f"calibration file {path} has {shape[0]} images; TensorRT recommends at least "
            f"{RECOMMENDED_IMAGES} for INT8 (and FP8) scales",
            stacklevel=3,
        )


def _open_member(path: Path, input_name: str) -> tuple[zipfile.ZipFile, Any]:
    """The zip archive and the open ``input_name.npy`` member of a calibration file (one-line errors otherwise)."""
    if not path.is_file():
        raise DataError(f"calibration file {path} does not exist; draw one with: mtlora calibrate --data DIR -o {path}")
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"calibration file {path} is not a readable .npz: {exc}") from exc
    names = [n[: -len(".npy")] for n in archive.namelist() if n.endswith(".npy")]
    if input_name not in names:
        archive.close()
        raise DataError(
            f"calibration file {path} holds inputs {names}, but the model's input is "
            f"'{input_name}'; redraw it with mtlora calibrate --input-name {input_name}"
        )
    return archive, archive.open(f"{input_name}.npy")


class NpzImages:
    """The ``[N, 3, S, S]`` images of one calibration ``.npz`` entry, read slice by slice from the file.

    Never holds more than the requested slice, so calibrating on 500 images at 448 (1.2 GB of pixels)
    needs no more memory than calibrating on 8. Supports ``len`` and ``images[a:b]`` (what
    :class:`~mtlora_deploy.calib.ranges.ArrayReader` uses), so it stands in for an in-memory array.
    """

    def __init__(self, path: str | Path, input_name: str) -> None:
        self.path, self.input_name = Path(path), input_name
        self._archive, self._member = _open_member(self.path, input_name)
        try:
            version = np.lib.format.read_magic(self._member)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(self._member)
        except ValueError as exc:
            self.close()
            raise DataError(f"calibration file {path}: '{input_name}' is not a readable array: {exc}") from exc
        if fortran or dtype.hasobject:
            self.close()
            raise DataError(f"calibration file {path}: '{input_name}' must be a C-ordered numeric array")
        self.shape, self.dtype, self._offset = tuple(shape), dtype, self._member.tell()
        self._row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: slice) -> np.ndarray:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("NpzImages supports contiguous slices only (images[a:b])")
        start, stop, _ = index.indices(len(self))
        count = max(0, stop - start)
        self._member.seek(self._offset + start * self._row_bytes)
        data = self._member.read(count * self._row_bytes)
        return np.frombuffer(data, dtype=self.dtype).reshape((count, *self.shape[1:])).astype(np.float32)

    def close(self) -> None:
        self._member.close()
        self._archive.close()


def open_calibration(
    path: str | Path, input_name: str, image_size: int, min_images: int = DEFAULT_MIN_IMAGES
) -> NpzImages:
    """Check a calibration ``.npz`` (input name, image size, enough images) and open it for batch-wise reads."""
    images = NpzImages(Path(path), input_name)
    try:
        _check_images(images.shape, images.dtype, images.path, input_name, int(image_size), min_images)
    except DataError:
        images.close()
        raise
    return images


def load_calibration(
    path: str | Path, input_name: str, image_size: int, min_images: int = DEFAULT_MIN_IMAGES
) -> np.ndarray:
    """Read and check a whole calibration ``.npz`` into memory (small sets; calibration itself streams).

    Returns:
        ``float32 [N, 3, S, S]``.
    """
    images = open_calibration(path, input_name, image_size, min_images)
    try:
        return images[:]
    finally:
        images.close()


def check_calibration_set(
    path: str | Path, input_name: str, image_size: int, min_images: int = DEFAULT_MIN_IMAGES, chunk: int = 32
) -> int:
    """Check a calibration ``.npz`` before any export or build: it holds ``input_name`` as float images
    ``[N, 3, S, S]`` at the model's ``image_size``, at least ``min_images`` of them, every value finite.

    Read ``chunk`` images at a time, so a large set is checked in flat memory.

    Returns:
        N, the number of images.

    Raises:
        DataError: one line naming the file and what is wrong (missing key, size, count, NaN/inf, truncation).
    """
    with warnings.catch_warnings():  # the "fewer than recommended" note comes when the set is used, if it passes
        warnings.simplefilter("ignore", UserWarning)
        images = open_calibration(path, input_name, image_size, min_images)
    try:
        for start in range(0, len(images), chunk):
            try:
                block = images[start : start + chunk]
            except (ValueError, OSError, zipfile.BadZipFile) as exc:
                raise DataError(
                    f"calibration file {path}: '{input_name}' is truncated or corrupt near image {start}; "
                    "draw it again with mtlora calibrate"
                ) from exc
            finite = np.isfinite(block).reshape(len(block), -1).all(axis=1)
            if not finite.all():
                index = start + int(np.flatnonzero(~finite)[0])
                raise DataError(
                    f"calibration file {path}: image {index} of '{input_name}' holds NaN or infinite values; "
                    "draw it again with mtlora calibrate"
                )
        return len(images)
    finally:
        images.close()
