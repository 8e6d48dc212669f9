"""The sha256 manifest of a checkpoint set, read and verified in one place for every layer that loads one.

A run folder's checkpoints are committed as sets (``RUN/.checkpoints/NNNNNN/`` with ``MANIFEST.json`` listing every
file's size and sha256; ``RUN/checkpoints`` links to the newest). ``--resume`` (the trainer) and every command that
loads a checkpoint (``mtlora_deploy.load``: evaluate, merge, export, predict, profile, info) verify the files they
use against it here, so a corrupted file is never used silently: the previous set is used with a one-line warning,
or the load is refused with one line naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mtlora_deploy.errors import WeightsError
from mtlora_deploy.utils.hashing import file_sha256

LINK = "checkpoints"
STORE = ".checkpoints"
MANIFEST = "MANIFEST.json"
FORMAT = "mtlora-deploy-checkpoint-set"
CHECKPOINT_SUFFIXES = (".safetensors", ".json")


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of the set in ``folder``, or None when there is none (or it is not one of ours)."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(manifest, dict) and manifest.get("format") == FORMAT and isinstance(manifest.get("files"), dict)
    return manifest if ok else None


def file_record(path: Path) -> dict[str, Any]:
    """A file's manifest entry, what :func:`verify_files` checks it against: its size and sha256."""
    return {"bytes": path.stat().st_size, "sha256": file_sha256(path)}


def verify_files(
    folder: Path,
    files: dict[str, dict],
    names: Iterable[str] | None = None,
    hashes: bool = True,
    manifest_name: str = MANIFEST,
) -> str | None:
    """None if each file of ``names`` (default: all of ``files``) is in ``folder`` with its manifest size and
    (``hashes``) sha256; else what is wrong with the first that is not, e.g. ``best.json is missing``.
    ``manifest_name`` is the manifest the messages name (a checkpoint set's by default; a Triton repository's)."""
    for name in files if names is None else names:
        entry, path = files.get(name), Path(folder) / name
        if entry is None:
            return f"{name} is not listed in {manifest_name}"
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry["bytes"]:
            return f"{name} is truncated ({path.stat().st_size} of {entry['bytes']} bytes)"
        if hashes and file_sha256(path) != entry["sha256"]:
            return f"{name} is corrupt (sha256 differs from {manifest_name})"
    return None


def _older_sets(folder: Path) -> list[Path]:
    """The sets committed before ``folder`` in the same store, newest first."""
    if folder.parent.name != STORE or not folder.name.isdigit():
        return []
    numbers = [p for p in folder.parent.iterdir() if p.name.isdigit() and int(p.name) < int(folder.name)]
    return sorted(numbers, key=lambda p: int(p.name), reverse=True)


def verified_checkpoint(stem: Path, warn: Callable[[str], None]) -> Path:
    """``stem`` (a checkpoint ``NAME`` of ``NAME.safetensors`` + ``NAME.json``) after checking both files against
    the manifest of the set that holds them.

    A checkpoint outside a set (a merged folder, an imported one) has no manifest and is returned as it is. When a
    file of the newest set fails, the newest older set whose files verify is used instead, said in one ``warn``
    line naming the bad file; when none does, the load is refused.

    Raises:
        WeightsError: a file fails its manifest and no older set holds a good copy.
    """
    folder = Path(stem).parent.resolve()
    manifest = read_manifest(folder)
    if manifest is None:
        return Path(stem)
    names = [stem.name + suffix for suffix in CHECKPOINT_SUFFIXES]
    problem = verify_files(folder, manifest["files"], names)
    if problem is None:
        return Path(stem)
    shown = Path(stem).parent / problem  # the bad file as the user named its folder, then what is wrong
    for older in _older_sets(folder):
        previous = read_manifest(older)
        if previous is not None and verify_files(older, previous["files"], names) is None:
            warn(f"{shown}; using the previous checkpoint set {older} (step {previous.get('step')}) instead")
            return older / stem.name
    raise WeightsError(
        f"{shown}; no earlier checkpoint set holds a good copy, so it is not used "
        "(restore the file, or train again with: mtlora train --resume RUN)"
    )
