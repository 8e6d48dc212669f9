"""Crash-consistent checkpoint sets: every file of a commit becomes current together, or none does.

Layout of a run folder::

    RUN/checkpoints -> .checkpoints/000007      (relative symlink: what load(RUN), evaluate, merge read)
    RUN/.checkpoints/000007/last.safetensors    (+ last.json, last.state.pt, best.*, MANIFEST.json)
    RUN/.checkpoints/000006/...                 (the previous generation, kept as a fallback)

A commit writes all files into a staging folder (each synced), then ``MANIFEST.json`` with every file's size and
sha256, then renames the staging folder to the next generation number: that one rename is the commit. The
``checkpoints`` link is switched afterwards by a second atomic rename and repaired on resume, so a crash anywhere
leaves either the old or the new generation complete. Files that did not change (``best.*``) are hard links into
the previous generation, not copies. SIGINT is deferred while a commit runs, so a second Ctrl-C cannot cut it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mtlora_deploy.errors import OutputError
from mtlora_deploy.utils.atomic import describe_os_error
from mtlora_deploy.utils.checkpoint_manifest import (
    FORMAT,
    LINK,
    MANIFEST,
    STORE,
    file_record,
    read_manifest,
    verify_files,
)
from mtlora_deploy.utils.faults import fault_point

KEEP = 2  # generations kept: the current one and one fallback


class CheckpointWriteError(OutputError):
    """A checkpoint could not be written (disk full, no permission); the previous one stays current."""


@dataclass(frozen=True)
class Generation:
    """One committed checkpoint set: ``RUN/.checkpoints/NNNNNN`` and what its manifest says."""

    path: Path
    number: int
    step: int
    files: dict[str, dict]

    def file(self, name: str) -> Path:
        return self.path / name


def store_dir(run_dir: Path) -> Path:
    return Path(run_dir) / STORE


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file and sync it to disk (the one writer every checkpoint byte goes through)."""
    half = len(data) // 2
    with open(path, "xb") as handle:
        handle.write(data[:half])
        handle.flush()
        fault_point("checkpoint.partial")
        handle.write(data[half:])
        handle.flush()
        os.fsync(handle.fileno())


