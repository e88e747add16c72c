"""Projected gradient descent (Madry et al. 2018) on any subset of a multi-task model's tasks.

The objective is the weighted multi-task loss ``Σ_i w_i L_i`` of the attacked tasks (Mao et al.
2020's multi-task attack; one task = single-task PGD). L-inf steps follow ``sign(∇)``, L2 steps
the per-sample normalised gradient; after each step ``x_adv`` is projected onto the sample's own
``eps``-ball and into ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

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

STEP_FRACTION = 0.25
"""The paper's step (Ghamizi et al. 2022, "Attacks"): ``α = eps/4``, i.e. 2/255 at eps = 8/255."""


def default_step_size(eps: float) -> float:
    """The fixed-step attacks' default ``α = eps / 4`` (the paper's 2/255 at 8/255, any steps).

    Not Madry et al.'s ``2.5·eps/steps`` (0.8/255 at 25 steps): the paper's Tables 1-2 used
    ``α = 2/255``. With few steps from the clean point (``random_start=False``) ``steps·α`` may
    stay below ``eps``; pass ``step_size`` then.
    """
    return STEP_FRACTION * eps


StepGradient = Callable[[int, Tensor], tuple[Tensor, Tensor]]
"""``(step, x_adv) -> (objective [N], input gradient)``: what one PGD step ascends."""


def plain_gradient(
    model: nn.Module,
    y: Mapping[str, Tensor],
    keys: Sequence[str],
    losses: Mapping[str, PerSampleLoss] | None,
    combine: Combine,
) -> StepGradient:
    """The gradient of one fixed objective ``combine({L_i})`` at every step (one backward)."""

    def gradient(step: int, x_adv: Tensor) -> tuple[Tensor, Tensor]:
        return loss_and_grad(model, x_adv, y, keys, losses, combine)

    return gradient


def iterate(
    model: nn.Module,
    x: Tensor,
    gradient: StepGradient,
    *,
    eps: float,
    steps: int,
    step_size: float,
    norm: str,
    random_start: bool,
    generator: torch.Generator | None,
    name: str,
) -> Tensor:
    """The PGD loop shared by :func:`pgd` and :func:`attacks.wgd.wgd` (only ``gradient`` differs).

    ``norm="l2-batch"`` reproduces the published code's L2 update (peers.md §1.2):
    ``x_adv += eps · ∇`` with the raw gradient of the batch-mean objective, then the whole
    batch's ``δ`` is rescaled onto the sphere of radius ``eps``; ``step_size`` is unused. Unlike
    the published code the result is clamped to ``[0, 1]``.
    """
    x0 = x.detach()
    with attack_mode(model, x0):
        x_adv = uniform_start(x0, eps, norm, generator) if random_start else x0.clone()
        for i in range(steps):
            objective, grad = gradient(i, x_adv)
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
    step_rule="eps/4",
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
        step_size: default ``eps / 4``, the paper's ``α`` (2/255 at 8/255).
        norm: ``"linf"``, ``"l2"``, or the compat ``"l2-batch"`` (published code; not per-sample).
        random_start: start from a uniform point in the ball (L2: uniform radius).
        generator: the only source of randomness (drawn on CPU).
        losses: per-task loss overrides ``(pred, target) -> [N]``; default the registry's.

    Returns:
        ``x_adv`` with ``‖x_adv - x‖ <= eps`` per sample and values in ``[0, 1]``.
    """
    setup = prepare(x, y, tasks, weights, losses, eps, norm, NORMS + COMPAT_NORMS)
    steps = check_steps(steps)
    alpha = check_step_size(step_size, default_step_size(setup.eps))
    return iterate(
        model,
        x,
        plain_gradient(model, y, setup.keys, losses, weighted(setup.weights)),
        eps=setup.eps,
        steps=steps,
        step_size=alpha,
        norm=setup.norm,
        random_start=random_start,
        generator=generator,
        name="pgd",
    )
