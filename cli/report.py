"""``rts report RUN [--out DIR]``: a self-contained ``report.html`` and a ``summary.md``.

The HTML opens offline (inline CSS, PNGs embedded as base64): the recommendation first, then the
surrogate analysis, the paper-style heatmaps and figures, every combination, the compute spent
and the config. Default output folder: ``RUN/report``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rts.cli.analyze import add_ranking_options


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Declare ``rts report``."""
    p = subparsers.add_parser(
        "report",
        help="write report.html (self-contained) and summary.md for a search run",
        description=(
            "Write a self-contained report.html (opens offline) and summary.md for a finished "
            "`rts search` run: the recommendation, the surrogate analysis, paper-style tables "
            "and figures, the compute spent and the config."
        ),
    )
    p.add_argument("run", help="run folder of `rts search` (runs/<name>), or its URI (s3://...)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RUN/report)")
    add_ranking_options(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Load the run, analyse it, write the report; print where it went."""
    from rts.search.analysis.rundata import load_run
    from rts.search.engine.storage import fetch
    from rts.search.report.html import write_report

    args.run = fetch(args.run)  # a URI is read from its local staging copy
    data = load_run(args.run)
    out = args.out if args.out is not None else args.run / "report"
    paths = write_report(data, out, k=args.k, n_resamples=args.resamples, seed=args.seed)
    print(f"report: {paths['html']}")
    print(f"summary: {paths['markdown']}")
    return 0
