"""Gradient attacks on any subset of a multi-task model's tasks, and the vulnerability metrics.

Every attack is a pure function with one signature::

    x_adv = pgd(model, x, y, tasks, weights=None, *, eps, steps, step_size=None,
                norm="linf", random_start=True, generator=None, losses=None)

``model(x)`` returns ``dict[str, Tensor]``; ``y`` is keyed like it; ``tasks`` are the attacked
keys. ``fgsm`` takes no ``steps``/``step_size``/``random_start``/``generator``. See
``docs/attacks.md`` for the algorithms, WGD's derivation and the metrics' conventions.
"""

from __future__ import annotations

from rts.attacks.apgd import apgd
from rts.attacks.fgsm import fgsm
from rts.attacks.mim import mim
from rts.attacks.pgd import pgd
from rts.attacks.projection import NORMS, dual_norm, lp_norm, project
from rts.attacks.registry import (
    ATTACKS,
    DEFAULT_ATTACKS,
    AttackSpec,
    fixed_step_attacks,
    get_attack,
    parse_attacks,
    parse_budgets,
    parse_eps,
    parse_option_items,
    register_attack,
    run_attack,
)
from rts.attacks.wgd import wgd

__all__ = [
    "ATTACKS",
    "DEFAULT_ATTACKS",
    "NORMS",
    "AttackSpec",
    "apgd",
    "attack_per_image",
    "dual_norm",
    "evaluate_robustness",
    "fgsm",
    "fixed_step_attacks",
    "get_attack",
    "lp_norm",
    "mim",
    "parse_attacks",
    "parse_budgets",
    "parse_eps",
    "parse_option_items",
    "pgd",
    "project",
    "register_attack",
    "run_attack",
    "vulnerability_chain",
    "wgd",
]

_LAZY = {
    "evaluate_robustness": "rts.attacks.evaluate",
    "attack_per_image": "rts.attacks.evaluate",
    "vulnerability_chain": "rts.attacks.chain",
}
"""Exports imported on first use (their modules need pandas / scipy)."""


def __getattr__(name: str):
    """Import :data:`_LAZY`'s names on first use, so ``import rts.attacks`` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'attacks' has no attribute {name!r}")
