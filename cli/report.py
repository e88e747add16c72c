"""``rts report RUN [--out DIR]``: a self-contained ``report.html`` and a ``summary.md``.

The HTML opens offline (inline CSS, PNGs embedded as base64): the recommendation first, then the
surrogate analysis, the paper-style heatmaps and figures, every combination, the compute spent
and the config. Default output folder: ``RUN/report``. A run of several main tasks gets one
report per study (``RUN/<study>/report``) and, in ``RUN/report``, the paper's Tables 1-2 (rows:
main task, columns: auxiliary task).
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
    from rts.search.analysis.rundata import load_location
    from rts.search.report.html import write_report

    args.run, found = load_location(args.run)  # a URI is read from its local staging copy
    out = args.out if args.out is not None else args.run / "report"
    if isinstance(found, dict):
        return _report_studies(found, args, out)
    paths = write_report(found, out, k=args.k, n_resamples=args.resamples, seed=args.seed)
    print(f"report: {paths['html']}")
    print(f"summary: {paths['markdown']}")
    return 0


def _report_studies(studies: dict, args: argparse.Namespace, out: Path) -> int:
    """A run of several main tasks: each study's report, then Tables 1-2 over all of them."""
    from rts.search.report.html import write_report
    from rts.search.report.studies import write_studies_report

    for main, data in studies.items():
        paths = write_report(
            data, data.path / "report", k=args.k, n_resamples=args.resamples, seed=args.seed
        )
        print(f"main task {main}: {paths['html']}")
    paths = write_studies_report(studies, out, name=args.run.name, seed=args.seed)
    print(f"report (Tables 1-2): {paths['html']}")
    print(f"summary: {paths['markdown']}")
    return 0
