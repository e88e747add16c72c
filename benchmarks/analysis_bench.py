"""Cost of `rts analyze` and `rts report` against the number of combinations in a run.

Builds synthetic runs (an exhaustive search around main task ``d``: every subset of the first
``k`` auxiliary tasks, stage 1 with 3 epochs of history, stage 2 with PGD/APGD/WGD rows),
then times ``analyze`` (999 bootstrap resamples, 7 surrogates) and ``write_report``. Prints a
Markdown table: median of ``--repeats`` runs, peak RSS of the process after each size.

    python -m benchmarks.analysis_bench --sizes 3,6,9 --repeats 3
"""

from __future__ import annotations

import argparse
import itertools
import resource
import statistics
import tempfile
import time

import numpy as np
import pandas as pd

from rts.search.analysis.correlate import analyze
from rts.search.analysis.rundata import make_run_data
from rts.search.report.html import write_report

POOL = "sDnkKeEprA"


def synthetic_run(n_aux: int, seed: int = 0):
    """Every subset of the first ``n_aux`` pool tasks around ``d``: 2**n_aux combinations."""
    rng = np.random.default_rng(seed)
    trials, attacks, history = [], [], []
    pool = POOL[:n_aux]
    subsets = [c for r in range(n_aux + 1) for c in itertools.combinations(pool, r)]
    for i, aux in enumerate(subsets):
        tasks = "d" + "".join(aux)
        target = 1.0 + 0.1 * len(aux) + rng.normal(0, 0.2)
        for stage in (1, 2):
            tid = f"s{stage}-{i:05d}"
            trials.append(
                {
                    "trial_id": tid,
                    "stage": stage,
                    "tasks": tasks,
                    "main": "d",
                    "encoder": "resnet50",
                    "trained_encoder": "resnet18" if stage == 1 else "resnet50",
                    "epochs": 3 if stage == 1 else 10,
                    "status": "completed",
                    "wall_s": 30.0 if stage == 1 else 300.0,
                    "clean_error": 0.2 + rng.random() * 0.05,
                }
            )
        for a in ("pgd", "apgd", "wgd"):
            attacks.append(
                {
                    "trial_id": f"s2-{i:05d}",
                    "attack": a,
                    "attacked": "d",
                    "task": "d",
                    "rel_vuln": target + rng.normal(0, 0.05),
                }
            )
        for e in range(4):
            history.append(
                {
                    "trial_id": f"s1-{i:05d}",
                    "epoch": e,
                    "time_s": 10.0 * e,
                    "clean_error": 0.3 - 0.02 * e,
                    "vuln": target + rng.normal(0, 0.5 / (e + 1)) if e else np.nan,
                    "grad_bound": 0.05 + rng.random() * 0.01 if e <= 1 else np.nan,
                }
            )
    return make_run_data(pd.DataFrame(trials), pd.DataFrame(attacks), pd.DataFrame(history))


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="3,6,9", help="numbers of auxiliary tasks (2**k combos)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--resamples", type=int, default=999)
    args = p.parse_args()
    rows = []
    for k in (int(s) for s in args.sizes.split(",")):
        run = synthetic_run(k)
        t_an, t_rep = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            table = analyze(run, n_resamples=args.resamples)
            t1 = time.perf_counter()
            with tempfile.TemporaryDirectory() as out:
                write_report(run, out, table=table)
            t2 = time.perf_counter()
            t_an.append(t1 - t0)
            t_rep.append(t2 - t1)
        rows.append(
            (2**k, len(table), statistics.median(t_an), statistics.median(t_rep), peak_rss_mib())
        )
    print(
        f"| combinations | surrogates | analyze ({args.resamples} resamples) s | "
        "report s | peak RSS MiB |"
    )
    print("|---|---|---|---|---|")
    for n, m, a, r, rss in rows:
        print(f"| {n} | {m} | {a:.2f} | {r:.2f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
