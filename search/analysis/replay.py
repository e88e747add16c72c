"""A replayed run's own truth: how the early tables rank every task set against the full one.

A replay (``replay:``) holds a value for every task set at each measured fraction of training,
not only for the sets the search trained; so the early-vs-final correlation is measured over
all of them (16 per main task of five tasks), with 95 % intervals (Fisher z), which says how far
early-epoch screening can be trusted on these measurements.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from rts.search.analysis.correlate import MIN_POINTS
from rts.search.config.convert import from_dict
from rts.search.config.replay import read_replay
from rts.search.config.schema import ConfigError, main_tasks


def fisher_interval(r: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The interval of a correlation ``r`` over ``n`` points by Fisher's z (NaN below 4): for
    Spearman's rho, which scipy gives no interval for (Pearson's comes from scipy)."""
    from scipy import stats

    if n < 4 or not math.isfinite(r):
        return math.nan, math.nan
    z = np.arctanh(np.clip(r, -0.999999, 0.999999))
    half = stats.norm.ppf(0.5 + level / 2) / math.sqrt(n - 3)
    return float(np.tanh(z - half)), float(np.tanh(z + half))


def replay_correlations(config: Mapping[str, Any] | None) -> pd.DataFrame | None:
    """Per main task and early fraction: ``n`` sets with both values, Spearman ``rho`` and
    Pearson ``r`` of the early against the full value, each with its interval; ``None`` when
    the run is not a replay (or its tables are no longer readable)."""
    from scipy import stats

    if not isinstance(config, Mapping) or not config.get("replay"):
        return None
    try:
        cfg = from_dict(dict(config))
        tables = read_replay(cfg.replay)
    except ConfigError:
        return None
    rows = []
    for main in main_tasks(cfg.search):
        frame = tables.frame(main)
        for f in tables.fractions[:-1]:
            both = frame[[f, 1.0]].dropna()
            n = len(both)
            row: dict[str, Any] = {"main": main, "early fraction": f, "n": n}
            if n >= MIN_POINTS:
                rho = float(stats.spearmanr(both[f], both[1.0])[0])
                pearson = stats.pearsonr(both[f], both[1.0])  # scipy's own Fisher-z interval
                low, high = pearson.confidence_interval(0.95)
                row.update(spearman=rho, pearson=float(pearson[0]))
                row["spearman_lo"], row["spearman_hi"] = fisher_interval(rho, n)
                row["pearson_lo"], row["pearson_hi"] = float(low), float(high)
            rows.append(row)
    return pd.DataFrame(rows).set_index(["main", "early fraction"]) if rows else None


def correlation_line(row: Mapping[str, Any]) -> str:
    """One sentence per row of :func:`replay_correlations` (``main`` and ``early fraction``
    as columns)."""
    where = f"main {row['main']}, {row['early fraction']:g} of training"
    if "spearman" not in row or pd.isna(row.get("spearman")):
        return f"{where}: {row['n']} sets with both values, below {MIN_POINTS}: no correlation."
    return (
        f"{where}: Spearman {row['spearman']:.2f} [{row['spearman_lo']:.2f}, "
        f"{row['spearman_hi']:.2f}] over {row['n']} task sets (95 % Fisher-z interval)."
    )
