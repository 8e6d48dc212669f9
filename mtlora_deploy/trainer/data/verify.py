"""Cheap integrity checks of every file of a split, before any training step (a corrupt val image must not
surface only after an epoch of training).

Headers and checksums only, no full decode: PNG chunks with their CRCs (``Image.verify``), a JPEG's markers up to
the frame header plus its end-of-image marker, a ``.mat`` file's variable directory. About a millisecond per file.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path

import scipy.io
from PIL import Image

from mtlora_deploy.errors import DataError
from mtlora_deploy.trainer.data.layout import SOURCES, TASK_SOURCES, PascalLayout


def verify_image(path: Path) -> None:
    """Raise ValueError/OSError if ``path`` is not a complete PNG or JPEG."""
    with Image.open(path) as img:
        kind = img.format
        img.verify()
    if kind == "JPEG":
        with open(path, "rb") as handle:
            handle.seek(max(path.stat().st_size - 4096, 0))
            if b"\xff\xd9" not in handle.read():
                raise ValueError("truncated JPEG (no end-of-image marker)")


def verify_mat(path: Path) -> None:
    """Raise if ``path`` is not a readable MATLAB file."""
    if not scipy.io.whosmat(str(path)):
        raise ValueError("no variables in the file")


def verify_split_files(layout: PascalLayout, ids: Collection[str], tasks: Iterable[str], split: str) -> None:
    """Open every file the selected tasks need for ``ids``; the first broken one is a one-line DataError."""
    for task in ("image", *tasks):
        for sources in TASK_SOURCES[task]:
            for image_id in ids:
                path = layout.resolve(sources, image_id)
                check = verify_mat if SOURCES[sources[0]][1] == ".mat" else verify_image
                try:
                    check(path)
                except Exception as exc:  # noqa: BLE001 - any decoder complaint means the file is unusable
                    detail = " ".join(str(exc).split())[:160]
                    raise DataError(
                        f"{path} (split {split!r}, needed by {'the input image' if task == 'image' else task}) is "
                        f"corrupt or truncated: {type(exc).__name__}: {detail}; replace it or drop {image_id} from "
                        f"{layout.split_file(split).name}"
                    ) from exc
