"""Numbers as people type them in configs and on the command line: ``8/255``, ``0.03``, ``1e-2``.

The one parser of fractions, shared by the attack budget (:func:`rts.attacks.parse_eps`) and the
config converter. No ``eval``: a fraction is split on ``/`` and both sides parsed as floats.
"""

from __future__ import annotations

import math
from typing import Any


def parse_fraction(value: Any) -> float:
    """A finite float from a number or a string ``"a"`` / ``"a/b"``.

    Raises:
        ValueError: a bool, a malformed string, a zero denominator or a non-finite result.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a number or a fraction such as 8/255, got {value!r}")
    try:
        if isinstance(value, str):
            num, sep, den = value.strip().partition("/")
            out = float(num) / float(den) if sep else float(num)
        else:
            out = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        raise ValueError(f"expected a number or a fraction such as 8/255, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"expected a finite number, got {value!r}")
    return out