def _sync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot sync a directory; the rename is still atomic
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def deferred_sigint() -> Iterator[None]:
    """Hold back Ctrl-C until the block is done, then raise the KeyboardInterrupt it would have raised."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def list_generations(run_dir: Path) -> list[Generation]:
    """Every generation folder that has a manifest, newest first (not yet verified)."""
    out = []
    store = store_dir(run_dir)
    for entry in store.iterdir() if store.is_dir() else []:
        manifest = read_manifest(entry) if entry.name.isdigit() else None
        if manifest is not None:
            out.append(Generation(entry, int(entry.name), int(manifest["step"]), dict(manifest["files"])))
    return sorted(out, key=lambda g: g.number, reverse=True)


def verify(generation: Generation, hashes: bool = True) -> str | None:
    """None if every file of the set is there with its size and (``hashes``) sha256; else what is wrong."""
    return verify_files(generation.path, generation.files, hashes=hashes)


def has_checkpoint(run_dir: Path) -> bool:
    """Whether a run folder holds any checkpoint (a committed generation or a pre-generation folder)."""
    link = Path(run_dir) / LINK
    return bool(list_generations(run_dir)) or (link.is_dir() and any(link.glob("*.json")))


def commit(
    run_dir: Path, files: dict[str, bytes], step: int, keep: tuple[str, ...] = (), links: dict[str, str] | None = None
) -> Generation:
    """Write ``files`` (name -> bytes) plus the files named in ``keep`` from the current generation as one set.

    ``links`` maps extra names to files of ``files`` they are identical to (``best.json`` -> ``last.json``): they
    become hard links, not second copies.

    Returns the new generation. On an OSError (ENOSPC, EACCES, ...) the staging folder is removed, the previous
    generation stays current and a one-line CheckpointWriteError says what happened.
    """
    run_dir = Path(run_dir)
    store = store_dir(run_dir)
    current, staging = None, store / f".staging-{os.getpid()}"
    with deferred_sigint():
        try:
            store.mkdir(parents=True, exist_ok=True)
            _migrate_plain_folder(run_dir)
            current = next((g for g in list_generations(run_dir) if verify(g, hashes=False) is None), None)
            number = max((g.number for g in list_generations(run_dir)), default=0) + 1
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            fault_point("checkpoint.begin")
            entries = _write_set(staging, files, current, keep, links)
            write_file(staging / MANIFEST, _manifest_bytes(number, step, entries))
            _sync_dir(staging)
            fault_point("checkpoint.manifest")
            target = store / f"{number:06d}"
            os.rename(staging, target)
            _sync_dir(store)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise CheckpointWriteError(_write_error(run_dir, step, exc, current)) from exc
        fault_point("checkpoint.commit")
        point_link(run_dir, target)
        fault_point("checkpoint.switch")
        prune(run_dir)
    return Generation(target, number, step, entries)


def _write_set(
    staging: Path, files: dict[str, bytes], current: Generation | None, keep: tuple[str, ...], links: dict | None
) -> dict:
    entries: dict[str, dict] = {}
    for name, data in files.items():
        write_file(staging / name, data)
        entries[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        fault_point("checkpoint.file")
    for name, source in (links or {}).items():
        _link_or_copy(staging / source, staging / name)
        entries[name] = dict(entries[source])
    for name in keep:
        if current is not None and name in current.files and name not in entries:
            _link_or_copy(current.file(name), staging / name)
            entries[name] = dict(current.files[name])
    return entries


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # no hard links on this filesystem
        shutil.copyfile(source, target)


def _manifest_bytes(number: int, step: int, entries: dict[str, dict]) -> bytes:
    manifest = {"format": FORMAT, "generation": number, "step": step, "files": entries}
    return (json.dumps(manifest, indent=2) + "\n").encode()


def _write_error(run_dir: Path, step: int, exc: OSError, current: Generation | None) -> str:
    kept = f"the previous checkpoint (step {current.step}) is still current" if current else "no checkpoint was kept"
    return (
        f"cannot write the step-{step} checkpoint into {store_dir(run_dir)}: {describe_os_error(exc)}; {kept}; "
        f"fix it and continue with: mtlora train --resume {run_dir}"
    )


def point_link(run_dir: Path, target: Path) -> None:
    """Switch ``RUN/checkpoints`` to ``target`` with one atomic rename of a fresh relative symlink."""
    link = Path(run_dir) / LINK
    relative = os.path.relpath(target, run_dir)
    if link.is_symlink() and os.readlink(link) == relative:
        return
    tmp = Path(run_dir) / f".{LINK}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(relative, tmp)
    os.replace(tmp, link)
    _sync_dir(Path(run_dir))


def _migrate_plain_folder(run_dir: Path) -> None:
    """A run written before generations has a real ``checkpoints/`` folder: it becomes generation 0 as it is."""
    link = run_dir / LINK
    if not link.is_dir() or link.is_symlink():
        return
    if not (link / "last.json").is_file():  # not a checkpoint folder we wrote: move it out of the way, keep it
        os.rename(link, store_dir(run_dir) / f"orphaned-{os.getpid()}")
        return
    files = sorted(p for p in link.iterdir() if p.is_file() and not p.name.startswith("."))
    entries = {p.name: file_record(p) for p in files}
    try:
        step = int(json.loads((link / "last.json").read_text())["metadata"]["step"])
    except (OSError, ValueError, KeyError, TypeError):
        step = 0
    (link / MANIFEST).write_bytes(_manifest_bytes(0, step, entries))
    target = store_dir(run_dir) / f"{0:06d}"
    os.rename(link, target)
    point_link(run_dir, target)


def prune(run_dir: Path, keep: int = KEEP) -> None:
    """Drop generations beyond the newest ``keep`` consistent ones, stale staging folders and stray temporaries."""
    store = store_dir(run_dir)
    newest = [g.path for g in list_generations(run_dir)]
    link = Path(run_dir) / LINK
    current = link.resolve() if link.is_symlink() else None
    for path in newest[keep:]:
        if path != current:
            shutil.rmtree(path, ignore_errors=True)
    for stale in [*store.glob(".staging-*"), *Path(run_dir).glob(f".{LINK}.*.tmp"), *Path(run_dir).glob(".*.tmp")]:
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    for folder in (store, *newest[:keep]):
        for tmp in folder.glob(".*.tmp") if folder.is_dir() else []:
            tmp.unlink(missing_ok=True)
