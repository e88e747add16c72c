"""Pareto fronts and non-dominated ranks, minimising two objectives: the project's only copy.

The stage-1 ranking (Pareto objective), the summary's front and the report's plot all use
:func:`pareto_ranks`; :func:`pareto_front` is its rank-0 mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pareto_ranks(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> np.ndarray:
    """Non-dominated sorting rank of each point (0 = on the Pareto front), minimising both.

    A point is dominated when another is no worse in both and strictly better in one, so equal
    points share a rank. ``inf`` counts as the worst value; NaN points get rank -1 (unranked).
    """
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    ranks = np.full(len(xa), -1, dtype=int)
    remaining = np.nonzero(~(np.isnan(xa) | np.isnan(ya)))[0]
    rank = 0
    while len(remaining):
        px, py = xa[remaining], ya[remaining]
        le = (px[None, :] <= px[:, None]) & (py[None, :] <= py[:, None])
        lt = (px[None, :] < px[:, None]) | (py[None, :] < py[:, None])
        dominated = np.any(le & lt, axis=1)  # row i: some j no worse everywhere, better once
        ranks[remaining[~dominated]] = rank
        remaining = remaining[dominated]
        rank += 1
    return ranks


def pareto_front(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> np.ndarray:
    """Boolean mask of the points on the Pareto front (rank 0; NaN points never are)."""
    return pareto_ranks(x, y) == 0
