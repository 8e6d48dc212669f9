"""How much the libraries underneath may print, as the CLI decided (``mtlora --verbose`` or not).

The CLI sets ``MTLORA_LIBRARY_LOGS`` to ``quiet`` (the default) or ``verbose`` for the duration of a command; an
environment variable, so DataLoader workers and the subprocesses of ``profile --memory`` follow it too. Unset (the
package used as a library), nothing here changes any library's own settings.
"""

from __future__ import annotations

import os

ENV_VAR = "MTLORA_LIBRARY_LOGS"
QUIET, VERBOSE = "quiet", "verbose"


def quiet_libraries() -> bool:
    """True when the CLI asked for the libraries' own warnings and progress lines to be held back."""
    return os.environ.get(ENV_VAR) == QUIET


def verbose_libraries() -> bool:
    """True under ``mtlora --verbose``: everything the libraries print goes through."""
    return os.environ.get(ENV_VAR) == VERBOSE
