"""Search efficiency at scale, simulated: pools of up to 10 auxiliaries (1,024 subsets).

    python -m benchmarks.search_efficiency --no-real --pool sDnkKeEpr --seeds 0,1,2,3,4 \
        --out /tmp/eff.csv                              # (the entry point; this module's main)

A known oracle stands in for training: the main task's vulnerability of an auxiliary subset is
``1 + Σ β_t + Σ γ_tu`` with main effects ``β_t ~ N(0, 0.1)`` and, for a fifth of the pairs,
interactions ``γ_tu ~ N(0, 0.1)`` (drawn per seed). A stage-1 trial (1 epoch, 1 unit) observes it
with Gaussian noise ``--noise`` (default 0.05, the surrogate noise of the toy); a stage-2 trial
(``--stage2-epochs`` units) observes it with ``--noise2`` (training-seed noise). Compute is
charged against training every subset in stage 2. Each budget proposes stage-1 trials with the
search's own code (:class:`rts.search.engine.space.Space` and its samplers, Optuna ask/tell; a
repeated proposal is answered from the earlier trial at no cost), sends its top ``k`` to stage 2
(by observed value, or by the task-effect model's prediction over *every* subset,
:mod:`rts.search.results.effects`), and recommends the best stage-2 observation. Scored by the
recommendation's rank percentile in the oracle (0 = the oracle's best). Goal: within the
oracle's top 1 % at ≤ 5 % of the exhaustive compute on 5 of 5 seeds.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rts.search.engine.space import Space
from rts.search.results.effects import all_subsets, fit_effects, rank_subsets


@dataclass(frozen=True)
class Oracle:
    """Main effects and sparse pairwise interactions of the pool's tasks (see module doc)."""

    pool: str
    beta: dict[str, float]
    gamma: dict[str, float]

    @classmethod
    def draw(cls, pool: str, seed: int, pair_share: float = 0.2) -> Oracle:
        rng = np.random.default_rng(seed)
        beta = {t: float(rng.normal(0, 0.1)) for t in pool}
        gamma = {
            a + b: float(rng.normal(0, 0.1))
            for a, b in itertools.combinations(pool, 2)
            if rng.random() < pair_share
        }
        return cls(pool, beta, gamma)

    def value(self, aux: str) -> float:
        v = 1.0 + sum(self.beta[t] for t in aux)
        return v + sum(g for pair, g in self.gamma.items() if pair[0] in aux and pair[1] in aux)


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

    def observe1(self, aux: str) -> float:
        """A stage-1 trial (1 unit); a repeated candidate is answered from its first trial."""
        if aux not in self.stage1:
            self.units += 1
            self.stage1[aux] = self.oracle.value(aux) + self.rng.normal(0, self.noise)
        return self.stage1[aux]

    def finish(self, candidates: Sequence[str]) -> str:
        """Stage 2 on ``candidates`` plus the single-task baseline; the best observation."""
        chosen = list(dict.fromkeys([*candidates, ""]))
        self.units += self.e2 * len(chosen)
        seen = {a: self.oracle.value(a) + self.rng.normal(0, self.noise2) for a in chosen}
        return min(sorted(seen), key=lambda a: seen[a])


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


def top_predicted(run: Run, pool: str, kind: str, k: int) -> list[str]:
    model = fit_effects(list(run.stage1), list(run.stage1.values()), pool, kind)
    return list(rank_subsets(model, all_subsets(pool, 0, len(pool)))["aux"][:k])


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
            return run.finish(top_predicted(run, pool, pick, k))

        return go

    def pairs_design(kind: str):
        def go(run: Run, seed: int) -> str:
            design = ["", *pool]
            if kind == "pairwise":
                design += [a + b for a, b in itertools.combinations(pool, 2)]
            for aux in design:
                run.observe1(aux)
            return run.finish(top_predicted(run, pool, kind, k))

        return go

    return {
        "random": sampler_budget("random", "per_task"),
        "tpe-subset": sampler_budget("tpe", "subset"),
        "tpe-per-task": sampler_budget("tpe", "per_task"),
        "gp-per-task": sampler_budget("gp", "per_task"),
        "effects-additive (tpe-per-task)": sampler_budget("tpe", "per_task", "additive"),
        "effects-pairwise (tpe-per-task)": sampler_budget("tpe", "per_task", "pairwise"),
        "pairs design, additive": pairs_design("additive"),
        "pairs design, pairwise": pairs_design("pairwise"),
    }


def simulate(
    pool: str,
    seeds: Sequence[int],
    *,
    n1: int = 200,
    k: int = 10,
    e2: int = 6,
    noise: float = 0.05,
    noise2: float = 0.02,
    names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per budget and seed: compute fraction, oracle rank percentile, regret."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    subsets = all_subsets(pool, 0, len(pool))
    exhaustive = e2 * len(subsets)
    rows = []
    table = budgets(pool, n1, k)
    for seed in seeds:
        oracle = Oracle.draw(pool, seed)
        truth = pd.Series({a: oracle.value(a) for a in subsets}).sort_values()
        rank = {a: i for i, a in enumerate(truth.index)}
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
                    "regret": truth[pick] - truth.iloc[0],
                    "pick": pick or "(main alone)",
                    "stage1_trials": len(run.stage1),
                }
            )
    return pd.DataFrame(rows)


def summary(rows: pd.DataFrame, top: float = 1.0, budget: float = 0.05) -> pd.DataFrame:
    """Per budget: compute, rank percentiles, and how many seeds met the goal."""
    met = (rows["oracle_rank_percentile"] < top) & (rows["compute_fraction"] <= budget)
    g = rows.assign(met=met).groupby("budget", sort=False)
    return pd.DataFrame(
        {
            "compute": g["compute_fraction"].max().map(lambda v: f"{100 * v:.1f} %"),
            "rank percentile per seed": g["oracle_rank_percentile"].agg(
                lambda s: " / ".join(f"{v:.1f}" for v in s)
            ),
            f"goal (top {top:g} %, ≤ {100 * budget:g} %)": g["met"].agg(
                lambda s: f"{int(s.sum())}/{len(s)}"
            ),
            "mean regret": g["regret"].mean().map(lambda v: f"{v:.3f}"),
        }
    ).reset_index()
