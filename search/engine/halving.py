"""Synchronous successive halving: the rungs of stage 1 and who continues past each.

The deterministic search (:mod:`rts.search.engine.batches`) trains a batch of candidates rung by
rung and decides at each rung only once every trial of the batch has reported there, so the
decision never depends on which trial reported first (Ray's ASHA decides on arrival). The rule is
ASHA's: a trial continues past a rung when it is among the best ``1/reduction_factor`` of the
trials that reached that rung (here: in the finished batches and in its own batch). Ties are
broken by the candidate's key, then the trial number, so the decision is a pure function of the
values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence


def rung_epochs(epochs: int, grace: int, factor: int, scheduler: str = "asha") -> list[int]:
    """The epochs at which stage-1 trials are compared: ``grace · factor^k`` below ``epochs``
    (ASHA's rungs), then ``epochs`` itself; ``[epochs]`` without pruning (``fifo``)."""
    if scheduler != "asha":
        return [epochs]
    rungs = []
    r = grace
    while r < epochs:
        rungs.append(r)
        r *= factor
    return [*rungs, epochs]


def sort_key(value: float, tiebreak: tuple) -> tuple:
    """Order of trials at a rung: lower value first, NaN last, then ``tiebreak``."""
    finite = value is not None and math.isfinite(value)
    return (0 if finite else 1, value if finite else 0.0, tiebreak)


def continuing(
    batch: Mapping[tuple, float],
    earlier: Iterable[tuple[float, tuple]],
    factor: int,
) -> set[tuple]:
    """The trials of ``batch`` that continue past a rung.

    Args:
        batch: ``{tiebreak: value}`` of the batch's trials at this rung (NaN for a trial that
            failed or did not report); ``tiebreak`` orders equal values (candidate key, trial
            number).
        earlier: ``(value, tiebreak)`` of the trials of finished batches that reached the rung.
        factor: the reduction factor: the best ``ceil(n / factor)`` of the ``n`` trials with a
            finite value continue.

    Returns:
        The tiebreaks of the batch's trials that continue (never one without a finite value).
    """
    pool = [(sort_key(v, t), t, True) for t, v in batch.items()]
    pool += [(sort_key(v, t), t, False) for v, t in earlier]
    finite = [p for p in pool if p[0][0] == 0]
    keep = math.ceil(len(finite) / factor)
    best = sorted(finite, key=lambda p: p[0])[:keep]
    return {t for _, t, mine in best if mine}


def expected_epochs(rungs: Sequence[int], factor: int) -> float:
    """Expected epochs of one trial when about ``1/factor`` of the trials pass each rung."""
    expected, survive, prev = 0.0, 1.0, 0
    for rung in rungs[:-1]:
        expected += survive * (rung - prev)
        survive /= factor
        prev = rung
    return expected + survive * (rungs[-1] - prev)
