"""``rts analyze RUN``: correlate every surrogate with the target (Table 3) and score rankings.

Prints the Table-3-style table (Pearson, Spearman and Kendall with p-values and bootstrap
intervals, plus the decision metrics: top-1 hit, top-k overlap, regret, compute saved) and writes
the full-precision table to ``RUN/analysis.csv`` and ``RUN/analysis.parquet`` (atomically). A run
of several main tasks is analysed study by study (each study's files in its folder).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_ranking_options(p: argparse.ArgumentParser) -> None:
    """``-k``, ``--resamples`` and ``--seed``: shared by ``rts analyze`` and ``rts report``."""
    p.add_argument(
        "-k",
        "--top-k",
        type=int,
        default=None,
        dest="k",
        help="k of the top-k overlap and of the compute-saved estimate "
        "(default: the run's stage2.top_k, else 3; capped at n-1)",
    )
    p.add_argument(
        "--resamples",
        type=int,
        default=999,
        help="bootstrap resamples of the confidence intervals (default 999)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Declare ``rts analyze``."""
    p = subparsers.add_parser(
        "analyze",
        help="correlate surrogates with the target and score their rankings",
        description=(
            "Correlate every registered surrogate of a finished `rts search` run with its target "
            "(worst-case main-task relative vulnerability after full training and strong "
            "attacks), and say whether ranking by the surrogate would have found the most "
            "robust combination. Writes RUN/analysis.csv and RUN/analysis.parquet."
        ),
    )
    p.add_argument("run", help="run folder of `rts search` (runs/<name>), or its URI (s3://...)")
    p.add_argument(
        "--surrogates",
        default=None,
        help="comma-separated surrogates or families (default: all), e.g. vuln,clean_error",
    )
    add_ranking_options(p)
    p.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="confidence level of the intervals (default 0.95)",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Analyse the run, print the table, write ``analysis.csv`` / ``analysis.parquet``."""
    from rts.search.analysis.rundata import load_location

    args.run, found = load_location(args.run)  # a URI is read from its local staging copy
    if not isinstance(found, dict):
        return _analyze(found, args.run, args)
    for main, data in found.items():  # a run of several main tasks: each study in turn
        print(f"== main task {main} ==")
        _analyze(data, data.path, args)
        print()
    return 0


def _analyze(data: Any, folder: Path, args: argparse.Namespace) -> int:
    """Analyse one run (``data``), print the table, write its files into ``folder``."""
    from rts.search.analysis.correlate import analyze
    from rts.search.analysis.rundata import combinations
    from rts.search.report.text import format_analysis
    from rts.tasks.io import atomic_path

    names = (
        [s.strip() for s in args.surrogates.split(",") if s.strip()] if args.surrogates else None
    )
    table = analyze(
        data,
        surrogates=names,
        k=args.k,
        n_resamples=args.resamples,
        seed=args.seed,
        confidence=args.confidence,
    )
    combos = combinations(data)
    n_target = int(combos["target"].notna().sum()) if len(combos) else 0
    print(
        f"{folder}: {len(data.trials)} trials, {len(combos)} combinations, {n_target} with a target"
    )
    if len(table):
        print(f"target: {table['target'].iloc[0]}")
        print(f"surrogates read from: {table['surrogate_source'].iloc[0]}")
    print()
    print(format_analysis(table))
    shared = set(table["note"]) if len(table) else set()
    if len(shared) == 1 and next(iter(shared)):
        print(f"\nnote (every surrogate): {shared.pop()}")
    else:
        notes = [f"  {r.surrogate}: {r.note}" for r in table.itertuples() if r.note]
        if notes:
            print("\nnotes:")
            print("\n".join(notes))
    for note in data.notes:
        print(f"note: {note}")
    _print_replay_correlation(data.config)
    csv_path = folder / "analysis.csv"
    pq_path = folder / "analysis.parquet"
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(pq_path) as tmp:
        table.to_parquet(tmp, index=False)
    print(f"\nwrote {csv_path} and {pq_path}")
    return 0


def _print_replay_correlation(config: Any) -> None:
    """A replayed run: how its early tables rank every task set against the full one."""
    from rts.search.analysis.replay import correlation_line, replay_correlations

    table = replay_correlations(config)
    if table is None:
        return
    print("\nearly vs full training on the replayed tables (every task set with both values):")
    for row in table.reset_index().to_dict("records"):
        print(f"  {correlation_line(row)}")
