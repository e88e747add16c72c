"""WGD, the paper's multi-task Weighted Gradient attack (Ghamizi et al. 2022, Definition 5).

The paper defines, for an iterative attack on the tasks ``T'``,

* the inverse task attack rate ``L̃_i(t) = L_i(t) / L_i(0)``, and
* the relative inverse attack rate ``r_i(t) = L̃_i(t) / E_j[L̃_j(t)]``,

and says WGD "weights the gradient of each task by the relative inverse task attack rate" so that
the attack "affects all targeted tasks, including those that have a smaller contribution to the
joint loss". It gives no algorithm (its Appendix D is only a code listing) and the published code
never computes ``r_i`` (peers.md §1.2). Our reading:

* ``L_i(0)`` is task ``i``'s loss on the **clean** input, per sample. Dividing by it puts every
  task on the same scale (a relative loss increase), which is what removes the advantage of the
  tasks that dominate the joint loss; the published code's ``RELATIVE_WEIGHT`` strategy does
  exactly this (it takes ``L_i(0)`` after the random start; we take the clean input so the
  reference does not depend on the noise).
* The paper borrows ``r_i`` from GradNorm (Chen et al. 2018), where the loss *decreases* and a
  task with a small ``r_i`` trains fastest and is slowed down. In an attack the loss *increases*:
  a task with a small ``r_i`` is the one the attack has moved **least** so far, so it must get
  **more** weight. The step objective is therefore

  ``J(t) = Σ_i w_i · ρ_i(t) · L_i(x_t) / L_i(0)``,  ``ρ_i(t) = r_i(t)^(-γ) / mean_j r_j(t)^(-γ)``

  with ``ρ_i`` detached (a weight, not part of the gradient) and normalised to mean 1 per sample.
  ``γ`` sets how hard lagging tasks are pushed: ``γ = 0`` is the published code's
  ``RELATIVE_WEIGHT`` (``Σ_i L_i / L_i(0)``); ``γ = 1`` (default) weights each task by the inverse
  of its relative attack rate. With one attacked task ``ρ = 1`` and WGD moves exactly as PGD.
* Everything is per sample (``L_i(0)``, ``r_i``, ``ρ_i``), so a batch is attacked exactly as its
  samples are one by one.

Guard: a task whose clean loss is 0 (or not finite) for a sample, e.g. a label with no valid
pixel, has no defined attack rate; it is left out of that sample's objective and of its means.
The steps are PGD's (:func:`attacks.pgd.iterate`): same step size, random start and projection.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from rts.attacks.objective import (
    Combine,
    Weights,
    attack_mode,
    check_step_size,
    check_steps,
    per_task_losses,
    prepare,
)
from rts.attacks.pgd import default_step_size, iterate
from rts.attacks.projection import COMPAT_NORMS, NORMS
from rts.attacks.registry import register_attack
from rts.tasks.losses import PerSampleLoss, weighted_sum


def attack_rate_weights(
    per_task: Mapping[str, Tensor], clean: Mapping[str, Tensor], gamma: float
) -> dict[str, Tensor]:
    """The WGD weights ``ρ_i(t)`` per sample (``{task: [N]}``, mean 1 over the defined tasks).

    ``L̃_i = L_i / L_i(0)``, ``r_i = L̃_i / mean_j L̃_j``, ``ρ_i ∝ r_i^(-γ)`` normalised to mean 1
    (computed as a softmax of ``-γ·log r_i`` for stability). Undefined tasks (clean loss 0 or not
    finite) get ``ρ = 0``.
    """
    keys = list(per_task)
    cur = torch.stack([per_task[k].detach() for k in keys])  # [M, N]
    ref = torch.stack([clean[k].detach() for k in keys]).to(cur.dtype)
    defined = torch.isfinite(ref) & (ref > 0) & torch.isfinite(cur)
    tiny = torch.finfo(cur.dtype).tiny
    rate = torch.where(defined, cur / ref.clamp_min(tiny), torch.ones_like(cur))
    count = defined.sum(dim=0).clamp_min(1).to(cur.dtype)
    mean_rate = (rate * defined).sum(dim=0) / count
    r = rate / mean_rate.clamp_min(tiny)
    logits = torch.where(defined, -gamma * r.clamp_min(tiny).log(), -math.inf)
    rho = torch.softmax(logits, dim=0) * count
    rho = torch.where(defined, rho, torch.zeros_like(rho))  # columns with no defined task
    return {k: rho[i] for i, k in enumerate(keys)}


def wgd_objective(
    clean: Mapping[str, Tensor], weights: Mapping[str, float], gamma: float
) -> Combine:
    """``{L_i} -> Σ_i w_i ρ_i(t) L_i / L_i(0)`` per sample, ``ρ`` and ``L_i(0)`` detached."""

    def combine(per_task: Mapping[str, Tensor]) -> Tensor:
        rho = attack_rate_weights(per_task, clean, gamma)
        scaled = {}
        for k, value in per_task.items():
            ref = clean[k].to(value.dtype)
            coef = torch.where(rho[k] > 0, rho[k] / ref.clamp_min(torch.finfo(ref.dtype).tiny), 0)
            scaled[k] = value * coef
        return weighted_sum(scaled, weights)

    return combine


@register_attack(
    "wgd",
    norms=NORMS + COMPAT_NORMS,
    summary="the paper's weighted gradient attack: tasks weighted by inverse attack rate",
)
def wgd(
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
    gamma: float = 1.0,
) -> Tensor:
    """WGD against ``tasks``: PGD steps on ``Σ_i w_i ρ_i(t) L_i / L_i(0)`` (see the module doc).

    Args are those of :func:`attacks.pgd.pgd`, plus:
        gamma: exponent of the inverse attack rate, ``>= 0``; 0 = the published code's
            ``RELATIVE_WEIGHT`` strategy.
    """
    setup = prepare(x, y, tasks, weights, losses, eps, norm, NORMS + COMPAT_NORMS)
    steps = check_steps(steps)
    alpha = check_step_size(step_size, default_step_size(setup.eps, steps))
    gamma = float(gamma)
    if not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be finite and >= 0, got gamma={gamma}")
    x0 = x.detach()
    with attack_mode(model, x0), torch.no_grad():
        clean = per_task_losses(model, x0, y, setup.keys, losses)
    return iterate(
        model,
        x,
        y,
        setup.keys,
        losses,
        wgd_objective(clean, setup.weights, gamma),
        eps=setup.eps,
        steps=steps,
        step_size=alpha,
        norm=setup.norm,
        random_start=random_start,
        generator=generator,
        name="wgd",
    )
