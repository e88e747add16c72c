"""The paired differences figure: every stage-2 combination minus the recommendation (and minus
the single-task model), with simultaneous 95 % intervals.

Two models' own intervals can overlap completely while every image says one is more robust:
overlapping bars are the unpaired reading, which the paired test contradicts. This figure shows
what the verdicts are read from (:class:`~rts.search.results.recommend.Comparison`): an
interval that lies right of 0 is more vulnerable than the reference, one that reaches 0 is tied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rts.search.report.plots import new_figure
from rts.search.results.recommend import Comparison, verdict_of

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLORS = {"better": "tab:green", "tied": "tab:gray", "worse": "tab:red"}
"""Colour of a difference by its verdict (``better``: below 0)."""


def differences_table(comp: Comparison) -> pd.DataFrame:
    """One row per combination: its difference to the recommendation and to the baseline, each
    ``value [low, high]`` with its verdict (the numbers under the figure)."""
    rows = {}
    for r in comp.table.itertuples():
        row = {"minus the recommendation": _text(r.diff, r.diff_low, r.diff_high)}
        if comp.baseline:
            row["minus the single-task model"] = _text(
                r.base_diff, r.base_diff_low, r.base_diff_high
            )
        rows[str(r.key)] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("combination")


def _text(d: float, lo: float, hi: float) -> str:
    if np.isnan(d) or (d == 0 and lo == 0 and hi == 0):
        return "-"
    return f"{d:+.3g} [{lo:+.3g}, {hi:+.3g}] ({verdict_of((d, lo, hi))})"


def differences_figure(comp: Comparison) -> Figure:
    """One panel per reference (the recommendation; the single-task model when there is one):
    each combination's paired difference with its simultaneous interval, coloured by verdict."""
    refs = [("diff", comp.best, "the recommendation")]
    if comp.baseline:
        refs.append(("base_diff", comp.baseline, "the single-task model"))
    table = comp.table
    fig = new_figure(5.0 * len(refs), 0.9 + 0.32 * len(table))
    y = np.arange(len(table))[::-1]
    for i, (col, key, name) in enumerate(refs):
        ax = fig.add_subplot(1, len(refs), i + 1)
        for yi, r in zip(y, table.itertuples(), strict=True):
            d, lo, hi = getattr(r, col), getattr(r, f"{col}_low"), getattr(r, f"{col}_high")
            if str(r.key) == key or np.isnan(d):
                continue
            color = COLORS[verdict_of((d, lo, hi))]
            if np.isfinite(lo) and np.isfinite(hi):
                ax.plot([lo, hi], [yi, yi], color=color, lw=2)
            ax.plot([d], [yi], "o", color=color)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, [str(k) for k in table["key"]] if i == 0 else [""] * len(table))
        ax.set_xlabel(f"{comp.statistic} minus {name} ({key})")
        ax.set_title(f"vs {name}", fontsize=10)
    return fig
