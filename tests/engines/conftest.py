"""Fixtures shared by the engine tests."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """``mtlora ARGS`` in this process (its own process costs ~15 s of imports on this machine): (rc, out, err)."""
    from mtlora_deploy.cli.main import main

    def run(args, cwd):
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["mtlora", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run
