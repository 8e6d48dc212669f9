"""Deterministic fault injection for crash tests: ``MTLORA_FAULT_POINT=NAME:COUNT`` kills the process there.

Code that must survive a crash marks its stages with :func:`fault_point`. With the variable unset (always, outside
tests) a call is one dictionary lookup. With ``MTLORA_FAULT_POINT=checkpoint.file:3`` the third time the process
reaches ``checkpoint.file`` it sends itself SIGKILL: no ``finally`` block, no atexit handler, no flush runs, exactly
like ``kill -9`` or a power cut. Counts are per process, so a resumed run counts again from zero.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "MTLORA_FAULT_POINT"

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
