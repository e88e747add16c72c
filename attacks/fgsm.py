"""Fast gradient sign method (Goodfellow et al. 2015) on the weighted multi-task loss.

One step of size ``eps`` along the steepest-ascent direction of the norm: ``sign(∇)`` for L-inf
(FGSM), ``∇ / ‖∇‖₂`` for L2 (the "fast gradient method"); then clamp to ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from rts.attacks.objective import Weights, attack_mode, loss_and_grad, prepare, warn_if_degenerate
from rts.attacks.objective import weighted as weighted_objective
from rts.attacks.projection import NORMS, ascent_direction, project
from rts.attacks.registry import register_attack
from rts.tasks.losses import PerSampleLoss


@register_attack(
    "fgsm",
    iterative=False,
    summary="Goodfellow et al. single step of size eps (sign / normalised gradient)",
    step_rule="eps (one step)",
)
def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Mapping[str, Tensor],
    tasks: str | Sequence[str],
    weights: Weights = None,
    *,
    eps: float,
    norm: str = "linf",
    losses: Mapping[str, PerSampleLoss] | None = None,
) -> Tensor:
    """One gradient step of size ``eps`` against the weighted loss of ``tasks``.

    Args are those of :func:`attacks.pgd.pgd` (no steps, step size or random start).

    Returns:
        ``x_adv = clamp(x + eps · d, 0, 1)`` with ``d`` the unit ascent direction.
    """
    setup = prepare(x, y, tasks, weights, losses, eps, norm, NORMS)
    x0 = x.detach()
    with attack_mode(model, x0):
        objective, grad = loss_and_grad(
            model, x0, y, setup.keys, losses, weighted_objective(setup.weights)
        )
        warn_if_degenerate(objective, grad, "fgsm")
        with torch.no_grad():
            x_adv = project(
                x0 + setup.eps * ascent_direction(grad, setup.norm), x0, setup.eps, setup.norm
            )
    return x_adv.detach()
