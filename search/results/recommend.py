"""The recommendation rule, used by the search's summary and by the analysis of any run.

The recommended candidate is the one with the lowest value (the main task's vulnerability),
ties broken by lower clean error and then by its key, so the choice never depends on row order.
Its reference is the single-task model of the main task on the same encoder.
"""

from __future__ import annotations

from collections.abc import Mapping
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
