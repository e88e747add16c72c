"""Search efficiency at scale, simulated: pools of up to 10 auxiliaries (1,024 subsets), with a
truth and a stage-1 noise drawn to match Standley et al.'s published tables.

    python -m benchmarks.search_efficiency --no-real --pool sDnkKeEprA --seeds 0,1,2,3,4 \
        --out /tmp/eff.csv                              # (the entry point; this module's main)

The truth (the main task's loss of an auxiliary set ``S``, as log(loss / loss of the main task
alone)) is non-additive::

    v(S) = lam * sum_{t in S} b_t + (1 - lam) * mean_{t in S} b_t
           + mean_{pairs tu in S} g_tu + mean_{triples tuw in S} h_tuw

with main effects ``b_t ~ N(mu_b, sd_b)``, pair terms ``g ~ N(mu_g, sd_g)`` and higher-order
terms ``h ~ N(0, sd_h)`` drawn per seed. Every parameter is fitted on the ten (setting, main
task) problems of ``benchmarks/data/taskgrouping/`` (:func:`fit_generator`): on each problem's
16 full-training validation losses, ``b_t`` is the log ratio of the main task with ``t`` alone,
``g_tu`` what the two-task set adds to the model of its singles, ``h`` what each three-task set
adds to the model of its singles and pairs; ``lam`` (how additive the sets are: 1 = additive,
0 = Standley's mean of pairs) is the value in [0, 1] that best predicts the 50 three- and
four-task sets from their singles and pairs (least squares on a grid); the other parameters
are the medians over the ten problems of the per-problem means and spreads. A full training
observes ``v`` with Gaussian noise sized so that its Spearman correlation with ``v`` over the
whole space is the tables' median validation-vs-test Spearman; an early (20 %) screen with
noise sized to their median early-vs-full Spearman (measured per seed: ``early_spearman``).
An early trial costs 1 unit, a full one ``e2`` = 5 (an early screen is 20 % of training, as
in the tables); compute is charged against training every subset in full.

Each budget proposes with the search's own code (:class:`rts.search.engine.space.Space` and its
samplers, Optuna ask/tell, :mod:`rts.search.results.effects`): ``default`` is what ``rts
search`` does by default (the main task alone and with each pool task trained in full, the HOA
model, the 2 best-predicted sets not yet trained trained in full, the pick the best full
observation among all of them); ``random`` and the TPE budgets screen early trials and train
their top 10 and the baseline in full. Scored by the pick's rank percentile in the truth (0 =
the best). A problem whose single-task model is within the truth's top 1 % is ``free``: every
stage 2 trains it, so a hit there says nothing about the search; such problems are reported
apart and not counted for the goal. Goal: within the truth's top 1 % at <= 5 % of the
exhaustive compute on 5 of 5 seeds, and random on at most 1 of 5.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rts.search.engine.space import Space
from rts.search.results.effects import all_subsets, fit_effects, rank_subsets

DATA = Path(__file__).parent / "data" / "taskgrouping"
SETTINGS = (
    ("results.txt", "results_20.txt", "results_test.txt"),
    ("results_alt.txt", "results_alt_20.txt", "results_alt_test.txt"),
)
FAST_BUDGETS = ("default", "hoa", "random", "tpe-per-task", "tpe-subset", "pairs early, additive")
"""Budgets run unless named (the GP and effect-model budgets take minutes per seed)."""


@dataclass(frozen=True)
class Generator:
    """The truth's and the noise's parameters (see the module docstring), fitted on tables."""

    lam: float
    mu_b: float
    sd_b: float
    mu_g: float
    sd_g: float
    sd_h: float
    early_spearman: float
    full_spearman: float
    rmse: float
    rmse_additive: float
    rmse_mean: float


def _problems() -> list[tuple[dict[str, float], dict[str, float], dict[str, float], str]]:
    """Per (setting, main): full, early and test values by auxiliary set, and the pool."""
    from rts.search.config.replay import read_table

    letters = tuple("sdnke")
    out = []
    for full, early, test in SETTINGS:
        tables = [read_table(str(DATA / f), letters, 1) for f in (full, early, test)]
        for m in letters:
            by_aux = [{k.replace(m, ""): v[m] for k, v in t.items() if m in k} for t in tables]
            out.append((*by_aux, "".join(t for t in letters if t != m)))
    return out


def _structure(rel: dict[str, float], pool: str, lam: float) -> tuple[dict, dict, dict, list]:
    """One problem under ``lam``: main effects, pair terms, triple terms, and the residuals of
    its three- and four-task sets predicted from its singles and pairs alone."""
    b = {t: rel[t] for t in pool}

    def base(s: str) -> float:
        return lam * sum(b[t] for t in s) + (1 - lam) * float(np.mean([b[t] for t in s]))

    g = {a + c: rel[a + c] - base(a + c) for a, c in itertools.combinations(pool, 2)}

    def with_pairs(s: str) -> float:
        return base(s) + float(np.mean([g[x + y] for x, y in itertools.combinations(s, 2)]))

    big = [s for s in rel if len(s) >= 3]
    h = {s: rel[s] - with_pairs(s) for s in big if len(s) == 3}
    return b, g, h, [rel[s] - with_pairs(s) for s in big]


@functools.cache
def fit_generator() -> Generator:
    """:class:`Generator` fitted on the ten problems of ``benchmarks/data/taskgrouping/``."""
    from scipy import stats

    problems = _problems()
    rels = [
        ({a: math.log(full[a] / full[""]) for a in full}, pool) for full, _, _, pool in problems
    ]

    def rmse(lam: float) -> float:
        return math.sqrt(np.mean([e**2 for r, p in rels for e in _structure(r, p, lam)[3]]))

    grid = np.linspace(0, 1, 101)
    lam = float(grid[np.argmin([rmse(x) for x in grid])])
    parts = [_structure(r, p, lam) for r, p in rels]
    early_rho, full_rho = [], []
    for full, early, test, _ in problems:
        both = [a for a in full if a in early]
        early_rho.append(stats.spearmanr([early[a] for a in both], [full[a] for a in both])[0])
        full_rho.append(stats.spearmanr([full[a] for a in full], [test[a] for a in full])[0])
    med = lambda xs: float(np.median(xs))  # noqa: E731
    return Generator(
        lam=lam,
        mu_b=med([np.mean(list(b.values())) for b, _, _, _ in parts]),
        sd_b=med([np.std(list(b.values())) for b, _, _, _ in parts]),
        mu_g=med([np.mean(list(g.values())) for _, g, _, _ in parts]),
        sd_g=med([np.std(list(g.values())) for _, g, _, _ in parts]),
        sd_h=med([np.std(list(h.values())) for _, _, h, _ in parts]),
        early_spearman=med(early_rho),
        full_spearman=med(full_rho),
        rmse=rmse(lam),
        rmse_additive=rmse(1.0),
        rmse_mean=rmse(0.0),
    )


def noise_for(spearman: float, spread: float) -> float:
    """Gaussian noise sd that leaves Spearman ``spearman`` with a normal truth of sd ``spread``
    (Pearson r = 2 sin(pi rho / 6), noise = spread * sqrt(1 / r^2 - 1))."""
    r = 2 * math.sin(math.pi * spearman / 6)
    return spread * math.sqrt(1 / r**2 - 1)


@dataclass(frozen=True)
class Oracle:
    """The truth of one seed: every subset's value (see the module docstring)."""

    pool: str
    values: dict[str, float]

    @classmethod
    def draw(cls, pool: str, seed: int, gen: Generator | None = None) -> Oracle:
        gen = gen or fit_generator()
        rng = np.random.default_rng(seed)
        b = {t: float(rng.normal(gen.mu_b, gen.sd_b)) for t in pool}
        g = {
            a + c: float(rng.normal(gen.mu_g, gen.sd_g)) for a, c in itertools.combinations(pool, 2)
        }
        h = {"".join(s): float(rng.normal(0, gen.sd_h)) for s in itertools.combinations(pool, 3)}
        values = {}
        for aux in all_subsets(pool, 0, len(pool)):
            if not aux:
                values[aux] = 0.0
                continue
            main = gen.lam * sum(b[t] for t in aux) + (1 - gen.lam) * np.mean([b[t] for t in aux])
            pairs = [g[x + y] for x, y in itertools.combinations(aux, 2)]
            triples = [h["".join(s)] for s in itertools.combinations(aux, 3)]
            values[aux] = float(
                main + (np.mean(pairs) if pairs else 0.0) + (np.mean(triples) if triples else 0.0)
            )
        return cls(pool, values)

    def value(self, aux: str) -> float:
        return self.values[aux]


