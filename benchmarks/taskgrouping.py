"""Search quality on real results: the real ``rts search`` replayed on Standley et al.'s tables.

Standley et al. (ICML 2020) trained a network on every set of five Taskonomy tasks and published
each network's per-task loss on validation (after full training and at 20 % of it) and on test
(``benchmarks/data/taskgrouping/``, MIT licence). For each main task there are 16 candidate
auxiliary sets with a known test answer. This benchmark runs the real pipeline (``run_search``:
Ray Tune, Optuna, the stages, the tables, the summary) with every trial answered from the
validation tables (:mod:`rts.search.engine.replay`), once per budget, main task and seed, and
scores the recommendation on the test table::

    python -m benchmarks.taskgrouping --full benchmarks/data/taskgrouping/results.txt \\
        --test benchmarks/data/taskgrouping/results_test.txt \\
        --early benchmarks/data/taskgrouping/results_20.txt --out setting1.csv

CSV: one row per budget, main task and seed: ``compute_fraction`` (over 16 full trainings; a
trial stopped at the early fraction costs ``--early-cost``), ``test_rank`` (1..16, ties take
the better rank), ``regret`` (the pick's test loss minus the best, over the best-to-worst
range), ``pick`` and ``free_hit`` (the test-best set is the main task alone, which every stage 2
trains: such problems are reported apart, they cannot tell a good search from a bad one).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

DATA = Path(__file__).parent / "data" / "taskgrouping"
FULL_EPOCHS = 5
"""Epochs of a full training in the replayed searches: an epoch is 20 % of training."""


@dataclass(frozen=True)
class Budget:
    """A search design: config overrides on top of the replay keys; ``seeded``: it draws at
    random (else one run answers every seed)."""

    name: str
    overrides: tuple[str, ...]
    seeded: bool = False
    about: str = ""


def budgets(early_epochs: int) -> dict[str, Budget]:
    """The budgets compared (``default`` = what ``rts search`` does with the replay keys)."""
    e = early_epochs
    sampler = (
        "stage1.design=sampler",
        "stage1.model=none",
        f"stage1.epochs={e}",
        "search.n_trials=8",
    )
    items = [
        Budget("default", (), about="the defaults: pairs in full, hoa, 2 best-predicted trained"),
        Budget("hoa", ("stage2.top_k=1",), about="pairs in full, hoa, its best set trained"),
        Budget(
            "exhaustive",
            (
                "stage1.design=sampler",
                "stage1.model=none",
                "search.sampler=grid",
                "search.n_trials=16",
                "search.batch=16",
                f"stage1.epochs={FULL_EPOCHS}",
                "stage1.scheduler=fifo",
                "stage1.encoder=same",
            ),
            about="every set in full",
        ),
        Budget(
            "esa",
            (
                "stage1.design=sampler",
                "stage1.model=none",
                "search.sampler=grid",
                "search.n_trials=16",
                "search.batch=16",
                f"stage1.epochs={e}",
                "stage1.scheduler=fifo",
                "stage1.encoder=same",
                "stage2.top_k=1",
                "stage2.baseline=false",
            ),
            about="every set early, the best early set trained",
        ),
        Budget(
            "pairs-early-additive",
            ("stage1.model=additive", f"stage1.epochs={e}", "stage1.encoder=same"),
            about="pairs early, additive model, top 2 + baseline",
        ),
        Budget(
            "random",
            (*sampler, "search.sampler=random", "stage1.scheduler=fifo", "stage1.encoder=same"),
            seeded=True,
            about="8 random sets early, top 2 + baseline",
        ),
        Budget(
            "tpe",
            (
                *sampler,
                "search.sampler=tpe",
                "stage1.scheduler=asha",
                "stage1.encoder=same",
                "stage1.grace_period=1",
            ),
            seeded=True,
            about="the earlier default: TPE (per task) early with ASHA, top 2 + baseline",
        ),
        Budget(
            "tpe-subset",
            (
                *sampler,
                "search.sampler=tpe",
                "search.encoding=subset",
                "stage1.scheduler=fifo",
                "stage1.encoder=same",
            ),
            seeded=True,
            about="TPE over subsets early, top 2 + baseline",
        ),
        Budget(
            "gp",
            (*sampler, "search.sampler=gp", "stage1.scheduler=fifo", "stage1.encoder=same"),
            seeded=True,
            about="GP early, top 2 + baseline",
        ),
    ]
    return {b.name: b for b in items}


def replay_overrides(
    full: str, early: str, columns: str, skip_rows: int, early_fraction: float, main: str
) -> list[str]:
    """The keys every budget shares: the replay of the validation tables for ``main``."""
    letters = columns.replace(",", "")
    pool = "".join(c for c in letters if c not in (main, "_"))
    return [
        "name=tg",
        f"search.main={main}",
        f"search.pool={pool}",
        "search.min_aux=0",
        f"search.max_aux={len(pool)}",
        "search.encoders=resnet18",
        "search.deterministic=true",
        f"stage2.epochs={FULL_EPOCHS}",
        f"replay.tables={{1.0: '{Path(full).resolve()}', {early_fraction:g}: "
        f"'{Path(early).resolve()}'}}",
        f"replay.columns={','.join(letters)}",
        f"replay.skip_rows={skip_rows}",
        "resources.cpus_per_trial=1",
        "tracking.tensorboard=false",
    ]


def score_pick(test: Mapping[str, float], pick: str) -> tuple[int, float]:
    """``pick``'s rank among ``test`` (1 = lowest loss; ties take the better rank) and its
    regret ((loss − best) / (worst − best); 0 when every set ties)."""
    values = [v for v in test.values() if not math.isnan(v)]
    value = test[pick]
    best, worst = min(values), max(values)
    rank = 1 + sum(1 for v in values if v < value)
    regret = (value - best) / (worst - best) if worst > best else 0.0
    return rank, regret


def compute_fraction(
    trials: pd.DataFrame, full_epochs: int, early_epochs: int, early_cost: float
) -> float:
    """Compute of a search over the exhaustive one (16 full trainings): a trial's epochs
    reached, charged ``early_cost`` per ``early_epochs`` up to the early fraction and the rest
    linearly up to 1 for a full training; reused stage-2 rows (no compute) count 0."""
    total = 0.0
    for row in trials.itertuples():
        if float(getattr(row, "cost_units", 1.0) or 0.0) == 0.0:
            continue
        e = float(row.epochs)
        if e <= early_epochs:
            total += early_cost * e / early_epochs
        else:
            total += early_cost + (1 - early_cost) * (e - early_epochs) / (
                full_epochs - early_epochs
            )
    return total


def score_run(
    trials: pd.DataFrame,
    pick: str,
    test: Mapping[str, float],
    *,
    n_sets: int,
    early_epochs: int,
    early_cost: float,
) -> dict[str, float | int | str | bool]:
    """One row of the CSV for one finished search (see the module docstring)."""
    rank, regret = score_pick(test, pick)
    best = min(test, key=lambda a: (test[a], a))
    return {
        "compute_fraction": compute_fraction(trials, FULL_EPOCHS, early_epochs, early_cost)
        / n_sets,
        "test_rank": rank,
        "regret": regret,
        "pick": pick,
        "free_hit": best == "",
    }


def test_table(path: str, columns: str, skip_rows: int, main: str) -> dict[str, float]:
    """Auxiliary set → the main task's test loss."""
    from rts.search.config.replay import read_table

    table = read_table(path, tuple(columns.replace(",", "")), skip_rows)
    return {t.replace(main, ""): row[main] for t, row in table.items() if main in row}


