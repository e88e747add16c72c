"""WGD, the paper's multi-task Weighted Gradient attack (Ghamizi et al. 2022, Definition 5).

The paper defines, for an iterative attack on the tasks ``T'``,

* the inverse task attack rate ``L̃_i(t) = L_i(t) / L_i(0)``, and
* the relative inverse attack rate ``r_i(t) = L̃_i(t) / E_j[L̃_j(t)]``,

and says WGD is "a multi-step attack where the gradient of each task is weighted by the relative
inverse task attack rate", one that "adjusts at each step of the attack which tasks are attacked
and how much the gradient of each task is penalized", so that it "affects all targeted tasks –
including those that have a smaller contribution to the joint loss". It gives no algorithm (its
Appendix D is only a code listing) and the published code never computes ``r_i`` (peers.md
§1.2). This module offers the readings side by side; ``benchmarks/wgd.py`` measures them and the
strongest is the default: ``balance="gradient"``, ``gamma=1`` (docs/attacks.md, "WGD").

* **Scale** (every reading): ``L_i(0)`` is task ``i``'s loss on the **clean** input, per sample;
  dividing by it puts every task on the same scale (a relative loss increase), the published
  code's ``RELATIVE_WEIGHT`` strategy (which takes ``L_i(0)`` after its random start).
* **gamma** (``select="all"``): the step objective is
  ``J(t) = Σ_i w_i · ρ_i(t) · L_i(x_t) / L_i(0)``, ``ρ_i(t) = r_i(t)^(-γ) / mean_j r_j(t)^(-γ)``,
  with ``ρ_i`` detached and of mean 1 per sample. ``γ = 0`` is ``RELATIVE_WEIGHT``;
  ``γ = -1`` weights each task by ``r_i`` itself (the paper's literal wording: the task already
  moved most is pushed most); ``γ > 0`` weights by the inverse of ``r_i`` (GradNorm's reading
  turned around for an attack, whose losses rise: the task moved least is pushed most).
* **select="cyclic"**: step ``t`` attacks only task ``t mod M`` (``w_k L_k / L_k(0)``): the
  published ``CYCLIC_STEP`` ("which tasks are attacked" at each step). ``gamma`` has no effect.
* **balance="gradient"**: each task's input gradient is normalised per sample by its dual norm
  (L1 for L-inf, L2 for L2) before they are combined, ``g = Σ_i w_i ρ_i ∇L_i / ‖∇L_i‖_q`` ("how
  much the gradient of each task is penalized"), so every task's first-order gain per step is
  equal. Cost: one forward and **M backward passes** per step (the other readings: one).

Everything is per sample (``L_i(0)``, ``r_i``, ``ρ_i``, the gradient norms), so a batch is
attacked exactly as its samples are one by one, and with one attacked task every reading moves
exactly as PGD. Guard: a task whose clean loss is 0 (or not finite) for a sample, e.g. a label
with no valid pixel, has no attack rate; it is left out of that sample's objective and means.
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
    forward,
    loss_and_grad,
    per_task_losses,
    prepare,
)
from rts.attacks.options import choice, finite
from rts.attacks.pgd import StepGradient, default_step_size, iterate, plain_gradient
from rts.attacks.projection import COMPAT_NORMS, NORMS, dual_norm, lp_norm, per_sample
from rts.attacks.registry import register_attack
from rts.tasks.losses import PerSampleLoss, task_losses, weighted_sum

SELECTS: tuple[str, ...] = ("all", "cyclic")
"""Which tasks a step attacks: ``all`` of them (weighted by ``ρ``) or one per step in turn."""

BALANCES: tuple[str, ...] = ("loss", "gradient")
"""How tasks are put on one scale: their losses over ``L_i(0)``, or unit input gradients."""

DEFAULT_GAMMA = 1.0
"""The default exponent: tied with 0, -1 and 4 in ``benchmarks/wgd.py`` (docs/attacks.md, "WGD")."""

DEFAULT_BALANCE = "gradient"
"""The default balance: it reached a larger share of the strongest attack's damage on every
learned task than the loss readings with uniform attack weights (+19 points [+1, +37], the
benchmark of docs/attacks.md, "WGD"), at M backward passes per step."""


def attack_rate_weights(
    per_task: Mapping[str, Tensor], clean: Mapping[str, Tensor], gamma: float
) -> dict[str, Tensor]:
    """The WGD weights ``ρ_i(t)`` per sample (``{task: [N]}``, mean 1 over the defined tasks).

    ``L̃_i = L_i / L_i(0)``, ``r_i = L̃_i / mean_j L̃_j``, ``ρ_i ∝ r_i^(-γ)`` normalised to mean 1
    (computed as a softmax of ``-γ·log r_i`` for stability; ``γ`` of any sign). Undefined tasks
    (clean loss 0 or not finite) get ``ρ = 0``.
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


def _inverse_clean(clean: Tensor, like: Tensor) -> Tensor:
    """``1 / L_i(0)`` per sample, 0 where the clean loss is 0 or not finite (no attack rate)."""
    ref = clean.to(like.dtype)
    defined = torch.isfinite(ref) & (ref > 0)
    return torch.where(defined, 1 / ref.clamp_min(torch.finfo(ref.dtype).tiny), 0)


