"""Parsers of attack options: one home for the rule of each option, shared by the attacks
themselves, the registry (``--option pgd.step_size=1/255``) and the config checks.

A parser takes the option's name and a value (a number, a bool, or the text a user typed) and
returns the converted value, or raises a one-line :class:`ValueError` naming the option, the bad
value and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

OptionParser = Callable[[str, Any], Any]
"""``parse(name, value) -> value``; raises ``ValueError`` on a bad value."""


def number(name: str, value: Any) -> float:
    """A float from a number or a string such as ``"2/255"``, ``"0.5"``, ``"-1"`` (no ``eval``)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {name}={value!r}")
    if isinstance(value, str):
        num, sep, den = value.strip().partition("/")
        try:
            return float(num) / float(den) if sep else float(num)
        except (ValueError, ZeroDivisionError):
            raise ValueError(
                f"{name} must be a number or a fraction like 2/255, got {name}={value!r}"
            ) from None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {name}={value!r}") from None


def positive(name: str, value: Any) -> float:
    """A finite number ``> 0`` (step sizes)."""
    v = number(name, value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be > 0, got {name}={value!r}")
    return v


def finite(name: str, value: Any) -> float:
    """Any finite number, of either sign (WGD's ``gamma``)."""
    v = number(name, value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {name}={value!r}")
    return v


def non_negative(name: str, value: Any) -> float:
    """A finite number ``>= 0`` (MIM's ``decay``)."""
    v = number(name, value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be >= 0, got {name}={value!r}")
    return v


def unit_interval(name: str, value: Any) -> float:
    """A number in ``[0, 1]`` (APGD's ``rho``)."""
    v = number(name, value)
    if not 0 <= v <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {name}={value!r}")
    return v


def boolean(name: str, value: Any) -> bool:
    """``True``/``False``, or the text ``true``/``false`` (any case)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise ValueError(f"{name} must be true or false, got {name}={value!r}")


def choice(*allowed: str) -> OptionParser:
    """A parser accepting exactly one of ``allowed``."""

    def parse(name: str, value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}; choose from {', '.join(allowed)}")
        return value

    return parse


ITERATIVE_OPTIONS: dict[str, OptionParser] = {"step_size": positive, "random_start": boolean}
"""Options every iterative attack takes (its own step size and random start)."""
