"""The ``rts`` command: ``data``, ``train``, ``attack``, ``search``, ``analyze``, ``report``.

Each subcommand lives in its own module ``cli/<name>.py`` (``rts.cli.<name>``) with two functions:
``add_parser(subparsers)`` (declares its arguments and sets ``func``) and ``run(args) -> int``.
Heavy libraries (torch, ray, optuna) are imported inside ``run`` so ``rts --help`` stays fast.

Bad input anywhere (``ValueError``, a missing file) becomes one line ``rts: error: ...`` on
stderr and exit code 2, with no traceback; ``--debug`` re-raises to show it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from rts.cli import analyze, attack, data, report, search, train

SUBCOMMANDS = (data, train, attack, search, analyze, report)  # in the order --help lists them

USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("robust-task-search")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    """The full ``rts`` argument parser, with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="rts",
        description=(
            "robust-task-search: find the auxiliary tasks, loss weights and encoder that make a "
            "multi-task model hardest to attack."
        ),
    )
    parser.add_argument("--version", action="version", version=f"rts {_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        p = module.add_parser(sub)
        # -v after the subcommand too (``rts search -v c.yaml``); added to the -v before it.
        p.add_argument(
            "-v", "--verbose", dest="sub_verbose", action="count", default=0, help=VERBOSE_HELP
        )
    return parser


VERBOSE_HELP = "more log output (-vv: debug); with search, the trials' own output too"


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``: overrides after options, ``-v`` counted before and after the subcommand."""
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may follow options too (``rts search c.yaml --dry-run a.b=1``):
    # argparse stops filling a positional list at the first option.
    overrides = getattr(args, "overrides", None)
    if extra and isinstance(overrides, list) and all("=" in e and e[0] != "-" for e in extra):
        overrides += extra
        extra = []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.verbose += getattr(args, "sub_verbose", 0)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rts``; returns the process exit code."""
    parser = build_parser()
    args = parse_args(parser, argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        if args.debug:
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in message:
            message = f"{message}: {exc.filename}"
        print(f"rts: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rts: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
