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
from rich.progress import Progress

from mtlora_deploy.errors import ConfigError, DataError
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
        raise ConfigError(f"--num-images: got {num_images}, expected at least 1")
    if num_images > len(ids):
        raise ConfigError(f"--num-images: asked for {num_images}, but the split has only {len(ids)} images")
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
    with Progress(transient=True) as bar:
        task = bar.add_task(f"calibration images {image_size}x{image_size}", total=len(ids))
        for index, image_id in enumerate(ids):
            out[index] = eval_transform(read_sample(layout, image_id, ()), image_size)["image"].numpy()
            bar.advance(task)
    return out


def _provenance(root: Path, split: str, ids: list[str], seed: int, image_size: int, input_name: str,
                images: np.ndarray) -> dict[str, Any]:
    from mtlora_deploy import __version__

    return {
        "format": PROVENANCE_FORMAT, "input_name": input_name, "dataset_root": str(root.resolve()),
        "split": split, "seed": int(seed), "count": len(ids), "image_size": int(image_size),
        "shape": list(images.shape), "dtype": str(images.dtype),
        "transform": {"name": "eval", "resize": "bicubic, direct to SxS (no crop)",
                      "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "array_sha256": array_sha256(images), "toolkit_version": __version__, "ids": ids,
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
        raise ConfigError(f"--output: got {output}, expected a .npz file name (e.g. calib/train_500.npz)")
    if not layout.root.is_dir():
        raise DataError(f"--data: {layout.root} is not a folder; pass the PASCAL-MT root or a synthetic set")
    ids = choose_ids(read_split(layout, split), num_images, seed)
    check_files(layout, ids, ())
    images = load_images(layout, ids, int(image_size))
    write_npz(output, {input_name: images})
    provenance = _provenance(layout.root, split, ids, seed, image_size, input_name, images)
    write_json_atomic(provenance_path(output), {**provenance, "file_sha256": file_sha256(output)})
    return output


def read_provenance(path: str | Path) -> dict[str, Any] | None:
    """The JSON beside a calibration file, or None when there is none (a hand-made .npz)."""
    meta = provenance_path(path)
    return json.loads(meta.read_text()) if meta.is_file() else None


def _check_images(array: np.ndarray, path: Path, input_name: str, image_size: int, min_images: int) -> None:
    expected = (3, image_size, image_size)
    if array.ndim != 4 or tuple(array.shape[1:]) != expected:
        raise DataError(f"calibration file {path}: '{input_name}' holds images of shape {tuple(array.shape[1:])}, "
                        f"but the model takes {expected}; redraw it with mtlora calibrate --image-size {image_size}")
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"calibration file {path}: '{input_name}' is {array.dtype}, expected float32 images")
    if len(array) < min_images:
        raise DataError(f"calibration file {path} has {len(array)} images, at least {min_images} are needed "
                        f"({RECOMMENDED_IMAGES} recommended); redraw it with a larger --num-images")
    if len(array) < RECOMMENDED_IMAGES:
        warnings.warn(f"calibration file {path} has {len(array)} images; TensorRT recommends at least "
                      f"{RECOMMENDED_IMAGES} for INT8 scales", stacklevel=3)


def load_calibration(
    path: str | Path, input_name: str, image_size: int, min_images: int = DEFAULT_MIN_IMAGES
) -> np.ndarray:
    """Read and check a calibration ``.npz``: the model's input name, its image size, enough images.

    Returns:
        ``float32 [N, 3, S, S]``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"calibration file {path} does not exist; draw one with: mtlora calibrate --data DIR -o {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if input_name not in archive.files:
                raise DataError(f"calibration file {path} holds inputs {archive.files}, but the model's input is "
                                f"'{input_name}'; redraw it with mtlora calibrate --input-name {input_name}")
            array = archive[input_name]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"calibration file {path} is not a readable .npz: {exc}") from exc
    _check_images(array, path, input_name, int(image_size), min_images)
    return array.astype(np.float32, copy=False)
