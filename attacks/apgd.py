"""Auto-PGD (Croce & Hein 2020) for dense multi-task losses.

AutoAttack's APGD maximises a classifier's cross-entropy; here the per-sample objective is the
weighted multi-task loss ``Σ_i w_i L_i`` of the attacked tasks, with AutoAttack's schedule
(``autoattack/autopgd_base.py``, peers.md §4):

* start on the ball's boundary (``x + eps·t/‖t‖``) when ``random_start``, else at ``x``;
* step size ``2·eps`` per sample; momentum ``α = 0.75`` (``1`` at the first step):
  ``z = P(x_k + η·d(∇))``, ``x_{k+1} = P(x_k + α(z - x_k) + (1 - α)(x_k - x_{k-1}))``;
* checkpoints: the first after ``max(int(0.22·N), 1)`` steps, each next interval shorter by
  ``max(int(0.03·N), 1)`` but at least ``max(int(0.06·N), 1)``;
* at a checkpoint a sample's step size halves, and it restarts from its best point with that
  point's gradient, when the loss increased in at most ``rho·k`` of the last ``k`` steps
  (oscillation) or when its step was not halved at the previous checkpoint and its best loss
  has not improved since (stagnation);
* each sample's best iterate (highest objective) is what is returned.

One deliberate difference from AutoAttack: the first oscillation count compares the first
step's loss with the loss at the starting point, where AutoAttack's array indexing compares it
with an unset entry (0).
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
from rts.attacks.options import unit_interval
from rts.attacks.projection import NORMS, ascent_direction, per_sample, project, sphere_start
from rts.attacks.registry import register_attack
from rts.tasks.losses import PerSampleLoss

MOMENTUM = 0.75
"""APGD's momentum ``α`` (AutoAttack)."""


def checkpoints(steps: int) -> list[int]:
    """The steps (1-based counts of updates) after which APGD checks its step sizes.

    ``[k0, k0 + k1, ...]`` with ``k0 = max(int(0.22·N), 1)`` and each next interval shorter by
    ``max(int(0.03·N), 1)`` down to ``max(int(0.06·N), 1)``.
    """
    k = max(int(0.22 * steps), 1)
    k_min = max(int(0.06 * steps), 1)
    decr = max(int(0.03 * steps), 1)
    out, at = [], k
    while at <= steps:
        out.append(at)
        k = max(k - decr, k_min)
        at += k
    return out


def apgd_trace(
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
    rho: float,
    random_start: bool,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
    """Run APGD and return ``(x_best, loss_best, best_history, step_history)``.

    ``best_history[t]`` is each sample's best objective after ``t`` updates (``t = 0``: the start)
    and ``step_history[t]`` its step size then; exposed for tests of the schedule.
    """
    x0 = x.detach()
    n = x0.shape[0]
    k = max(int(0.22 * steps), 1)
    k_min = max(int(0.06 * steps), 1)
    decr = max(int(0.03 * steps), 1)
    with attack_mode(model, x0):
        x_adv = sphere_start(x0, eps, norm, generator) if random_start else x0.clone()
        loss, grad = loss_and_grad(model, x_adv, y, keys, losses, combine)
        warn_if_degenerate(loss, grad, "apgd")
        x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), loss.clone()
        eta = torch.full((n,), float(step_size), dtype=x0.dtype, device=x0.device)
        x_prev = x_adv.clone()
        loss_prev = loss.clone()
        increases = torch.zeros(n, dtype=torch.long, device=x0.device)
        reduced_last = torch.ones(n, dtype=torch.bool, device=x0.device)
        best_last_check = loss_best.clone()
        since_check = 0
        best_history, step_history = [loss_best.clone()], [eta.clone()]
        for i in range(steps):
            a = MOMENTUM if i > 0 else 1.0
            with torch.no_grad():
                velocity = x_adv - x_prev
                x_prev = x_adv
                z = project(
                    x_adv + per_sample(eta, x_adv) * ascent_direction(grad, norm), x0, eps, norm
                )
                x_adv = project(x_adv + a * (z - x_adv) + (1 - a) * velocity, x0, eps, norm)
            loss, grad = loss_and_grad(model, x_adv, y, keys, losses, combine)
            with torch.no_grad():
                increases += (loss > loss_prev).long()
                loss_prev = loss
                better = loss > loss_best
                x_best[better] = x_adv[better]
                grad_best[better] = grad[better]
                loss_best = torch.where(better, loss, loss_best)
                since_check += 1
                if since_check == k:
                    oscillating = increases <= rho * k
                    stagnating = ~reduced_last & (best_last_check >= loss_best)
                    flag = oscillating | stagnating
                    reduced_last = flag
                    best_last_check = loss_best.clone()
                    eta = torch.where(flag, eta / 2, eta)
                    mask = per_sample(flag, x_adv)
                    x_adv = torch.where(mask, x_best, x_adv)
                    grad = torch.where(mask, grad_best, grad)
                    increases.zero_()
                    since_check = 0
                    k = max(k - decr, k_min)
                best_history.append(loss_best.clone())
                step_history.append(eta.clone())
    return x_best.detach(), loss_best, best_history, step_history


@register_attack(
    "apgd",
    summary="Croce & Hein Auto-PGD on the weighted multi-task loss (best iterate per sample)",
    step_rule="2·eps, halved per sample by its schedule",
    fixed_step=False,
    options={"rho": unit_interval},
)
def apgd(
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
    rho: float = 0.75,
) -> Tensor:
    """Auto-PGD against the weighted loss of ``tasks``; each sample's best iterate is returned.

    Args are those of :func:`attacks.pgd.pgd`, except:
        step_size: the *initial* step size, default ``2 · eps`` (AutoAttack); halved per sample
            by the schedule. The shared ``step_size`` of :func:`attacks.run_attack` and of the
            ensemble never reaches it; only ``options={"apgd": {"step_size": ...}}`` does.
        random_start: start on the ball's boundary along a random direction (AutoAttack).
        rho: oscillation threshold (fraction of increasing steps), 0.75 in AutoAttack.
    """
    setup = prepare(x, y, tasks, weights, losses, eps, norm, NORMS)
    steps = check_steps(steps)
    eta = check_step_size(step_size, 2.0 * setup.eps)
    rho = unit_interval("rho", rho)
    x_best, _, _, _ = apgd_trace(
        model,
        x,
        y,
        setup.keys,
        losses,
        weighted(setup.weights),
        eps=setup.eps,
        steps=steps,
        step_size=eta,
        norm=setup.norm,
        rho=rho,
        random_start=random_start,
        generator=generator,
    )
    return x_best
