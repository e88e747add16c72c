"""Trial faults and infrastructure faults: which failures are recorded and which are retried.

A *trial fault* is the trial's own: an exception raised by the trial function (a bug, a bad
configuration, an out-of-memory error of torch) or a non-finite loss or metric. Given the
trial's configuration and seed it happens again on every retry, so the trainable catches it and
ends the trial with one last result carrying :data:`FAILURE_KEY`; the trial is recorded
``failed`` with that reason and never retried.

An *infrastructure fault* is the machine's: a node lost, a worker process killed (the OOM
killer, a preempted instance), a checkpoint that could not be uploaded. It never passes through
the trainable's handler (the process is gone, or Ray raised it), so Ray sees a trial error and
retries the trial from its last checkpoint on a surviving node, up to ``resources.max_retries``
times (``FailureConfig(max_failures)``); past that the trial is recorded ``failed`` with Ray's
error.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

FAILURE_KEY = "failure"
"""Key of the last result of a trial that failed by itself: the one-line reason."""


class TrialFailure(RuntimeError):
    """A trial's failure read back from a record: its message is the line :func:`failure_reason`
    gave when the trial failed."""


def failure_reason(error: BaseException | None) -> str:
    """One line saying why a trial failed: the original exception's type and message."""
    if error is None:
        return ""
    if isinstance(error, TrialFailure):
        return str(error)
    cause = getattr(error, "cause", None) or error
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


def is_infrastructure_fault(error: BaseException) -> bool:
    """Whether ``error`` (or an exception it was raised from) is one of Ray's own errors
    (``ray.exceptions.RayError``: actor or worker died, node died, object lost, ...)."""
    from ray.exceptions import RayError

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, RayError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def failed_result(error: BaseException, required: Iterable[str]) -> dict[str, Any]:
    """The last result of a trial that failed by itself: the reason under :data:`FAILURE_KEY`
    and ``required`` (the metrics Ray insists every result has) as NaN. It has no ``epoch``,
    so the scheduler (ASHA) ignores it."""
    return {FAILURE_KEY: failure_reason(error), **dict.fromkeys(required, math.nan)}


def result_failure(result: Any) -> str:
    """Why a finished trial (Ray's ``Result`` or a recorded one) failed; ``""`` if it did not.

    A trial fault is in its last metrics (:data:`FAILURE_KEY`); an infrastructure fault that
    outlived its retries is Ray's error.
    """
    if result.error is not None:
        return failure_reason(result.error)
    reason = (result.metrics or {}).get(FAILURE_KEY)
    return str(reason) if is_failure(reason) else ""


def is_failure(value: Any) -> bool:
    """Whether a value of the :data:`FAILURE_KEY` column says the trial failed (a non-empty
    string; NaN and ``""`` are the other rows of a metrics table)."""
    return isinstance(value, str) and value != ""


def drop_failure_rows(rows: Any) -> Any:
    """A trial's metrics table (DataFrame) without the row of its failure (no epoch)."""
    if rows is None or FAILURE_KEY not in getattr(rows, "columns", ()):
        return rows
    keep = ~rows[FAILURE_KEY].map(is_failure)
    return rows[keep].drop(columns=[FAILURE_KEY])
