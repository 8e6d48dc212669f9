"""Atomic file writes: a crash or a full disk never leaves a half-written artefact behind.

An ``OSError`` while writing (ENOSPC, EDQUOT, EACCES, EROFS, ...) becomes one :class:`~mtlora_deploy.errors.OutputError`
line naming the target file; the temporary file is removed and whatever was at the target before stays as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mtlora_deploy.errors import OutputError
from mtlora_deploy.utils.faults import fault_oserror

# What an OSError means to a user, in words (the errno's name follows in brackets).
OS_ERROR_WORDS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file is larger than this system allows",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the filesystem is read-only",
    errno.EIO: "an input/output error on the device",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.ENAMETOOLONG: "the file name is too long",
}


def describe_os_error(exc: OSError) -> str:
    """``the disk is full [ENOSPC]``: an OSError in words, with its errno's name."""
    words = OS_ERROR_WORDS.get(exc.errno) or exc.strerror or str(exc)
    name = errno.errorcode.get(exc.errno) if exc.errno is not None else None
    return f"{words} [{name}]" if name else words


def _about(exc: OSError, *paths: Path) -> bool:
    """Whether ``exc`` concerns one of ``paths`` (or names no file: a failed ``write()`` carries no name)."""
    named = {str(p) for p in (exc.filename, exc.filename2) if p is not None}
    return not named or bool(named & {str(p) for p in paths})


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` only on success.

    Raises:
        OutputError: writing the temporary file or renaming it failed with an OSError (the target is untouched).
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        reason = describe_os_error(exc)
        raise OutputError(f"cannot write {target}: {reason}; nothing was written", target, reason) from exc
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        fault_oserror("atomic.write", tmp_path)
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_current_umask())  # mkstemp makes 0600; artefacts get normal permissions
        os.replace(tmp_path, target)
    except OSError as exc:
        if not _about(exc, tmp_path, target):
            raise
        reason = describe_os_error(exc)
        kept = " (the previous file is unchanged)" if target.exists() else ""
        raise OutputError(f"cannot write {target}: {reason}; nothing was written there{kept}", target, reason) from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())
