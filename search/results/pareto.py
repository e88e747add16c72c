"""Pareto fronts and non-dominated ranks (minimising both objectives); the only copy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pareto_ranks(points: Sequence[tuple[float, float]]) -> list[int]:
    """Non-dominated sorting rank of each point (0 = on the Pareto front), minimising both."""
    n = len(points)
    ranks = [-1] * n
    remaining = set(range(n))
    rank = 0
    while remaining:
        front = {
            i
            for i in remaining
            if not any(_dominates(points[j], points[i]) for j in remaining if j != i)
        }
        for i in front:
            ranks[i] = rank
        remaining -= front
        rank += 1
    return ranks


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def pareto_front(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> np.ndarray:
    """Boolean mask of the points no other point dominates, minimising both ``x`` and ``y``.

    A point is dominated when another is no worse in both and strictly better in one; NaN
    points are never on the front. Equal points are both kept.
    """
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    ok = np.isfinite(xa) & np.isfinite(ya)
    front = np.zeros(len(xa), dtype=bool)
    for i in np.nonzero(ok)[0]:
        le = (xa[ok] <= xa[i]) & (ya[ok] <= ya[i])
        lt = (xa[ok] < xa[i]) | (ya[ok] < ya[i])
        front[i] = not np.any(le & lt)
    return front
