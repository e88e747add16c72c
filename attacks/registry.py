"""The attack registry (``ATTACKS``), the ``eps`` parser and a uniform way to call any attack.

Every attack is a pure function with one signature (see :mod:`attacks`); it is registered here
by a decorator so the CLI, the ensemble evaluation and the tests can iterate over all of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from rts.attacks.options import ITERATIVE_OPTIONS, OptionParser
from rts.attacks.projection import COMPAT_NORMS, NORMS
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
        step_rule: its default step size, in words (``"eps/4"``).
        fixed_step: whether it takes the shared ``step_size`` (``--step-size``,
            ``attack.step_size``). False for attacks with their own schedule (APGD starts at
            ``2·eps`` and halves it per sample), which only take a step size given to them by
            name (``--option apgd.step_size=...``), never another attack's.
        options: the keyword options a user may set for this attack alone, each with its parser
            (``{"gamma": finite, ...}``; iterative attacks also take ``step_size`` and
            ``random_start``).
    """

    name: str
    fn: Callable[..., Tensor]
    iterative: bool
    norms: tuple[str, ...]
    summary: str
    step_rule: str = ""
    fixed_step: bool = False
    options: Mapping[str, OptionParser] = field(default_factory=dict)

    def parse_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` converted and checked by their parsers (text such as ``"1/255"`` is
        accepted); an unknown option lists the ones this attack takes."""
        out = {}
        for key, value in options.items():
            if key not in self.options:
                allowed = ", ".join(self.options) or "none"
                raise ValueError(
                    f"unknown option {key!r} for attack {self.name!r}; it takes {allowed}"
                )
            out[key] = self.options[key](f"{self.name}.{key}", value)
        return out


ATTACKS: dict[str, AttackSpec] = {}


def register_attack(
    name: str,
    *,
    iterative: bool = True,
    norms: Sequence[str] = NORMS,
    summary: str = "",
    step_rule: str = "",
    fixed_step: bool = True,
    options: Mapping[str, OptionParser] | None = None,
) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Decorator adding an attack function to :data:`ATTACKS`; a duplicate name raises.

    Iterative attacks take ``step_size`` and ``random_start`` as options besides ``options``;
    ``fixed_step=False`` marks an attack with its own step schedule (see :class:`AttackSpec`).
    """

    def decorate(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        if name in ATTACKS:
            raise ValueError(f"attack {name!r} is already registered")
        own = {**(ITERATIVE_OPTIONS if iterative else {}), **(options or {})}
        ATTACKS[name] = AttackSpec(
            name, fn, iterative, tuple(norms), summary, step_rule, iterative and fixed_step, own
        )
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


def fixed_step_attacks() -> tuple[str, ...]:
    """The attacks the shared ``step_size`` applies to (registry order)."""
    return tuple(n for n, s in ATTACKS.items() if s.fixed_step)


def parse_option_items(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["pgd.step_size=1/255", "wgd.gamma=-1"]`` → ``{"pgd": {"step_size": 1/255}, ...}``.

    Each item is ``ATTACK.OPTION=VALUE``; the value is converted by the option's parser. An
    option given twice for the same attack is an error.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        attack, dot, key = target.strip().partition(".")
        if not sep or not dot or not attack or not key:
            raise ValueError(
                f"an attack option is ATTACK.OPTION=VALUE, e.g. pgd.step_size=1/255, got {item!r}"
            )
        spec = get_attack(attack)
        if key in out.get(attack, {}):
            raise ValueError(f"option {attack}.{key} is given twice")
        out.setdefault(attack, {}).update(spec.parse_options({key: value.strip()}))
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


Budget = tuple[str, float]
"""An attack budget: ``(norm, eps)``."""


def format_eps(norm: str, eps: float) -> str:
    """A budget as people write it: ``8/255`` under L-inf (pixel levels), ``0.5`` under L2."""
    return f"{eps * 255:.3g}/255" if norm == "linf" else f"{eps:g}"


def parse_norms(text: str) -> tuple[str, ...]:
    """``"linf,l2"`` → ``("linf", "l2")``: each a known norm, none twice."""
    allowed = NORMS + COMPAT_NORMS
    out = tuple(n.strip() for n in text.split(",") if n.strip())
    if not out:
        raise ValueError(f"no norm in --norm {text!r}; choose from {', '.join(allowed)}")
    for n in out:
        if n not in allowed:
            raise ValueError(f"unknown norm {n!r}; choose from {', '.join(allowed)}")
    if len(set(out)) != len(out):
        raise ValueError(f"a norm appears twice in --norm {text!r}")
    return out


def parse_budgets(eps: str, norms: str) -> tuple[Budget, ...]:
    """The budgets of ``--eps`` and ``--norm``: every plain eps under every norm of ``norms``,
    and a ``norm:eps`` item under its own norm only.

    ``parse_budgets("4/255,8/255", "linf,l2")`` gives four budgets;
    ``parse_budgets("linf:8/255,l2:0.5", "linf")`` two. A budget given twice is an error.
    """
    names = parse_norms(norms)
    out: list[Budget] = []
    for item in (i.strip() for i in eps.split(",")):
        if not item:
            continue
        norm, sep, value = item.rpartition(":")
        if sep:
            out.append((parse_norms(norm)[0], parse_eps(value)))
        else:
            out.extend((n, parse_eps(value)) for n in names)
    if not out:
        raise ValueError(f"no eps in --eps {eps!r}; give a number or a fraction like 8/255")
    seen = [(n, round(e, 12)) for n, e in out]
    if len(set(seen)) != len(seen):
        raise ValueError(f"a budget appears twice in --eps {eps!r} --norm {norms!r}")
    return tuple(out)


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
    options: Mapping[str, Any] | None = None,
) -> Tensor:
    """Call attack ``name`` with the shared arguments it takes.

    Single-step attacks ignore ``steps``, ``step_size``, ``random_start`` and ``generator``.
    The shared ``step_size`` reaches only the fixed-step attacks (:attr:`AttackSpec.fixed_step`):
    APGD keeps its own schedule whatever it is. ``random_start=None`` keeps each attack's own
    default. ``options`` are this attack's own (:attr:`AttackSpec.options`: ``gamma`` for wgd,
    ``decay`` for mim, ``rho`` for apgd, ``step_size`` for any iterative attack) and win over the
    shared arguments.
    """
    spec = get_attack(name)
    if norm not in spec.norms:
        raise ValueError(
            f"unknown norm {norm!r} for attack {name!r}; choose from {', '.join(spec.norms)}"
        )
    own = spec.parse_options(options or {})
    kwargs: dict[str, Any] = {"eps": eps, "norm": norm, "losses": losses}
    if spec.iterative:
        if steps is None:
            raise ValueError(f"attack {name!r} needs steps (an integer >= 1)")
        kwargs.update(steps=steps, generator=generator)
        if spec.fixed_step and step_size is not None:
            kwargs["step_size"] = step_size
        if random_start is not None:
            kwargs["random_start"] = random_start
    kwargs.update(own)
    return spec.fn(model, x, y, tasks, weights, **kwargs)