@dataclass
class Run:
    """One simulated search: what it observed and what it spent."""

    oracle: Oracle
    rng: np.random.Generator
    noise: float
    noise2: float
    e2: int
    units: float = 0.0

    def __post_init__(self) -> None:
        self.stage1: dict[str, float] = {}
        self.full: dict[str, float] = {}

    def observe1(self, aux: str) -> float:
        """An early stage-1 trial (1 unit); a repeated candidate is answered from its first."""
        if aux not in self.stage1:
            self.units += 1
            self.stage1[aux] = self.oracle.value(aux) + self.rng.normal(0, self.noise)
        return self.stage1[aux]

    def train_full(self, aux: str) -> float:
        """A full training (``e2`` units), once per set (a set trained in full is reused)."""
        if aux not in self.full:
            self.units += self.e2
            self.full[aux] = self.oracle.value(aux) + self.rng.normal(0, self.noise2)
        return self.full[aux]

    def finish(self, candidates: Sequence[str]) -> str:
        """Stage 2 on ``candidates`` plus the single-task baseline; the best full observation
        among everything trained in full."""
        for aux in dict.fromkeys([*candidates, ""]):
            self.train_full(aux)
        return min(sorted(self.full), key=lambda a: self.full[a])


def sampled(run: Run, space: Space, sampler, n: int) -> None:
    """``n`` stage-1 proposals of ``sampler`` on ``space`` (Optuna ask/tell)."""
    import optuna

    study = optuna.create_study(sampler=sampler)
    for _ in range(n):
        trial = study.ask()
        aux = space.define(trial)["aux"]
        study.tell(trial, run.observe1(aux))


