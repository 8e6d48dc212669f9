"""The output policy of one command: the toolkit's warnings once in one line, the libraries' only with --verbose,
and everything as it was after the command."""

from __future__ import annotations

import logging
import os
import warnings

from mtlora_deploy.cli.output import output_policy
from mtlora_deploy.errors import warn
from mtlora_deploy.utils.verbosity import ENV_VAR


def _library_noise() -> None:
    # what a library does: a warning attributed to its own file, a root-logger record, a named logger's record
    warnings.warn_explicit("deprecated thing", DeprecationWarning, "/site-packages/lib/mod.py", 10)
    warnings.warn_explicit("library advice", UserWarning, "/site-packages/lib/mod.py", 11)
    logging.warning("Bias of Gemm node 'n' is not constant.")
    logging.getLogger("lib.sub").info("progress 50%")


def test_quiet_default_says_ours_once_and_holds_the_libraries_back(capsys):
    root = logging.getLogger()
    before = (root.handlers[:], root.level, os.environ.get(ENV_VAR), warnings.showwarning)
    with output_policy(verbose=False):
        assert os.environ[ENV_VAR] == "quiet"
        _library_noise()
        for _ in range(3):
            warn("the calibration set has 8 images")
        logging.getLogger("lib").error("a real failure")
    err = capsys.readouterr().err
    assert err.splitlines() == ["warning: the calibration set has 8 images", "lib: a real failure"]
    assert (root.handlers, root.level, os.environ.get(ENV_VAR), warnings.showwarning) == before


def test_verbose_lets_the_libraries_through(capsys):
    with output_policy(verbose=True):
        assert os.environ[ENV_VAR] == "verbose"
        _library_noise()
    err = capsys.readouterr().err
    for text in ("DeprecationWarning: deprecated thing", "library advice", "Bias of Gemm node", "progress 50%"):
        assert text in err, err
