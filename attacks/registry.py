"""The attack registry (``ATTACKS``), the ``eps`` parser and a uniform way to call any attack.

Every attack is a pure function with one signature (see :mod:`attacks`); it is registered here
by a decorator so the CLI, the ensemble evaluation and the tests can iterate over all of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from rts.attacks.projection import NORMS
from rts.tasks.parsing import parse_fraction

DEFAULT_ATTACKS: tuple[str, ...] = ("pgd", "apgd", "wgd")
"""The ensemble whose per-sample worst case is the project's default robustness number."""


@dataclass(frozen=True)
class AttackSpec:
    """One registered attack.

    Attributes:
        name: registry key (``"pgd"``).
        fn: the attack function ``fn(model, x, y, tasks, weights=None, *, eps, ...) -> x_adv``.
        iterative: False for single-step attacks (``fgsm``), which take no ``steps``,
            ``step_size``, ``random_start`` or ``generator``.
        norms: the norms it supports.
        summary: one line for ``--help`` and the docs.
    """

    name: str
    fn: Callable[..., Tensor]
    iterative: bool
    norms: tuple[str, ...]
    summary: str


ATTACKS: dict[str, AttackSpec] = {}


def register_attack(
    name: str, *, iterative: bool = True, norms: Sequence[str] = NORMS, summary: str = ""
) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Decorator adding an attack function to :data:`ATTACKS`; a duplicate name raises."""

    def decorate(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        if name in ATTACKS:
            raise ValueError(f"attack {name!r} is already registered")
        ATTACKS[name] = AttackSpec(name, fn, iterative, tuple(norms), summary)
        return fn

    return decorate


def get_attack(name: str) -> AttackSpec:
    """The spec of attack ``name``; an unknown name lists the choices."""
    try:
        return ATTACKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}") from None


def parse_attacks(names: str | Sequence[str]) -> tuple[str, ...]:
    """``"pgd,apgd"`` or ``["pgd", "apgd"]`` → ``("pgd", "apgd")``, validated, no duplicates."""
    items = names.split(",") if isinstance(names, str) else list(names)
    out = tuple(n.strip() for n in items if n.strip())
    if not out:
        raise ValueError(f"no attack named in {names!r}; choose from {', '.join(ATTACKS)}")
    for n in out:
        get_attack(n)
    if len(set(out)) != len(out):
        raise ValueError(f"an attack appears twice in {names!r}")
    return out


def parse_eps(value: str | float) -> float:
    """An attack budget from a number or a string such as ``"8/255"``, ``"0.03"``, ``"1e-2"``.

    The value must lie in ``(0, 1]`` (pixel units of [0, 1] images). No ``eval``: a fraction is
    split on ``/`` and both sides parsed as floats.
    """
    try:
        eps = parse_fraction(value)
    except ValueError:
        raise ValueError(
            f"eps must be a number or a fraction like 8/255, got eps={value!r}"
        ) from None
    if not math.isfinite(eps) or not 0 < eps <= 1:
        raise ValueError(f"eps must be in (0, 1], got eps={value}")
    return eps


def run_attack(
    name: str,
    model: nn.Module,
    x: Tensor,
    y: Mapping[str, Tensor],
    tasks: str | Sequence[str],
    weights: Mapping[str, float] | Sequence[float] | None = None,
    *,
    eps: float,
    steps: int | None = None,
    step_size: float | None = None,
    norm: str = "linf",
    random_start: bool | None = None,
    generator: Any = None,
    losses: Mapping[str, Any] | None = None,
    **options: Any,
) -> Tensor:
    """Call attack ``name`` with the shared arguments it takes.

    Single-step attacks ignore ``steps``, ``step_size``, ``random_start`` and ``generator``;
    ``random_start=None`` keeps each attack's own default; ``options`` are attack-specific
    (``gamma`` for wgd, ``decay`` for mim, ``rho`` for apgd).
    """
    spec = get_attack(name)
    if norm not in spec.norms:
        raise ValueError(
            f"unknown norm {norm!r} for attack {name!r}; choose from {', '.join(spec.norms)}"
        )
    kwargs: dict[str, Any] = {"eps": eps, "norm": norm, "losses": losses, **options}
    if spec.iterative:
        if steps is None:
            raise ValueError(f"attack {name!r} needs steps (an integer >= 1)")
        kwargs.update(steps=steps, step_size=step_size, generator=generator)
        if random_start is not None:
            kwargs["random_start"] = random_start
    return spec.fn(model, x, y, tasks, weights, **kwargs)
