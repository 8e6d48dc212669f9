"""``mtlora predict`` inputs checked before the first inference, and output names that never collide."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from PIL import Image

from mtlora_deploy.errors import DataError
from mtlora_deploy.utils import imaging


def image_suffixes() -> tuple[str, ...]:
    """The file suffixes PIL can open here (``.jpg``, ``.png``, ``.tif``, ``.webp``, ...), lower case."""
    return tuple(sorted(suffix for suffix, fmt in Image.registered_extensions().items() if fmt in Image.OPEN))


def collect_images(paths: list[Path]) -> list[Path]:
    """Files as given; a folder stands for its image files (by suffix, sorted, not recursive). An empty folder is a
    DataError; a missing path is left for :func:`check_images` to name."""
    suffixes, out = image_suffixes(), []
    for path in paths:
        if not path.is_dir():
            out.append(path)
            continue
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        if not found:
            raise DataError(f"folder {path} holds no image files (looked for {', '.join(suffixes[:8])}, ...)")
        out += found
    return out


def check_images(images: list[Path]) -> None:
    """Every input exists and decodes to RGB (any PIL mode the pre-step handles); the first bad one is a one-line
    DataError, before anything is written."""
    for path in images:
        if not path.is_file():
            raise DataError(f"image {path} does not exist ({len(images)} inputs checked before any is predicted)")
        try:
            imaging.decode_image(path)
        except imaging.ImageError as exc:
            raise DataError(f"image {path} could not be read: {exc}; expected an image file (jpg, png, ...)") from exc


def output_names(images: list[Path]) -> list[str]:
    """The name stem of each input's outputs: the file stem, with enough of its folders to make it unique.

    ``a/cat.jpg`` and ``b/cat.jpg`` become ``a_cat`` and ``b_cat``; ``cat.jpg`` and ``cat.png`` in one folder
    become ``cat_jpg`` and ``cat_png``. The same file given twice is a DataError.
    """
    resolved = [p.resolve() for p in images]
    twice = next((p for p, n in Counter(resolved).items() if n > 1), None)
    if twice is not None:
        raise DataError(f"image {twice} is given twice; each input is predicted once")
    levels = [0] * len(resolved)
    names = [_name(p, 0) for p in resolved]
    while len(set(names)) < len(names):
        counts = Counter(names)
        for i, path in enumerate(resolved):
            if counts[names[i]] > 1:
                levels[i] += 1
                names[i] = _name(path, levels[i])
    return names


def _name(path: Path, level: int) -> str:
    """``level`` folders above the file joined to its stem; past the root, the suffix is added instead."""
    folders = [p for p in path.parent.parts if p != path.anchor]
    if level > len(folders):
        return "_".join([*folders, path.stem, path.suffix.lstrip(".")])
    return "_".join([*folders[len(folders) - level :], path.stem] if level else [path.stem])
