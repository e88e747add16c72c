"""Projected gradient descent (Madry et al. 2018) on any subset of a multi-task model's tasks.

The objective is the weighted multi-task loss ``Σ_i w_i L_i`` of the attacked tasks (Mao et al.
2020's multi-task attack; one task = single-task PGD). L-inf steps follow ``sign(∇)``, L2 steps
the per-sample normalised gradient; after each step ``x_adv`` is projected onto the sample's own
``eps``-ball and into ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from rts.attacks.objective import (
    Combine,
    Weights,
    attack_mode,
    check_step_size,
    check_steps,
    loss_and_grad,
    prepare,
    warn_if_degenerate,
    weighted,
)
from rts.attacks.projection import COMPAT_NORMS, NORMS, ascent_direction, project, uniform_start
from rts.attacks.registry import register_attack
from rts.tasks.losses import PerSampleLoss


def default_step_size(eps: float, steps: int) -> float:
    """Madry et al.'s rule ``2.5 · eps / steps``: enough to cross the ball from any start."""
    return 2.5 * eps / steps


def iterate(
    model: nn.Module,
    x: Tensor,
    y: Mapping[str, Tensor],
    keys: Sequence[str],
    losses: Mapping[str, PerSampleLoss] | None,
    combine: Combine,
    *,
    eps: float,
    steps: int,
    step_size: float,
    norm: str,
    random_start: bool,
    generator: torch.Generator | None,
    name: str,
) -> Tensor:
    """The PGD loop shared by :func:`pgd` and :func:`attacks.wgd.wgd` (only ``combine`` differs).

    ``norm="l2-batch"`` reproduces the published code's L2 update (peers.md §1.2):
    ``x_adv += eps · ∇`` with the raw gradient of the batch-mean objective, then the whole
    batch's ``δ`` is rescaled onto the sphere of radius ``eps``; ``step_size`` is unused. Unlike
    the published code the result is clamped to ``[0, 1]``.
    """
    x0 = x.detach()
    with attack_mode(model, x0):
        x_adv = uniform_start(x0, eps, norm, generator) if random_start else x0.clone()
        for i in range(steps):
            objective, grad = loss_and_grad(model, x_adv, y, keys, losses, combine)
            if i == 0:
                warn_if_degenerate(objective, grad, name)
            with torch.no_grad():
                if norm == "l2-batch":
                    x_adv = x_adv + grad * (eps / x0.shape[0])
                else:
                    x_adv = x_adv + step_size * ascent_direction(grad, norm)
                x_adv = project(x_adv, x0, eps, norm)
    return x_adv.detach()


@register_attack(
    "pgd",
    norms=NORMS + COMPAT_NORMS,
    summary="Madry et al. PGD on the weighted multi-task loss (L-inf sign / L2 normalised steps)",
)
def pgd(
    model: nn.Module,
    x: Tensor,
    y: Mapping[str, Tensor],
    tasks: str | Sequence[str],
    weights: Weights = None,
    *,
    eps: float,
    steps: int,
    step_size: float | None = None,
    norm: str = "linf",
    random_start: bool = True,
    generator: torch.Generator | None = None,
    losses: Mapping[str, PerSampleLoss] | None = None,
) -> Tensor:
    """PGD against the weighted loss of ``tasks``.

    Args:
        model: returns ``dict[str, Tensor]``; called as ``model(x, tasks=...)`` when it accepts
            ``tasks`` (only the attacked heads run).
        x: clean images ``[N, C, H, W]`` in ``[0, 1]``; never modified.
        y: labels keyed by task.
        tasks: attacked task keys (``"sd"`` or a sequence).
        weights: per-task weights (mapping or sequence aligned with ``tasks``); default uniform
            ``1/M``; a weight of 0 leaves the task out of the attack.
        eps: budget in pixel units (``8/255``).
        steps: number of gradient steps.
        step_size: default ``2.5 · eps / steps`` (Madry et al.).
        norm: ``"linf"``, ``"l2"``, or the compat ``"l2-batch"`` (published code; not per-sample).
        random_start: start from a uniform point in the ball (L2: uniform radius).
        generator: the only source of randomness (drawn on CPU).
        losses: per-task loss overrides ``(pred, target) -> [N]``; default the registry's.

    Returns:
        ``x_adv`` with ``‖x_adv - x‖ <= eps`` per sample and values in ``[0, 1]``.
    """
    setup = prepare(x, y, tasks, weights, losses, eps, norm, NORMS + COMPAT_NORMS)
    steps = check_steps(steps)
    alpha = check_step_size(step_size, default_step_size(setup.eps, steps))
    return iterate(
        model,
        x,
        y,
        setup.keys,
        losses,
        weighted(setup.weights),
        eps=setup.eps,
        steps=steps,
        step_size=alpha,
        norm=setup.norm,
        random_start=random_start,
        generator=generator,
        name="pgd",
    )
