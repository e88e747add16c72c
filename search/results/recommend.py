"""The recommendation rule, used by the search's summary and by the analysis of any run.

The recommended candidate is the one with the lowest value (the main task's vulnerability),
ties broken by lower clean error and then by its key, so the choice never depends on row order.
Its reference is the single-task model of the main task on the same encoder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd


def best_row(frame: pd.DataFrame, value: str, key: str) -> Mapping[str, Any]:
    """The row of ``frame`` with the lowest ``value`` (ties: ``clean_error``, then ``key``);
    ``{}`` when no row has a value."""
    if frame.empty or value not in frame.columns:
        return {}
    scored = frame[frame[value].notna()]
    if scored.empty:
        return {}
    order = [value, *(["clean_error"] if "clean_error" in scored.columns else []), key]
    return scored.sort_values(order, kind="stable").iloc[0]


def baseline_row(
    frame: pd.DataFrame, value: str, key: str, *, single: pd.Series, encoder: str
) -> Mapping[str, Any]:
    """The best single-task row (``single`` marks them) on ``encoder``; ``{}`` when none."""
    if frame.empty:
        return {}
    return best_row(frame[single & (frame["encoder"] == encoder)], value, key)


@dataclass(frozen=True)
class Comparison:
    """The recommendation against the noise: which candidates tie with the best, and whether
    the best beats the single-task baseline (paired bootstrap over the same images and seeds).

    Attributes:
        statistic: the vulnerability statistic compared (``attack.statistic``).
        best: key of the candidate with the lowest statistic.
        table: one row per candidate: ``key``, ``value``, ``low``, ``high`` (its 95 % interval),
            ``diff`` / ``diff_low`` / ``diff_high`` (minus the best's, paired), ``tied`` (the
            difference's interval reaches 0: not distinguishable from the best).
        baseline: key of the baseline (``""`` when there is none).
        vs_baseline: best minus baseline and its interval (NaN without a baseline).
        significant: the interval of ``vs_baseline`` lies below 0 (the best is more robust).
    """

    statistic: str
    best: str
    table: pd.DataFrame
    baseline: str = ""
    vs_baseline: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    significant: bool = False

    @property
    def tied(self) -> list[str]:
        """Keys tied with the best (the best first)."""
        return [
            self.best,
            *[k for k in self.table.loc[self.table["tied"], "key"] if k != self.best],
        ]


def compare(
    images: pd.DataFrame,
    statistic: str,
    *,
    baseline: str = "",
    best: str = "",
    seed: int = 0,
) -> Comparison | None:
    """Compare candidates on their per-image errors (``images``: ``key``, ``unit`` (the same
    image and training seed across candidates), ``clean_error``, ``adv_error``).

    Only units every candidate has are used, so every comparison is paired. ``best`` names the
    candidate the others are compared with (default: the lowest statistic). ``None`` when no
    candidate has a defined statistic.
    """
    from rts.attacks.statistics import get_statistic, interval, paired_difference

    if images.empty:
        return None
    wide_c = images.pivot_table(index="unit", columns="key", values="clean_error")
    wide_a = images.pivot_table(index="unit", columns="key", values="adv_error")
    units = wide_c.dropna().index.intersection(wide_a.dropna().index)
    wide_c, wide_a = wide_c.loc[units], wide_a.loc[units]
    stat = get_statistic(statistic)
    values = {k: stat(wide_c[k].to_numpy(), wide_a[k].to_numpy()) for k in wide_c.columns}
    defined = {k: v for k, v in values.items() if not math.isnan(v)}
    if not defined:
        return None
    if best not in defined:
        best = min(sorted(defined), key=lambda k: defined[k])

    def pair(k: str) -> tuple:
        return (wide_c[k].to_numpy(), wide_a[k].to_numpy())

    rows = []
    for k in sorted(values):
        value, lo, hi = interval(*pair(k), statistic, seed=seed)
        if k == best:
            d = (0.0, 0.0, 0.0)
        else:
            d = paired_difference(pair(k), pair(best), statistic, seed=seed)
        tied = k == best or not d[1] > 0  # NaN interval: cannot tell apart, counts as tied
        rows.append(
            {
                "key": k,
                "value": value,
                "low": lo,
                "high": hi,
                "diff": d[0],
                "diff_low": d[1],
                "diff_high": d[2],
                "tied": bool(tied),
            }
        )
    table = pd.DataFrame(rows).sort_values(["value", "key"]).reset_index(drop=True)
    vs = (math.nan, math.nan, math.nan)
    if baseline and baseline in values and baseline != best:
        vs = paired_difference(pair(best), pair(baseline), statistic, seed=seed)
    return Comparison(
        statistic=statistic,
        best=best,
        table=table,
        baseline=baseline if baseline in values else "",
        vs_baseline=vs,
        significant=bool(vs[2] < 0),
    )
