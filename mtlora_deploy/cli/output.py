"""What reaches the terminal while a command runs: the toolkit's own lines, said once; the libraries' warnings, log
records and C++ logs only under ``mtlora --verbose``.

Python warnings raised by this package (a :class:`~mtlora_deploy.errors.ToolkitWarning`, or a plain UserWarning
attributed to a file of the package) print as one ``warning: ...`` line, each text once, with no source-line echo,
the library's `field` names written as the running command's flags (:mod:`mtlora_deploy.cli.flags`).
Other warnings (torch's DataLoader, timm, ONNX Runtime's quantizer, a library's Deprecation/FutureWarning even when
its stacklevel points into this package) and other packages' log records below ERROR are held back unless
``--verbose``. Libraries that log from C++ follow ``MTLORA_LIBRARY_LOGS``
(:mod:`mtlora_deploy.utils.verbosity`). Everything is restored when the command ends, so the CLI can run inside
another process (the tests do) without changing it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import click

import mtlora_deploy
from mtlora_deploy.errors import ToolkitWarning
from mtlora_deploy.utils.verbosity import ENV_VAR, QUIET, VERBOSE

PACKAGE_DIR = Path(mtlora_deploy.__file__).resolve().parent


def _from_package(filename: str) -> bool:
    try:
        return Path(filename).resolve().is_relative_to(PACKAGE_DIR)
    except (OSError, ValueError):
        return False


def one_line(text: object) -> str:
    """A message as one line: every run of whitespace (newlines included) becomes one space."""
    return " ".join(str(text).split())


class WarningPrinter:
    """``warnings.showwarning`` for a command: the toolkit's warnings once each, others only when verbose."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.seen: set[str] = set()

    def __call__(self, message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        if issubclass(category, ToolkitWarning) or (category is UserWarning and _from_package(filename)):
            self.say(one_line(message))
        elif self.verbose:
            sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    def say(self, text: str) -> None:
        from mtlora_deploy.cli.flags import current_command, render

        text = render(text, current_command())
        if text not in self.seen:
            self.seen.add(text)
            click.secho(f"warning: {text}", fg="yellow", err=True)


class LogPrinter(logging.Handler):
    """The root logger's one handler for a command: the toolkit's records at WARNING and above as one line each,
    other loggers' records only at ERROR and above, everything at INFO and above when verbose."""

    def __init__(self, printer: WarningPrinter) -> None:
        super().__init__(logging.INFO if printer.verbose else logging.WARNING)
        self.printer = printer

    def emit(self, record: logging.LogRecord) -> None:
        ours = record.name.split(".")[0] == "mtlora_deploy"
        if self.printer.verbose:
            sys.stderr.write(f"[{record.name}] {record.levelname}: {record.getMessage()}\n")
        elif ours:
            self.printer.say(one_line(record.getMessage()))
        elif record.levelno >= logging.ERROR:
            click.secho(f"{record.name}: {one_line(record.getMessage())}", fg="yellow", err=True)


@contextlib.contextmanager
def output_policy(verbose: bool) -> Iterator[WarningPrinter]:
    """Apply the policy for the duration of a command; the warning filters, the root logger and the environment
    variable are restored afterwards."""
    printer = WarningPrinter(verbose)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    previous_env = os.environ.get(ENV_VAR)
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # once per place; the printer then says each text once
        warnings.showwarning = printer
        root.handlers = [LogPrinter(printer)]
        root.setLevel(logging.INFO if verbose else logging.WARNING)
        os.environ[ENV_VAR] = VERBOSE if verbose else QUIET
        try:
            yield printer
        finally:
            root.handlers, root.level = handlers, level
            if previous_env is None:
                os.environ.pop(ENV_VAR, None)
            else:
                os.environ[ENV_VAR] = previous_env
