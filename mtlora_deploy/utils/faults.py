"""Deterministic fault injection for crash tests: ``MTLORA_FAULT_POINT=NAME:COUNT`` kills the process there, and
``MTLORA_FAULT_OSERROR=NAME:ERRNO[:COUNT]`` makes a write fail there as a full disk would (``ENOSPC``).

Code that must survive a crash marks its stages with :func:`fault_point`. With the variable unset (always, outside
tests) a call is one dictionary lookup. With ``MTLORA_FAULT_POINT=checkpoint.file:3`` the third time the process
reaches ``checkpoint.file`` it sends itself SIGKILL: no ``finally`` block, no atexit handler, no flush runs, exactly
like ``kill -9`` or a power cut. Counts are per process, so a resumed run counts again from zero.
"""

from __future__ import annotations

import errno
import os
import signal

ENV_VAR = "MTLORA_FAULT_POINT"
OSERROR_ENV_VAR = "MTLORA_FAULT_OSERROR"

# Every named point, so tests can enumerate them and a typo in a test fails loudly.
POINTS: dict[str, str] = {
    "train.step": "after an optimizer step, before anything is written",
    "train.validate": "after a validation pass, before its checkpoint",
    "checkpoint.begin": "a checkpoint's staging folder exists, nothing written into it",
    "checkpoint.partial": "half of a checkpoint file's bytes are written",
    "checkpoint.file": "one checkpoint file is complete (and synced), the set is not",
    "checkpoint.manifest": "the manifest is written, the staging folder is not renamed yet",
    "checkpoint.commit": "the generation folder is renamed into place (the commit), the link is not switched",
    "checkpoint.switch": "the checkpoints link points at the new generation, old ones are not removed",
}
# Points where MTLORA_FAULT_OSERROR raises the OSError a failing write() or rename would.
OSERROR_POINTS: dict[str, str] = {
    "atomic.write": "an atomic writer's temporary file is written, before its rename onto the target",
}

_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL if ``MTLORA_FAULT_POINT`` names ``name`` and its count is reached."""
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def reset_fault_counts() -> None:
    """Forget how often each point was reached (tests that run several commands in one process)."""
    _hits.clear()


def fault_oserror(name: str, path: str | os.PathLike) -> None:
    """Raise ``OSError(ERRNO, ..., path)`` if ``MTLORA_FAULT_OSERROR=NAME:ERRNO[:COUNT]`` names ``name`` (ERRNO by
    name, e.g. ``ENOSPC``) and its count (default 1: the first time) is reached."""
    spec = os.environ.get(OSERROR_ENV_VAR)
    if not spec:
        return
    target, _, rest = spec.partition(":")
    if target != name:
        return
    code_name, _, count = rest.partition(":")
    code = getattr(errno, code_name or "ENOSPC")
    key = f"oserror:{name}"
    _hits[key] = _hits.get(key, 0) + 1
    if _hits[key] == int(count or 1):
        raise OSError(code, os.strerror(code), str(path))