def top_observed(run: Run, k: int) -> list[str]:
    return sorted(run.stage1, key=lambda a: (run.stage1[a], a))[:k]


def top_predicted(
    observed: dict[str, float], pool: str, kind: str, k: int, exclude: Sequence[str] = ()
) -> list[str]:
    model = fit_effects(list(observed), list(observed.values()), pool, kind)
    order = rank_subsets(model, [a for a in all_subsets(pool, 1, len(pool))])["aux"]
    return [a for a in order if a not in exclude][:k]


def budgets(pool: str, n1: int, k: int) -> dict[str, Callable[[Run, int], str]]:
    """Every budget of the comparison: name -> run(Run, seed) -> recommended subset."""
    from rts.search.engine.samplers import make_sampler

    def space(encoding: str) -> Space:
        return Space("d", pool, 0, len(pool), ("resnet18",), encoding=encoding)

    def sampler_budget(name: str, encoding: str, pick: str = "observed"):
        def go(run: Run, seed: int) -> str:
            sp = space(encoding)
            if name == "gp":
                import optuna

                sampler = optuna.samplers.GPSampler(seed=seed, n_startup_trials=10)
            else:
                sampler = make_sampler(name, sp, seed=seed, n_trials=n1)
            sampled(run, sp, sampler, n1)
            if pick == "observed":
                return run.finish(top_observed(run, k))
            return run.finish(top_predicted(run.stage1, pool, pick, k))

        return go

    def pairs_in_full(top: int):  # the default: stage 1 trained in full, reused by stage 2
        def go(run: Run, seed: int) -> str:
            for aux in ["", *pool]:
                run.train_full(aux)
            return run.finish(top_predicted(run.full, pool, "hoa", top, exclude=list(run.full)))

        return go

    def pairs_early(kind: str):
        def go(run: Run, seed: int) -> str:
            for aux in ["", *pool]:
                run.observe1(aux)
            return run.finish(top_predicted(run.stage1, pool, kind, k))

        return go

    return {
        "default": pairs_in_full(2),
        "hoa": pairs_in_full(1),
        "random": sampler_budget("random", "per_task"),
        "tpe-subset": sampler_budget("tpe", "subset"),
        "tpe-per-task": sampler_budget("tpe", "per_task"),
        "gp-per-task": sampler_budget("gp", "per_task"),
        "effects-additive (tpe-per-task)": sampler_budget("tpe", "per_task", "additive"),
        "effects-pairwise (tpe-per-task)": sampler_budget("tpe", "per_task", "pairwise"),
        "pairs early, additive": pairs_early("additive"),
    }


