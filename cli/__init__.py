"""The ``rts`` command line: one module per subcommand, argument parsing and exit codes only."""

from __future__ import annotations

from rts.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
