"""Vulnerability against the attack budget (RQ1): the search's own budget and its sweeps.

Each stage-2 model gives one point per budget ``(norm, eps)``: the main task's vulnerability
under the run's attacked set, with its 95 % bootstrap interval over the images and the model's
skill. The search's own budget comes from ``trials.parquet`` (the number the search ranked by),
the others from the rows ``rts attack RUN --eps ... --norm ...`` appended
(:mod:`rts.search.results.sweep`). The attack drawn is the per-image worst case over the
ensemble when there is one (:func:`headline_attack`), else the single attack.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from rts.search.analysis.rundata import FINISHED, RunData, search_budget

POINT_COLUMNS = (
    "trial_id",
    "model",
    "norm",
    "eps",
    "attack",
    "vuln",
    "vuln_low",
    "vuln_high",
    "skill",
    "source",
)
"""Columns of :func:`budget_points`."""


def norm_order(norm: str) -> tuple[bool, str]:
    """Sort key of norms: L-inf (the paper's) first."""
    return norm != "linf", norm


def headline_attack(attacks: Iterable[str]) -> str:
    """The attack a figure draws: ``worst`` (per image, over the ensemble) when present, else
    the first one."""
    names = list(dict.fromkeys(attacks))
    return "worst" if "worst" in names else names[0]


def _attack_config(run: RunData) -> Mapping[str, Any]:
    a = run.config.get("attack") if isinstance(run.config, Mapping) else None
    return a if isinstance(a, Mapping) else {}


def budget_points(run: RunData) -> pd.DataFrame:
    """One row per completed stage-2 model and budget (:data:`POINT_COLUMNS`), sorted."""
    t = run.trials[(run.trials["stage"] == 2) & (run.trials["status"] == FINISHED)]
    rows = _search_points(run, t) + _sweep_points(run, t)
    out = pd.DataFrame(rows, columns=list(POINT_COLUMNS))
    out = out.drop_duplicates(["trial_id", "norm", "eps"], keep="first")  # the search's first
    out["order"] = [norm_order(n) for n in out["norm"]]
    out = out.sort_values(["model", "order", "eps"]).drop(columns="order")
    return out.reset_index(drop=True)


def _search_points(run: RunData, trials: pd.DataFrame) -> list[dict[str, Any]]:
    """The search's own budget: each model's ranked number (worst case, or the one attack)."""
    budget = search_budget(run.config)
    a = _attack_config(run)
    ensemble = a.get("ensemble") or []
    ensemble = ensemble.split(",") if isinstance(ensemble, str) else list(ensemble)
    mean = len(ensemble) > 1 and a.get("aggregate") != "worst"  # no interval, not comparable
    if budget is None or "vuln" not in trials or mean:
        return []
    attack = headline_attack(["worst"] if len(ensemble) > 1 else ensemble or ["?"])
    return [
        {
            "trial_id": r["trial_id"],
            "model": r["combo"],
            "norm": budget[0],
            "eps": budget[1],
            "attack": attack,
            "vuln": r["vuln"],
            "vuln_low": r.get("vuln_low", math.nan),
            "vuln_high": r.get("vuln_high", math.nan),
            "skill": r.get("skill", math.nan),
            "source": "search",
        }
        for r in trials.to_dict("records")
        if not math.isnan(r["vuln"])
    ]


def _sweep_points(run: RunData, trials: pd.DataFrame) -> list[dict[str, Any]]:
    """The swept budgets: the main task's rows under the run's attacked set, most steps first."""
    s = run.sweeps
    if s.empty or "vuln" not in s:
        return []
    target = _attack_config(run).get("target", "main")
    models = trials.set_index("trial_id")
    s = s[s["trial_id"].isin(models.index)].copy()
    s["main"] = models.loc[s["trial_id"], "main"].to_numpy()
    s["tasks"] = models.loc[s["trial_id"], "tasks"].to_numpy()
    s["combo"] = models.loc[s["trial_id"], "combo"].to_numpy()
    attacked = s["main"] if target == "main" else s["tasks"]
    s = s[(s["task"] == s["main"]) & (s["attacked"] == attacked)]
    rows = []
    for (tid, norm, eps), g in s.groupby(["trial_id", "norm", "eps"], sort=False):
        g = g[g["steps"] == g["steps"].max()]
        r = g[g["attack"] == headline_attack(g["attack"])].iloc[0]
        rows.append(
            {
                "trial_id": tid,
                "model": r["combo"],
                "norm": norm,
                "eps": float(eps),
                "attack": r["attack"],
                "vuln": r["vuln"],
                "vuln_low": r["vuln_low"],
                "vuln_high": r["vuln_high"],
                "skill": r["skill"],
                "source": "sweep",
            }
        )
    return rows


def budget_display(points: pd.DataFrame) -> pd.DataFrame:
    """Models × budgets: ``vuln [low, high]`` per cell and each model's main-task skill
    (measured on the attacked images where a sweep did, else on the held-out split)."""
    from rts.attacks.registry import format_eps
    from rts.search.results.summary import format_interval

    cells = points.assign(
        budget=[f"{r.norm} {format_eps(r.norm, r.eps)}" for r in points.itertuples()],
        value=[format_interval(r.vuln, r.vuln_low, r.vuln_high) for r in points.itertuples()],
    )
    order = list(dict.fromkeys(cells.sort_values("eps", kind="stable")["budget"]))
    order.sort(key=lambda b: norm_order(b.split()[0]))
    table = cells.pivot_table(index="model", columns="budget", values="value", aggfunc="first")
    by_source = points.sort_values("source", ascending=False)  # sweep rows before search rows
    skill = by_source.dropna(subset=["skill"]).groupby("model")["skill"].first()
    table = table[order].fillna("-")
    table.insert(0, "skill", skill.reindex(table.index))
    return table
