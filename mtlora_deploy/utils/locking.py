"""An exclusive lock on a file shared by processes (two builds updating one timing cache), and a locked update.

Polygraphy's ``LockFile`` pattern (``polygraphy.util.LockFile``): lock a ``PATH.lock`` file beside the target with
``fcntl.lockf``, and never delete the lock file (a process that opened the old one would no longer exclude a new
one). The update helper re-reads the target under the lock, so a writer merges with what the others wrote since.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from mtlora_deploy.utils.atomic import write_bytes_atomic


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock for ``path`` (on ``path.lock``) inside the ``with`` block."""
    from polygraphy.util import LockFile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with LockFile(str(path)):
        yield path


def update_file_locked(path: str | Path, merge: Callable[[bytes], bytes]) -> bytes:
    """Under the lock: read ``path`` (``b""`` when absent), write ``merge(current)`` atomically, return it."""
    path = Path(path)
    with file_lock(path):
        current = path.read_bytes() if path.is_file() else b""
        merged = merge(current)
        write_bytes_atomic(path, merged)
    return merged