def simulate(
    pool: str,
    seeds: Sequence[int],
    *,
    n1: int = 200,
    k: int = 10,
    e2: int = 5,
    names: Sequence[str] | None = FAST_BUDGETS,
) -> pd.DataFrame:
    """One row per budget and seed: compute fraction, truth rank percentile, regret, whether
    the problem is free (the single-task model within the truth's top 1 %)."""
    import optuna
    from scipy import stats

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    gen = fit_generator()
    subsets = all_subsets(pool, 0, len(pool))
    exhaustive = e2 * len(subsets)
    rows = []
    table = budgets(pool, n1, k)
    for seed in seeds:
        oracle = Oracle.draw(pool, seed, gen)
        truth = pd.Series(oracle.values).sort_values(kind="stable")
        spread = float(truth.std())
        noise, noise2 = noise_for(gen.early_spearman, spread), noise_for(gen.full_spearman, spread)
        rank = {a: i for i, a in enumerate(truth.index)}
        free = 100 * rank[""] / len(subsets) < 1.0
        probe = truth + np.random.default_rng(seed).normal(0, noise, len(truth))
        early_rho = float(stats.spearmanr(probe, truth)[0])
        for name, go in table.items():
            if names and name not in names:
                continue
            run = Run(oracle, np.random.default_rng(10_000 + seed), noise, noise2, e2)
            pick = go(run, seed)
            rows.append(
                {
                    "budget": name,
                    "seed": seed,
                    "compute_fraction": run.units / exhaustive,
                    "oracle_rank_percentile": 100 * rank[pick] / len(subsets),
                    "regret": (truth[pick] - truth.iloc[0]) / (truth.iloc[-1] - truth.iloc[0]),
                    "pick": pick or "(main alone)",
                    "free": free,
                    "early_spearman": early_rho,
                    "stage1_trials": len(run.stage1) + len(run.full),
                }
            )
    return pd.DataFrame(rows)


def summary(rows: pd.DataFrame, top: float = 1.0, budget: float = 0.05) -> pd.DataFrame:
    """Per budget: compute, rank percentiles, and on how many problems that are not free the
    goal was met (free problems apart)."""
    met = (rows["oracle_rank_percentile"] < top) & (rows["compute_fraction"] <= budget)
    rows = rows.assign(met=met)
    g = rows.groupby("budget", sort=False)
    paid = rows[~rows["free"]].groupby("budget", sort=False)
    free = rows[rows["free"]].groupby("budget", sort=False)
    return pd.DataFrame(
        {
            "compute": g["compute_fraction"].max().map(lambda v: f"{100 * v:.1f} %"),
            "rank percentile per seed": g["oracle_rank_percentile"].agg(
                lambda s: " / ".join(f"{v:.1f}" for v in s)
            ),
            f"goal (top {top:g} %, ≤ {100 * budget:g} %)": paid["met"]
            .agg(lambda s: f"{int(s.sum())}/{len(s)}")
            .reindex(g.size().index, fill_value="0/0"),
            "free problems (hit/n)": free["met"]
            .agg(lambda s: f"{int(s.sum())}/{len(s)}")
            .reindex(g.size().index, fill_value="0/0"),
            "mean regret": g["regret"].mean().map(lambda v: f"{v:.3f}"),
        }
    ).reset_index()
