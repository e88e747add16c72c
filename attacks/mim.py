"""Momentum iterative method (Dong et al. 2018, MI-FGSM) on the weighted multi-task loss.

Each step divides the gradient by its per-sample mean absolute value, accumulates it with
momentum ``decay`` (``g ← ∇/mean|∇| + decay · g``) and steps ``step_size`` along the unit ascent
direction of ``g`` (``sign`` for L-inf, exactly torchattacks' MIFGSM; ``g/‖g‖₂`` for L2), then
projects. The normalisation makes the update independent of the loss scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from rts.attacks.objective import (
    Weights,
    attack_mode,
    check_step_size,
    check_steps,
    loss_and_grad,
    prepare,
    warn_if_degenerate,
    weighted,
)
from rts.attacks.options import non_negative
from rts.attacks.pgd import default_step_size
from rts.attacks.projection import NORMS, ascent_direction, per_sample, project, uniform_start
from rts.attacks.registry import register_attack
from rts.tasks.losses import PerSampleLoss


@register_attack(
    "mim",
    summary="Dong et al. momentum iterative FGSM (decay 1.0)",
    step_rule="eps/4",
    options={"decay": non_negative},
)
def mim(
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
    random_start: bool = False,
    generator: torch.Generator | None = None,
    losses: Mapping[str, PerSampleLoss] | None = None,
    decay: float = 1.0,
) -> Tensor:
    """MI-FGSM against the weighted loss of ``tasks``.

    Args are those of :func:`attacks.pgd.pgd`, except:
        step_size: default ``eps / 4``, the paper's ``α`` (as PGD; torchattacks' 2/255 at 8/255).
        random_start: default False, as in Dong et al. and torchattacks.
        decay: momentum decay ``μ`` (1.0 in Dong et al.).
    """
    setup = prepare(x, y, tasks, weights, losses, eps, norm, NORMS)
    steps = check_steps(steps)
    alpha = check_step_size(step_size, default_step_size(setup.eps))
    decay = non_negative("decay", decay)
    combine = weighted(setup.weights)
    x0 = x.detach()
    with attack_mode(model, x0):
        x_adv = uniform_start(x0, setup.eps, setup.norm, generator) if random_start else x0.clone()
        momentum = torch.zeros_like(x0)
        for i in range(steps):
            objective, grad = loss_and_grad(model, x_adv, y, setup.keys, losses, combine)
            if i == 0:
                warn_if_degenerate(objective, grad, "mim")
            with torch.no_grad():
                scale = grad.abs().flatten(1).mean(dim=1)
                grad = grad / per_sample(scale.clamp_min(torch.finfo(grad.dtype).tiny), grad)
                momentum = grad + decay * momentum
                x_adv = x_adv + alpha * ascent_direction(momentum, setup.norm)
                x_adv = project(x_adv, x0, setup.eps, setup.norm)
    return x_adv.detach()
