"""``rts search CONFIG [key=value ...]``: run (or resume) the two-stage robustness search.

Examples::

    rts search configs/quickstart.yaml
    rts search configs/quickstart.yaml search.n_trials=16 attack.eps=4/255 --dry-run
    rts search configs/my.yaml --address auto --storage /shared/rts
    rts search configs/my.yaml --address auto --storage s3://bucket/rts
    rts search -v configs/quickstart.yaml --dashboard   # trials' logs, Ray's dashboard

The config is validated completely before anything starts: a bad key or value is one line
``rts: error: search.encoders[1]: unknown encoder 'resnet19'; choose from ...`` and exit 2.
Running the same command again resumes an interrupted search (with a URI storage, on any
machine: the run is downloaded from the URI first). While a stage runs, a status block (on a
terminal) or a line per epoch report (elsewhere) shows the trials' progress and an estimate of
the time left.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Declare ``rts search`` and its arguments."""
    p = subparsers.add_parser(
        "search",
        help="search the auxiliary tasks, weights and encoder that make the main task robust",
        description=(
            "Two-stage search: Optuna proposes candidates through Ray Tune, a cheap surrogate "
            "stage prunes them with ASHA, the best are trained in full and attacked with "
            "PGD, APGD and WGD. Results go to <storage>/<name>/; rerun to resume."
        ),
    )
    p.add_argument("config", help="YAML config (see configs/quickstart.yaml)")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. search.n_trials=64 attack.eps=4/255",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help=(
            "print the search space size, the stages, the estimated trials and GPU-hours, then "
            "exit; reads no data (a missing data folder is a warning, not an error)"
        ),
    )
    p.add_argument(
        "--storage",
        default="runs",
        help=(
            "folder or URI (s3://, gs://, hdfs://, file:///abs) that holds <name>/ "
            "(default: runs); on a cluster a shared folder or a URI"
        ),
    )
    p.add_argument(
        "--address",
        default=None,
        help="join a Ray cluster: 'auto' or 'ray://host:10001' (default: start Ray locally)",
    )
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    p.add_argument(
        "--dashboard",
        action="store_true",
        help="start Ray's dashboard with the local Ray and print its URL (needs ray[default])",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Validate the config, then print the plan (``--dry-run``) or run the search."""
    from rts.search.config.convert import load_config, resolve
    from rts.search.config.schema import is_multi
    from rts.search.config.validate import missing_data, validate
    from rts.search.engine.experiment import SearchInterrupted
    from rts.search.engine.paths import run_dir
    from rts.search.engine.plan import format_plan, format_studies_plan, plan_search
    from rts.search.engine.session import check_ray_args
    from rts.search.results.pipeline import run_search
    from rts.search.results.studies import StudiesOutcome, run_studies

    cfg = load_config(args.config, args.overrides, check=False)
    validate(cfg, require_data=not args.dry_run)  # a dry run reads no data
    cfg = resolve(cfg)
    check_ray_args(args.address, args.num_cpus)
    paths = run_dir(cfg, args.storage)
    multi = is_multi(cfg)
    if args.dry_run:
        print(format_studies_plan(cfg) if multi else format_plan(cfg, plan_search(cfg)))
        print(f"results would go to {paths.display}")
        missing = missing_data(cfg.data)
        if missing:
            print(f"rts: warning: {missing}; the plan needs no data, a run does", file=sys.stderr)
        return 0
    import optuna

    verbose = getattr(args, "verbose", 0)
    if not verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    run = run_studies if multi else run_search
    try:
        outcome = run(
            cfg,
            storage=args.storage,
            address=args.address,
            num_cpus=args.num_cpus,
            echo=_echo,
            worker_logs=verbose > 0,
            dashboard=args.dashboard,
        )
    except SearchInterrupted as exc:
        print(f"rts: interrupted: {exc}", file=sys.stderr)
        return 130
    if isinstance(outcome, StudiesOutcome):
        return _print_studies(outcome)
    from rts.search.results.summary import format_summary

    print()
    print(format_summary(outcome.summary, outcome.paths.display))
    print(
        "Tables: trials.parquet (one row per trial), history.parquet (per epoch), "
        "attacks.parquet (stage-2 attacks), summary.md"
    )
    root = outcome.paths.root
    print(f"Report: rts report {root}   (surrogate correlations: rts analyze {root})")
    if not outcome.summary.recommended_trial:
        # Every stage-2 trial failed (a bug, a full disk, ...): scripts must see it.
        print("rts: search failed: no stage-2 trial completed; see trials.parquet", file=sys.stderr)
        return 1
    return 0


def _print_studies(outcome: Any) -> int:
    """The combined summary of a run of several main tasks; 1 when a study recommends nothing."""
    print()
    print(outcome.paths.summary_md.read_text(encoding="utf-8").rstrip())
    root = outcome.paths.root
    print(f"Results: {outcome.paths.display} (one run folder per main task inside)")
    print(f"Report: rts report {root}   (Tables 1-2: rows main task, columns auxiliary task)")
    empty = [m for m, o in outcome.outcomes.items() if not o.summary.recommended_trial]
    if empty:
        print(
            f"rts: search failed: no stage-2 trial completed for main task(s) {', '.join(empty)}",
            file=sys.stderr,
        )
        return 1
    return 0


def _echo(line: str) -> None:
    print(line, flush=True)
