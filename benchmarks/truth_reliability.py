"""Does the truth survive a second seed? The exhaustive study under several training seeds.

    python -m benchmarks.truth_reliability                        # RQ1 synthetic, seeds 0-3
    python -m benchmarks.truth_reliability --seeds 0,1 --storage /tmp/tr search.pool=sD

Runs the exhaustive study of ``--config`` (default the synthetic RQ1 study: main task ``d``, every
subset of the pool trained for ``stage2.epochs`` and attacked with the ensemble) once per training
seed (``search.trial_seed``), then, for every vulnerability statistic
(:data:`rts.attacks.statistics.STATISTICS`), measured on the same per-image errors
(``images.parquet``, per-image worst case over the attacks):

* **split-half Spearman**: the subsets ranked by the mean over half of the seeds against the
  ranking by the mean over the other half, averaged over every split (and its minimum): how
  reproducible the ranking a study reports is. Goal: ≥ 0.8 for the default statistic. An odd
  seed count splits into ⌊S/2⌋ and ⌈S/2⌉ seeds (every seed used); splits whose half is constant
  are counted and warned about; beside it the Spearman-Brown reliability of the full S-seed
  mean, ``2 r / (1 + r)``.
* **distinguishable from the best**: the share of subsets whose paired simultaneous interval of
  the difference to the best (the seeds as clusters; :mod:`rts.attacks.simultaneous`) lies
  above 0.
* the main task's **skill** of every model (min and median over seeds), and how many models have
  not learned it (skill ≤ 0): a ranking of such models is noise whatever the statistic.

Prints Markdown tables; wall time per seed and peak RSS beside them. ``--fake`` runs the same
pipeline on the tests' simulated trials (seconds; a check of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import itertools
import math
import resource
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from benchmarks.search_efficiency import markdown, truth_overrides, truth_tied, truth_units
from rts.attacks.statistics import STATISTICS, get_statistic

DEFAULT_CONFIG = "configs/rq1-tasks-norms-budgets-synthetic.yaml"


def subset_values(images: pd.DataFrame, trials: pd.DataFrame, statistic: str) -> pd.Series:
    """The statistic of every stage-2 subset (index: auxiliary set) from its per-image errors."""
    stat = get_statistic(statistic)
    worst = images[images["attack"] == "worst"]
    aux = trials.set_index("trial_id")["aux"]
    out = {}
    for tid, g in worst.groupby("trial_id"):
        out[str(aux[tid])] = stat(g["clean_error"].to_numpy(), g["adv_error"].to_numpy())
    return pd.Series(out, dtype=float).sort_index()


GOAL = 0.8
"""The split-half Spearman the default statistic should reach."""


def pairwise_spearman(values: pd.DataFrame) -> float:
    """Mean Spearman correlation of the subsets' values between every two seeds (columns): the
    reproducibility of a one-seed study."""
    rhos = []
    for a, b in itertools.combinations(values.columns, 2):
        ok = values[a].notna() & values[b].notna()
        if ok.sum() >= 3:
            rhos.append(float(spearmanr(values.loc[ok, a], values.loc[ok, b]).statistic))
    return float(np.mean(rhos)) if rhos else math.nan


def seeds_needed(r1: float, goal: float = GOAL) -> float:
    """Training seeds (both halves together) for a split-half correlation of ``goal``, by the
    Spearman-Brown prophecy from the one-seed correlation ``r1``: a mean over ``k`` seeds has
    reliability ``k r1 / (1 + (k - 1) r1)``. Infinite when ``r1 <= 0`` (no signal to average)."""
    if not r1 > 0:
        return math.inf
    if r1 >= goal:
        return 2.0
    return 2.0 * math.ceil(round(goal * (1 - r1) / (r1 * (1 - goal)), 9))


@dataclass(frozen=True)
class SplitHalf:
    """Split-half reliability of the ranking over ``S`` seeds.

    Attributes:
        mean, min: Spearman correlation between the halves' mean values across subsets, mean
            and minimum over the splits that could be scored.
        splits: splits scored; every split of the seeds into halves of ⌊S/2⌋ and ⌈S/2⌉ seeds
            once (odd S: every seed is used, the halves differ by one seed).
        constant: splits left out because a half's means are constant (or under 3 subsets):
            their correlation is undefined; counted here and warned about, never silent.
        full: the Spearman-Brown reliability of the full ``S``-seed mean, ``2 r / (1 + r)``
            from the mean split-half ``r`` (a half holds about half the seeds).
    """

    mean: float
    min: float
    splits: int
    constant: int
    full: float


def split_half(values: pd.DataFrame) -> SplitHalf:
    """:class:`SplitHalf` of the seeds (columns) of ``values`` (rows: subsets)."""
    seeds = list(values.columns)
    half = len(seeds) // 2
    if half < 1:
        return SplitHalf(math.nan, math.nan, 0, 0, math.nan)
    rhos, constant = [], 0
    for first in itertools.combinations(seeds, half):
        if len(seeds) % 2 == 0 and seeds[0] not in first:  # each even split once
            continue
        second = [s for s in seeds if s not in first]
        a, b = values[list(first)].mean(axis=1), values[second].mean(axis=1)
        ok = a.notna() & b.notna()
        if ok.sum() >= 3 and a[ok].nunique() > 1 and b[ok].nunique() > 1:
            rhos.append(float(spearmanr(a[ok], b[ok]).statistic))
        else:
            constant += 1
    if constant:
        warnings.warn(
            f"{constant} split(s) of the seeds left out of the split-half reliability: a half's "
            "means are constant or cover under 3 subsets (the correlation is undefined)",
            stacklevel=2,
        )
    if not rhos:
        return SplitHalf(math.nan, math.nan, 0, constant, math.nan)
    r = float(np.mean(rhos))
    full = 2 * r / (1 + r) if r > -1 else math.nan
    return SplitHalf(r, float(np.min(rhos)), len(rhos), constant, full)


def split_half_spearman(values: pd.DataFrame) -> tuple[float, float]:
    """Mean and minimum of :func:`split_half` (every seed used, also for an odd count)."""
    r = split_half(values)
    return r.mean, r.min


def distinguishable_share(
    images: dict[int, pd.DataFrame], trials: dict[int, pd.DataFrame], statistic: str
) -> float:
    """Share of subsets (other than the best) whose paired difference to the best, over
    (seed, image) units, has an interval above 0."""
    comp = truth_tied(images, trials, statistic)
    if comp is None or len(comp.table) < 2:
        return math.nan
    others = comp.table[comp.table["key"] != comp.best]
    return float((~others["tied"]).mean())


def versus_single_task(
    images: dict[int, pd.DataFrame], trials: dict[int, pd.DataFrame], statistic: str
) -> pd.DataFrame:
    """RQ1 on the truth: every subset's statistic (mean over the seeds) with its simultaneous
    interval, and its paired difference to the single-task model with its verdict: ``more
    robust`` (interval below 0), ``less robust`` (above 0) or ``tied``; the seeds are clusters
    and the error rate is family-wise over the subsets (:func:`compare`)."""
    from rts.search.results.recommend import compare, verdict_of

    units = truth_units(images, trials).replace({"key": {"": "(none)"}})
    comp = compare(units, statistic, baseline="(none)")
    if comp is None:
        return pd.DataFrame()
    words = {"better": "more robust", "worse": "less robust", "tied": "tied"}
    rows = []
    for r in comp.table.itertuples():
        d = (r.base_diff, r.base_diff_low, r.base_diff_high)
        rows.append(
            {
                "aux": r.key,
                "value": r.value,
                "low": r.low,
                "high": r.high,
                "minus single-task": d[0],
                "diff low": d[1],
                "diff high": d[2],
                "verdict": words[verdict_of(d)] if r.key != "(none)" else "single-task model",
            }
        )
    return pd.DataFrame(rows).sort_values("value").reset_index(drop=True)


def marginal_effects(values: pd.DataFrame, pool: str) -> pd.DataFrame:
    """RQ2 on the truth: each pool task's additive effect on the statistic (ridge fit over every
    subset and seed, bootstrap intervals over those trials; :mod:`rts.search.results.effects`)."""
    from rts.search.results.effects import fit_effects

    long = values.stack().dropna()
    subsets = [str(a) for a in long.index.get_level_values(0)]
    model = fit_effects(subsets, long.to_numpy(), pool, "additive", n_boot=500)
    table = model.table()
    table["verdict"] = [
        "raises it" if lo > 0 else "lowers it" if hi < 0 else "no clear effect"
        for lo, hi in zip(table["low"], table["high"], strict=True)
    ]
    return table.reset_index(drop=True)


def run_seed(config: str, seed: int, storage: str, overrides: Sequence[str], fake: bool):
    """One exhaustive run under training seed ``seed``: (stage-2 trials, images, wall s)."""
    from rts.search.config.convert import load_config, resolve
    from rts.search.engine.space import Space
    from rts.search.results.pipeline import run_search

    trial_fn = None
    if fake:
        from tests.search.fake_trial import FakeTrial

        trial_fn = FakeTrial(noise=0.05)
    base = resolve(load_config(config, overrides))
    # the very runs benchmarks.search_efficiency takes as its truth (same names and settings),
    # so that benchmark resumes them from the same --storage instead of training them again
    more = truth_overrides(overrides, seed, Space.from_config(base).size, base.stage1.epochs)
    cfg = load_config(config, [*more, f"name=truth-seed{seed}"])
    start = time.perf_counter()
    out = run_search(cfg, storage=storage, trial_fn=trial_fn, echo=None)
    wall = time.perf_counter() - start
    images = pd.read_parquet(out.paths.images)
    if fake:  # simulated seeds: the fake trial is deterministic, so add per-seed noise
        rng = np.random.default_rng(seed)
        images = images.assign(adv_error=images["adv_error"] * rng.normal(1, 0.05, len(images)))
    s2 = out.trials[out.trials["stage"] == 2]
    return s2, images, wall


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--seeds", default="0,1,2,3", help="training seeds (>= 2; 4 for the goal)")
    p.add_argument("--storage", default=None, help="run folder (default: a temporary one)")
    p.add_argument("--fake", action="store_true", help="simulated trials (a smoke test)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    storage = args.storage or tempfile.mkdtemp(prefix="rts-truth-")
    trials, images, walls = {}, {}, {}
    for seed in seeds:
        trials[seed], images[seed], walls[seed] = run_seed(
            args.config, seed, storage, args.overrides, args.fake
        )
        print(f"seed {seed}: {walls[seed]:.0f} s", file=sys.stderr, flush=True)

    rows = []
    for name in STATISTICS:
        values = pd.DataFrame({s: subset_values(images[s], trials[s], name) for s in seeds})
        halves = split_half(values)
        rows.append(
            {
                "statistic": name,
                "split-half Spearman (mean)": halves.mean,
                "split-half Spearman (min)": halves.min,
                f"full {len(seeds)}-seed reliability (Spearman-Brown)": halves.full,
                "splits scored / left out (constant)": f"{halves.splits} / {halves.constant}",
                "distinguishable from the best": distinguishable_share(images, trials, name),
                "one-seed Spearman": pairwise_spearman(values),
                f"seeds for {GOAL} (Spearman-Brown)": seeds_needed(pairwise_spearman(values)),
            }
        )
    print(f"\n# Reproducibility of the ranking ({len(seeds)} training seeds)\n")
    print(markdown(pd.DataFrame(rows)))

    default = "mean"  # the paper's statistic, and the most reproducible one measured here
    values = pd.DataFrame({s: subset_values(images[s], trials[s], default) for s in seeds})
    print(
        f"\n# The truth against the single-task model ({default} statistic, {len(seeds)} seeds)\n"
    )
    versus = versus_single_task(images, trials, default)
    worse = values.gt(values.loc[""], axis=1).sum(axis=1)  # per seed, not pooled
    versus["seeds less robust"] = [
        "" if a == "(none)" else f"{int(worse[a])}/{values.loc[a].notna().sum()}"
        for a in versus["aux"]
    ]
    print(markdown(versus))
    print(
        "\n(intervals: simultaneous, resting on the seeds (each seed's statistic is one "
        "observation); 'seeds less robust': in how many training seeds the subset's own value "
        "is above the single-task model's)"
    )
    pool = "".join(dict.fromkeys("".join(values.index)))
    print(f"\n# Marginal effect of each auxiliary task ({default} statistic, additive fit)\n")
    print(markdown(marginal_effects(values, pool)))

    skill = pd.DataFrame(
        {s: trials[s].set_index("aux")["skill"] for s in seeds if "skill" in trials[s]}
    )
    print("\n# Main-task skill of every model (1 = perfect, 0 = the training mean)\n")
    if skill.empty:
        print("(the trials did not record skill)")
    else:
        table = pd.DataFrame({"min": skill.min(axis=1), "median": skill.median(axis=1)})
        print(markdown(table.sort_index().rename_axis("aux").reset_index()))
        print(f"\nmodels with skill <= 0: {int((skill <= 0).sum().sum())} of {skill.size}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    per_seed = ", ".join(f"{s}: {w:.0f} s" for s, w in walls.items())
    print(f"\nwall time per seed: {per_seed}; peak RSS driver {rss:.0f} MB, children {kids:.0f} MB")
    print(f"runs: {Path(storage)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