def run(args: argparse.Namespace, echo: Callable[[str], None] = print) -> pd.DataFrame:
    """Every budget on every main task and seed; the CSV's rows."""
    import optuna
    import ray

    optuna.logging.set_verbosity(optuna.logging.ERROR)

    from rts.search.config.convert import load_config
    from rts.search.results.pipeline import run_search

    letters = args.columns.replace(",", "")
    mains = [m for m in (args.mains or letters) if m != "_"]
    early_fraction = args.early_fraction
    early_epochs = max(1, round(early_fraction * FULL_EPOCHS))
    table = budgets(early_epochs)
    names = [b.strip() for b in args.budgets.split(",")] if args.budgets else list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown budget(s) {unknown}; choose from {', '.join(table)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    started = time.time()
    ray.init(
        num_cpus=args.num_cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False
    )
    try:
        with tempfile.TemporaryDirectory(prefix="rts-tg-") as storage:
            for main in mains:
                test = test_table(args.test, args.columns, args.skip_rows, main)
                base = replay_overrides(
                    args.full, args.early, args.columns, args.skip_rows, early_fraction, main
                )
                for name in names:
                    budget = table[name]
                    for seed in seeds if budget.seeded else seeds[:1]:
                        over = [
                            *base,
                            *budget.overrides,
                            f"search.seed={seed}",
                            f"name=tg-{main}-{name}-{seed}",
                        ]
                        cfg = load_config(None, over)
                        with contextlib.redirect_stdout(io.StringIO()):
                            outcome = run_search(cfg, storage=storage)
                        scores = score_run(
                            outcome.trials,
                            outcome.summary.recommended_aux,
                            test,
                            n_sets=len(test),
                            early_epochs=early_epochs,
                            early_cost=args.early_cost,
                        )
                        for s in seeds if not budget.seeded else [seed]:
                            rows.append({"budget": name, "main": main, "seed": s, **scores})
                        echo(
                            f"{main} {name} seed {seed}: pick {scores['pick'] or '-'} rank "
                            f"{scores['test_rank']} ({time.time() - started:.0f} s)"
                        )
    finally:
        ray.shutdown()
    return pd.DataFrame(rows)


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Per budget: compute, mean test rank, picks in the test top 2 and mean regret, over the
    problems whose best set is not the free single-task hit, and over those apart."""
    out = []
    for name, g in frame.groupby("budget", sort=False):
        hard, free = g[~g["free_hit"]], g[g["free_hit"]]
        out.append(
            {
                "budget": name,
                "compute": g["compute_fraction"].mean(),
                "mean test rank": g["test_rank"].mean(),
                "top 2": f"{int((g['test_rank'] <= 2).sum())} of {len(g)}",
                "mean regret": g["regret"].mean(),
                "rank (no free hit)": hard["test_rank"].mean() if len(hard) else math.nan,
                "top 2 (no free hit)": f"{int((hard['test_rank'] <= 2).sum())} of {len(hard)}",
                "free hits found": f"{int((free['test_rank'] == 1).sum())} of {len(free)}",
            }
        )
    return pd.DataFrame(out)


def markdown(table: pd.DataFrame) -> str:
    """The per-budget table as Markdown."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for _, r in table.iterrows():
        cells = [
            f"{v:.0%}" if c == "compute" else f"{v:.2f}" if isinstance(v, float) else str(v)
            for c, v in r.items()
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", default=str(DATA / "results.txt"), help="validation, full training")
    p.add_argument("--test", default=str(DATA / "results_test.txt"), help="test losses")
    p.add_argument("--early", default=str(DATA / "results_20.txt"), help="validation, early")
    p.add_argument("--early-fraction", type=float, default=0.2, help="training fraction of --early")
    p.add_argument("--early-cost", type=float, default=0.2, help="cost of an early lookup")
    p.add_argument("--columns", default="s,d,n,k,e", help="task letter of each column")
    p.add_argument("--skip-rows", type=int, default=1, help="rows skipped (Standley: 1)")
    p.add_argument("--mains", default="", help="main tasks (default: every column)")
    p.add_argument("--budgets", default="", help="comma-separated (default: all)")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--out", required=True, help="CSV file")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    frame = run(args, echo=lambda line: print(line, file=sys.stderr))
    frame.to_csv(args.out, index=False)
    print(markdown(summarise(frame)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
