"""The ``rts`` entry point: version, help, and the one-line error contract."""

from __future__ import annotations

import subprocess
import sys

from rts.cli import main


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.startswith("rts ")


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: rts" in capsys.readouterr().out


def test_console_script_help():
    out = subprocess.run(
        [sys.executable, "-m", "rts", "--help"], capture_output=True, text=True, check=True
    )
    assert "robust-task-search" in out.stdout
