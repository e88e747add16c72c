"""Task loss weights as people write them, and how they are shown: the one parser and formatter.

Weights travel as ``{task: w}``. People and files write them several ways, all accepted by
:func:`parse_weights`: ``"s=1,d=0.1"`` (the CLI), a JSON object (how the search's tables store
them), a mapping, a sequence aligned with a task string, or nothing (``None``, ``""``,
``"uniform"``: uniform weights, returned as ``{}``). :func:`format_weights` is the display form
and :func:`weights_key` the normalised form that identifies a weighting (scale-free).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from rts.tasks.registry import get_task

UNIFORM = "uniform"
"""How uniform weights are written and shown."""


def parse_weights(weights: Any, tasks: str | None = None) -> dict[str, float]:
    """``{task: w}`` from any accepted form (module docstring); ``{}`` means uniform.

    Args:
        weights: the weights in any accepted form.
        tasks: the model's tasks; required for a sequence, and every weighted task must be in it.

    Raises:
        ValueError: a malformed text, an unknown task key, a task outside ``tasks``, a
            non-finite weight, or a sequence of the wrong length.
    """
    if weights is None or (isinstance(weights, float) and math.isnan(weights)):
        return {}
    if isinstance(weights, str):
        text = weights.strip()
        if not text or text.lower() in (UNIFORM, "none"):
            return {}
        if text.startswith("{"):
            return parse_weights(json.loads(text), tasks)
        pairs: dict[str, float] = {}
        for part in text.replace(";", ",").split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            try:
                if not sep:
                    raise ValueError
                pairs[key.strip()] = float(value)
            except ValueError:
                raise ValueError(
                    f"weights take task=weight pairs such as 's=1,d=0.1', got {weights!r}"
                ) from None
        weights = pairs
    if isinstance(weights, Mapping):
        out = {str(k): float(v) for k, v in weights.items()}
    else:
        values = [float(v) for v in weights]
        if tasks is None or len(values) != len(tasks):
            raise ValueError(f"{len(values)} weights for tasks {tasks!r}; give one per task")
        out = dict(zip(tasks, values, strict=True))
    for k, v in out.items():
        get_task(k)
        if tasks is not None and k not in tasks:
            raise ValueError(f"weight for task {k!r} which is not in tasks {tasks!r}")
        if not math.isfinite(v):
            raise ValueError(f"weight of task {k!r} must be finite, got {v}")
    return out


def is_uniform(weights: Any, tasks: str | None = None) -> bool:
    """Whether ``weights`` weigh every weighted task the same (``{}`` included)."""
    w = parse_weights(weights, tasks)
    values = [w.get(k, 0.0) for k in tasks] if tasks else list(w.values())
    return not values or max(values) - min(values) <= 1e-9 * max(1.0, max(map(abs, values)))


def format_weights(weights: Any, tasks: str | None = None) -> str:
    """Display form: ``"uniform"``, or ``"s=1,d=0.1"`` (3 significant digits, ``tasks`` order)."""
    w = parse_weights(weights, tasks)
    if is_uniform(w, tasks):
        return UNIFORM
    keys = [k for k in tasks if k in w] if tasks else list(w)
    return ",".join(f"{k}={w[k]:.3g}" for k in keys)


def weights_key(weights: Any, tasks: str) -> str:
    """Normalised weights (sum 1, 4 significant digits, ``tasks`` order); ``""`` when uniform.

    Equal weights are uniform whatever their scale, and a task without a weight counts as 0
    (:func:`rts.tasks.losses.weighted_sum`: weight 0 = task skipped).
    """
    w = parse_weights(weights, tasks)
    if is_uniform(w, tasks):
        return ""
    values = [w.get(k, 0.0) for k in tasks]
    total = sum(values)
    if total <= 0 or not math.isfinite(total):
        raise ValueError(f"weights must be finite with a positive sum, got {weights!r}")
    return ",".join(f"{k}={v / total:.4g}" for k, v in zip(tasks, values, strict=True))
