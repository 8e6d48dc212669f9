"""``prepare-data``: extract the PASCAL-MT archive safely and verify the layout the loader reads.

Extraction uses Python's ``tarfile`` ``data`` filter (no member outside the target, no links pointing outside, no
devices, no setuid bits) plus our own refusal of absolute and ``..`` names, into a hidden sibling folder of the
target. Only a tree that passed verification is renamed onto the target; on any failure the partial tree is removed,
so a folder at the target path is always complete. An archive whose members share one top folder
(``PASCAL_MT/...``) gives that folder's content.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mtlora_deploy.errors import DataError
from mtlora_deploy.trainer.data.layout import SOURCES, SPLITS, TASKS, PascalLayout
from mtlora_deploy.trainer.data.pascal import read_split
from mtlora_deploy.trainer.data.readers import check_files, has_person_parts

Progress = Callable[[str, int, int], None]  # (stage, done, total)
_SEMSEG_FOLDERS = (SOURCES["semseg_voc"][0], SOURCES["semseg_context"][0])  # either one is enough


@dataclass(frozen=True)
class SplitCounts:
    """What a verified split holds."""

    split: str
    images: int
    with_human_parts: int


def _no_progress(stage: str, done: int, total: int) -> None:
    """Default progress callback: silent."""


def required_folders(root: Path) -> list[Path]:
    """Every folder the loader reads (semseg: ``semseg/VOC12`` or ``semseg/pascal-context``)."""
    folders = [root / folder for key, (folder, _) in SOURCES.items() if not key.startswith("semseg")]
    voc, context = (root / f for f in _SEMSEG_FOLDERS)
    return [*folders, voc if voc.is_dir() or not context.is_dir() else context, root / "ImageSets" / "Context"]


def verify_pascal_mt(root: str | Path, progress: Progress = _no_progress) -> list[SplitCounts]:
    """Check every folder, both split files and every id's image and label files; count ids with human parts.

    Raises:
        DataError: naming the first missing folder, split file or file (and the task that needs it).
    """
    layout = PascalLayout(Path(root))
    for folder in required_folders(layout.root):
        if not folder.is_dir():
            raise DataError(f"{layout.root} is not a PASCAL-MT root: missing folder {folder}")
    ids = {split: read_split(layout, split) for split in SPLITS}
    for split in SPLITS:
        check_files(layout, ids[split], TASKS)
    total, done, counts = sum(len(v) for v in ids.values()), 0, []
    for split in SPLITS:
        with_parts = 0
        for image_id in ids[split]:
            with_parts += has_person_parts(layout.human_parts(image_id))
            done += 1
            progress("verifying", done, total)
        counts.append(SplitCounts(split, len(ids[split]), with_parts))
    return counts


def _member_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """Our checks first (absolute or ``..`` names are never legitimate here), then tarfile's ``data`` filter."""
    parts = PurePosixPath(member.name).parts
    if member.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise DataError(f"archive member {member.name!r} points outside the target folder; refusing the archive")
    try:
        return tarfile.data_filter(member, dest)
    except tarfile.FilterError as exc:
        raise DataError(f"archive member {member.name!r} is unsafe ({exc}); refusing the archive") from exc


def extract_archive(archive: Path, dest: Path, progress: Progress = _no_progress) -> None:
    """Stream every member of ``archive`` (.tgz/.tar.gz/.tar/.tar.xz) into ``dest`` through the safe filter."""
    total = archive.stat().st_size
    try:
        with archive.open("rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tar:
            for member in tar:
                tar.extract(member, dest, filter=_member_filter)
                progress("extracting", raw.tell(), total)
            progress("extracting", total, total)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"archive {archive} could not be read: {exc}") from exc


def _dataset_root(tree: Path) -> Path:
    """The extracted tree itself, or its single top folder when the archive wraps everything in one."""
    entries = [p for p in tree.iterdir()]
    if not (tree / "JPEGImages").exists() and len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return tree


def prepare_pascal_mt(
    archive: str | Path, output: str | Path, progress: Progress = _no_progress
) -> tuple[list[SplitCounts], bool]:
    """Extract and verify ``archive`` into ``output``; an already prepared ``output`` is only verified.

    Returns:
        (per-split counts, True when ``output`` already held a complete set and nothing was extracted).

    Raises:
        DataError: unsafe or unreadable archive, incomplete content (first missing file named), or an ``output``
            that exists, is not empty and is not a complete PASCAL-MT root.
    """
    archive, output = Path(archive), Path(output)
    if output.exists() and not output.is_dir():
        raise DataError(f"`output` {output} is a file; expected a folder to create", field="output")
    if output.is_dir() and any(output.iterdir()):
        try:
            return verify_pascal_mt(output, progress), True
        except DataError as exc:
            raise DataError(
                f"`output` {output} exists and is not a complete PASCAL-MT root ({exc}); remove it or choose another "
                "folder",
                field="output",
            ) from exc
    if not archive.is_file():
        raise DataError(f"archive {archive} does not exist")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        extract_archive(archive, staging, progress)
        root = _dataset_root(staging)
        try:
            counts = verify_pascal_mt(root, progress)
        except DataError as exc:  # name files as the archive holds them, not by the staging folder
            raise DataError(f"archive {archive} is incomplete: {str(exc).replace(f'{root}{os.sep}', '')}") from exc
        if output.is_dir():
            output.rmdir()  # empty (checked above); rename needs the name free
        os.rename(root, output)
        return counts, False
    finally:
        shutil.rmtree(staging, ignore_errors=True)