def wgd_objective(
    clean: Mapping[str, Tensor], weights: Mapping[str, float], gamma: float
) -> Combine:
    """``{L_i} -> Σ_i w_i ρ_i(t) L_i / L_i(0)`` per sample, ``ρ`` and ``L_i(0)`` detached."""

    def combine(per_task: Mapping[str, Tensor]) -> Tensor:
        rho = attack_rate_weights(per_task, clean, gamma)
        scaled = {
            k: value * rho[k] * _inverse_clean(clean[k], value) for k, value in per_task.items()
        }
        return weighted_sum(scaled, weights)

    return combine


def cyclic_gradient(
    model: nn.Module,
    y: Mapping[str, Tensor],
    keys: Sequence[str],
    losses: Mapping[str, PerSampleLoss] | None,
    clean: Mapping[str, Tensor],
    weights: Mapping[str, float],
) -> StepGradient:
    """Step ``t`` ascends ``w_k L_k / L_k(0)`` of task ``k = keys[t mod M]`` alone (its head)."""

    def gradient(step: int, x_adv: Tensor) -> tuple[Tensor, Tensor]:
        k = keys[step % len(keys)]

        def combine(per_task: Mapping[str, Tensor]) -> Tensor:
            value = per_task[k]
            return weights[k] * value * _inverse_clean(clean[k], value)

        return loss_and_grad(model, x_adv, y, [k], losses, combine)

    return gradient


def balanced_gradient(
    model: nn.Module,
    y: Mapping[str, Tensor],
    keys: Sequence[str],
    losses: Mapping[str, PerSampleLoss] | None,
    clean: Mapping[str, Tensor],
    weights: Mapping[str, float],
    gamma: float,
    norm: str,
) -> StepGradient:
    """``g = Σ_i w_i ρ_i ∇L_i / ‖∇L_i‖_q`` per sample: one forward, one backward per task."""
    q = dual_norm(norm)

    def gradient(step: int, x_adv: Tensor) -> tuple[Tensor, Tensor]:
        x_adv = x_adv.detach().requires_grad_(True)
        per_task = task_losses(forward(model, x_adv, keys), y, list(keys), losses)
        rho = attack_rate_weights(per_task, clean, gamma)
        total = torch.zeros_like(x_adv)
        for i, k in enumerate(keys):
            value = per_task[k]
            if not value.requires_grad:
                continue
            (g,) = torch.autograd.grad(
                value.sum(), x_adv, retain_graph=i < len(keys) - 1, allow_unused=True
            )
            if g is None:
                continue
            g = torch.nan_to_num(g.detach(), nan=0.0, posinf=0.0, neginf=0.0)
            scale = lp_norm(g, q).clamp_min(torch.finfo(g.dtype).tiny)
            coef = weights[k] * rho[k] / scale
            total = total + per_sample(coef, g) * g
        objective = weighted_sum(
            {k: v.detach() * rho[k] * _inverse_clean(clean[k], v) for k, v in per_task.items()},
            weights,
        )
        return objective, total

    return gradient


@register_attack(
    "wgd",
    norms=NORMS + COMPAT_NORMS,
    summary="the paper's weighted gradient attack: each task on its own scale, lagging tasks "
    "pushed (readings: gamma, select, balance)",
    step_rule="eps/4",
    options={"gamma": finite, "select": choice(*SELECTS), "balance": choice(*BALANCES)},
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
    gamma: float = DEFAULT_GAMMA,
    select: str = "all",
    balance: str = DEFAULT_BALANCE,
) -> Tensor:
    """WGD against ``tasks``: PGD steps on each task's relative loss (see the module doc).

    Args are those of :func:`attacks.pgd.pgd`, plus:
        gamma: exponent of the relative attack rate, any finite sign: ``ρ_i ∝ r_i^(-γ)``;
            0 = no attack-rate weighting (with ``balance="loss"`` the published
            ``RELATIVE_WEIGHT``), -1 = weights ``∝ r_i`` (the paper's words).
        select: ``"all"`` tasks at every step, or ``"cyclic"``: task ``t mod M`` at step ``t``
            (the published ``CYCLIC_STEP``; ``gamma`` and ``balance`` then change nothing).
        balance: ``"gradient"`` (default): every task's input gradient normalised per sample
            before they are combined (M backward passes per step), or ``"loss"``: each task's
            loss over its clean loss (one backward per step; with ``gamma=0`` the published
            ``RELATIVE_WEIGHT``).
    """
    setup = prepare(x, y, tasks, weights, losses, eps, norm, NORMS + COMPAT_NORMS)
    steps = check_steps(steps)
    alpha = check_step_size(step_size, default_step_size(setup.eps))
    gamma = finite("gamma", gamma)
    select = choice(*SELECTS)("select", select)
    balance = choice(*BALANCES)("balance", balance)
    x0 = x.detach()
    with attack_mode(model, x0), torch.no_grad():
        clean = per_task_losses(model, x0, y, setup.keys, losses)
    keys, w = setup.keys, setup.weights
    if select == "cyclic":
        gradient = cyclic_gradient(model, y, keys, losses, clean, w)
    elif balance == "gradient":
        gradient = balanced_gradient(model, y, keys, losses, clean, w, gamma, setup.norm)
    else:
        gradient = plain_gradient(model, y, keys, losses, wgd_objective(clean, w, gamma))

    return iterate(
        model,
        x,
        gradient,
        eps=setup.eps,
        steps=steps,
        step_size=alpha,
        norm=setup.norm,
        random_start=random_start,
        generator=generator,
        name="wgd",
    )
