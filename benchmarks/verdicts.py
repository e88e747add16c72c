"""Calibration of the summary's verdicts: how often they are wrong when the truth is known.

    python -m benchmarks.verdicts --reps 1000 --out verdicts.csv

Simulates a stage 2 of ``K`` candidates and the single-task baseline (``K + 1`` models), each
trained under ``S`` seeds and attacked on the same ``N`` images, and runs every replication
through the very function the summary and the report use
(:func:`rts.search.results.recommend.compare`, the recommendation = the lowest value). A
model's per-image relative vulnerability is ``base + level + seed offset + image noise``
(clean errors ~ U(0.1, 1), ``adv = clean · (1 + ratio)``, ``mean`` statistic): image noise sd
:data:`IMAGE_SD`, seed noise sd :data:`SEED_SD` between two trainings of one model (with one
seed, no seed noise: a single seed's offset is part of the trained model the verdict is about,
and no interval over images can see it; the summary says so).

Two truths: every model equal (``true_difference`` 0), and one candidate more robust than the
others by one image-noise sd (``true_difference`` 1). Per verdict, K and S it reports ``rate``:

* ``better`` (the recommendation is significantly more robust than the baseline): a false
  positive when all are equal, the power otherwise;
* ``worse`` (significantly less robust): a false positive under both truths;
* ``not tied`` (some model declared distinguishable from the recommendation): a false positive
  when all are equal; otherwise the power (share of the truly worse models told apart);
* ``interval misses`` (the recommendation's interval misses its true value, after it was picked
  as the lowest of K + 1): the coverage error, under both truths.

``nominal`` is the error rate the verdicts control (family-wise 5 %); ``goal_met`` says whether
a false-positive rate is within the simulation error of it: at most the 99 % binomial quantile of
``reps`` replications at the nominal rate (6.7 % for 5 % over 1,000; per cell at 1 %, so that a
grid of 12 cells at their nominal rate is not flagged by chance one time in four, as 1.96
standard errors, 6.35 %, would be). CSV: one row per
verdict, K, S and true difference. Vectorised: 1,000 replications of the whole grid take a few
minutes on one core.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import binom

from rts.search.results.recommend import compare

IMAGE_SD = 0.3
"""Per-image noise sd of the relative vulnerability."""
SEED_SD = 0.05
"""Sd of a model's offset between training seeds (the audit's value)."""
BASE = 0.5
"""Every model's true relative vulnerability (the better one: ``BASE − IMAGE_SD``)."""
NOMINAL = 0.05
"""Family-wise error rate the verdicts control (simultaneous 95 % intervals)."""
KS = (1, 4, 8)
SS = (1, 2, 3, 5)


def simulate(k: int, s: int, n: int, difference: float, rng: np.random.Generator) -> pd.DataFrame:
    """One replication's per-image errors: ``key`` ``"base"`` and ``"c0"``…, ``seed``, ``unit``;
    ``c0`` is more robust than the others by ``difference`` image-noise sds."""
    keys = ["base", *(f"c{i}" for i in range(k))]
    level = np.zeros(len(keys))
    level[1] -= difference * IMAGE_SD
    clean = rng.uniform(0.1, 1.0, n)
    seed_sd = SEED_SD if s > 1 else 0.0
    offset = rng.normal(0, seed_sd, (s, 1, len(keys)))
    ratio = BASE + level + offset + rng.normal(0, IMAGE_SD, (s, n, len(keys)))
    adv = clean[None, :, None] * (1 + ratio)
    seed, unit, model = np.meshgrid(np.arange(s), np.arange(n), np.arange(len(keys)), indexing="ij")
    return pd.DataFrame(
        {
            "key": np.asarray(keys)[model.ravel()],
            "seed": seed.ravel(),
            "unit": unit.ravel(),
            "clean_error": np.broadcast_to(clean[None, :, None], adv.shape).ravel(),
            "adv_error": adv.ravel(),
        }
    )


def replicate(k: int, s: int, n: int, difference: float, seed: int) -> dict[str, float]:
    """The verdicts of one replication (1.0 = the event happened)."""
    rng = np.random.default_rng(seed)
    boot = int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])  # not the data's stream
    comp = compare(simulate(k, s, n, difference, rng), "mean", baseline="base", seed=boot)
    table = comp.table.set_index("key")
    truth = {key: BASE for key in table.index}
    truth["c0"] = BASE - difference * IMAGE_SD
    lo, hi = table.loc[comp.best, ["low", "high"]]
    others = table.drop(index=comp.best)
    out = {
        "better": float(comp.verdict == "better"),
        "worse": float(comp.verdict == "worse"),
        "interval misses": float(not lo <= truth[comp.best] <= hi),
    }
    if difference == 0:
        out["not tied"] = float((~others["tied"]).any())
    else:  # power: the truly worse models told apart from the best (c0)
        worse = others[others.index != "c0"] if comp.best == "c0" else others.iloc[:0]
        out["not tied"] = float((~worse["tied"]).mean()) if len(worse) else 0.0
    return out


def calibrate(
    reps: int, *, ks: Sequence[int] = KS, ss: Sequence[int] = SS, n: int = 100, seed: int = 0
) -> pd.DataFrame:
    """The table: one row per verdict, K, S and true difference."""
    rows = []
    for k, s, difference in itertools.product(ks, ss, (0.0, 1.0)):
        start = time.perf_counter()
        events = pd.DataFrame(
            [replicate(k, s, n, difference, seed + 1_000_003 * r) for r in range(reps)]
        )
        for verdict, hits in events.items():
            rate = float(hits.mean())
            power = difference > 0 and verdict in ("better", "not tied")
            limit = float(binom.ppf(0.99, reps, NOMINAL)) / reps
            rows.append(
                {
                    "verdict": verdict,
                    "K": k,
                    "S": s,
                    "true_difference": difference,
                    "rate": rate,
                    "nominal": math.nan if power else NOMINAL,
                    "kind": "power" if power else "false positive",
                    "goal_met": True if power else rate <= limit,
                    "reps": reps,
                    "images": n,
                    "seed_sd": SEED_SD if s > 1 else 0.0,
                }
            )
        print(
            f"K={k} S={s} difference={difference:g}: {time.perf_counter() - start:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """Rates by verdict (rows) and K × S (columns), one block per true difference."""
    out = []
    for difference, part in table.groupby("true_difference"):
        wide = part.pivot_table(index="verdict", columns=["K", "S"], values="rate")
        head = "| verdict | " + " | ".join(f"K={k} S={s}" for k, s in wide.columns) + " |"
        out += [f"true difference {difference:g} image-noise sd:", "", head]
        out.append("| --- |" + " --- |" * len(wide.columns))
        for verdict, row in wide.iterrows():
            out.append(f"| {verdict} | " + " | ".join(f"{100 * v:.1f} %" for v in row) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=1000, help="replications per K, S, difference")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="CSV file (one row per verdict, K, S, truth)")
    args = p.parse_args(argv)
    table = calibrate(args.reps, n=args.images, seed=args.seed)
    if args.out:
        table.to_csv(args.out, index=False)
    print(markdown(table))
    failed = table[~table["goal_met"].astype(bool)]
    print(
        "every false-positive rate within nominal + simulation error"
        if failed.empty
        else f"{len(failed)} false-positive rate(s) above nominal + simulation error"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
