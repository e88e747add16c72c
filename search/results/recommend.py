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


VERDICTS = ("better", "tied", "worse")
"""The recommendation against the single-task baseline: its simultaneous interval of the
difference lies below 0, reaches 0, or lies above 0."""


@dataclass(frozen=True)
class Comparison:
    """The recommendation against the noise: which candidates tie with the best, and whether
    the best beats the single-task baseline, from simultaneous intervals
    (:func:`rts.attacks.simultaneous.simultaneous`) over every compared candidate.

    Attributes:
        statistic: the vulnerability statistic compared (``attack.statistic``).
        best: key of the recommended candidate.
        table: one row per candidate: ``key``, ``value`` (its statistic, the mean over seeds
            when there are several), ``low``, ``high`` (its simultaneous 95 % interval),
            ``diff`` / ``diff_low`` / ``diff_high`` (minus the best's, paired), ``tied`` (that
            interval reaches 0: not distinguishable from the best), ``base_diff`` /
            ``base_diff_low`` / ``base_diff_high`` (minus the baseline's; NaN without one).
        baseline: key of the baseline (``""`` when there is none).
        vs_baseline: best minus baseline and its interval (NaN without a baseline).
        verdict: ``better``, ``tied`` or ``worse`` than the baseline (:data:`VERDICTS`; ``""``
            without a baseline, or when the best is the baseline).
        seeds: training seeds the intervals rest on (1: images only, the seed is fixed).
        images: images per seed they rest on.
        method: ``images`` (paired bootstrap over images) or ``seeds`` (seed-level test).
        confidence: simultaneous coverage: every interval of the table holds at once with this
            probability, so a verdict's family-wise error rate is at most ``1 − confidence``
            whichever candidate the data made the best.
    """

    statistic: str
    best: str
    table: pd.DataFrame
    baseline: str = ""
    vs_baseline: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    verdict: str = ""
    seeds: int = 1
    images: int = 0
    method: str = "images"
    confidence: float = 0.95

    @property
    def significant(self) -> bool:
        """The best is more robust than the baseline (``verdict == "better"``)."""
        return self.verdict == "better"

    @property
    def tied(self) -> list[str]:
        """Keys tied with the best (the best first)."""
        return [
            self.best,
            *[k for k in self.table.loc[self.table["tied"], "key"] if k != self.best],
        ]

    def rests_on(self) -> str:
        """What the intervals rest on, in words: ``"3 seeds × 100 images"``."""
        seeds = f"{self.seeds} seed" + ("s" if self.seeds != 1 else "")
        return f"{seeds} × {self.images} images"

    def error_rate(self) -> str:
        """The error rate the verdicts control, in words."""
        pct = f"{100 * (1 - self.confidence):.3g} %"
        n = len(self.table)
        return f"family-wise error {pct} over the {n} models compared" if n > 1 else f"error {pct}"


def verdict_of(diff: tuple[float, float, float]) -> str:
    """``better`` (interval below 0), ``worse`` (above 0), ``tied`` (reaches 0, or NaN)."""
    _, lo, hi = diff
    if hi < 0:
        return "better"
    if lo > 0:
        return "worse"
    return "tied"


def compare(
    images: pd.DataFrame,
    statistic: str,
    *,
    baseline: str = "",
    best: str = "",
    seed: int = 0,
    confidence: float = 0.95,
    n_resamples: int = 999,
) -> Comparison | None:
    """Compare candidates on their per-image errors (``images``: ``key``, ``unit`` (the same
    image across candidates), ``clean_error``, ``adv_error``, and ``seed`` (the training seed)
    when there are several).

    Only (seed, unit) pairs every candidate has are used, so every comparison is paired, and
    only seeds every candidate has. ``best`` names the recommended candidate (default: the
    lowest value). With one seed the intervals bootstrap the images; with several they rest on
    the seeds (:mod:`rts.attacks.simultaneous`). ``None`` when no candidate has a defined
    statistic.
    """
    from rts.attacks.simultaneous import simultaneous
    from rts.attacks.statistics import get_statistic

    if images.empty:
        return None
    frame = images if "seed" in images.columns else images.assign(seed=0)
    index = ["seed", "unit"]
    wide_c = frame.pivot_table(index=index, columns="key", values="clean_error")
    wide_a = frame.pivot_table(index=index, columns="key", values="adv_error")
    units = wide_c.dropna().index.intersection(wide_a.dropna().index)
    wide_c, wide_a = wide_c.loc[units], wide_a.loc[units]
    stat = get_statistic(statistic)
    pooled = {k: stat(wide_c[k].to_numpy(), wide_a[k].to_numpy()) for k in wide_c.columns}
    keys = sorted(k for k, v in pooled.items() if not math.isnan(v))
    if not keys:
        return None
    seeds = [
        (wide_c.loc[s, keys].to_numpy(), wide_a.loc[s, keys].to_numpy())
        for s in units.get_level_values("seed").unique()
    ]
    fam = simultaneous(seeds, statistic, confidence=confidence, n_resamples=n_resamples, seed=seed)
    values = dict(zip(keys, fam.value, strict=True))
    if best not in values or math.isnan(values[best]):
        best = min((k for k in keys if not math.isnan(values[k])), key=values.get, default=keys[0])
    b = keys.index(best)
    base = keys.index(baseline) if baseline in values else -1
    rows = []
    for i, k in enumerate(keys):
        d = (0.0, 0.0, 0.0) if i == b else fam.diff(i, b)
        bd = fam.diff(i, base) if base >= 0 and i != base else (math.nan,) * 3
        rows.append(
            {
                "key": k,
                "value": values[k],
                "low": fam.low[i],
                "high": fam.high[i],
                "diff": d[0],
                "diff_low": d[1],
                "diff_high": d[2],
                "tied": bool(i == b or not d[1] > 0),  # NaN: cannot tell apart, counts as tied
                "base_diff": bd[0],
                "base_diff_low": bd[1],
                "base_diff_high": bd[2],
            }
        )
    table = pd.DataFrame(rows).sort_values(["value", "key"]).reset_index(drop=True)
    vs = fam.diff(b, base) if base >= 0 and base != b else (math.nan,) * 3
    return Comparison(
        statistic=statistic,
        best=best,
        table=table,
        baseline=baseline if base >= 0 else "",
        vs_baseline=vs,
        verdict=verdict_of(vs) if base >= 0 and base != b else "",
        seeds=fam.seeds,
        images=fam.images,
        method=fam.method,
        confidence=confidence,
    )
