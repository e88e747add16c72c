"""Vulnerability metrics of Ghamizi et al. 2022 and the first-order quantities of its theorems.

* :func:`relative_vulnerability`: ``v_i = E_k[(f_i(x_k + δ) - f_i(x_k)) / f_i(x_k)]`` per example,
  clean input as reference (``f_i``: ``1 - mIoU`` for ``s``, per-pixel MSE otherwise).
* :func:`adversarial_vulnerability`: ``E_x[|L_T'(x + δ) - L_T'(x)|]`` (Definition 1) with
  ``L_T' = Σ_i w_i L_i`` the joint loss (uniform ``1/M`` by default).
* :func:`marginal_vulnerability`: ``Δ_N = AV(T_{N+1}) - AV(T_N)`` (Definition 3).
* From per-task input gradients ``r_i = ∂_x L_i`` (:func:`input_gradients`):
  Lemma 2's ``ε · E_x‖Σ_i w_i r_i‖_q`` (:func:`first_order_vulnerability`), Theorem 2's
  covariance-ratio prediction (:func:`theorem2_prediction`), Lemma 5's first-order marginal
  vulnerability and Theorem 4's bound (:func:`first_order_marginal`, :func:`theorem4_bound`).
  ``q`` is the dual norm of the attack norm (L-inf → L1, L2 → L2).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from rts.attacks.objective import attack_mode, forward, resolve_tasks, resolve_weights
from rts.attacks.projection import dual_norm, lp_norm
from rts.tasks.losses import PerSampleLoss, default_error, task_losses, weighted_sum

Reduction = Literal["mean", "none"]


def relative_vulnerability(
    clean_error: Tensor,
    adv_error: Tensor,
    *,
    reduction: Literal["mean", "none", "ratio-of-means"] = "mean",
) -> Tensor | float:
    """Relative task vulnerability ``v_i`` from per-example errors ``[N]``.

    Guard: an example whose clean error is 0 (a perfect prediction, or no valid pixel) has no
    relative increase; its ratio is NaN and it is left out of the mean (count them with
    :func:`undefined_count`). ``"ratio-of-means"`` is the published code's variant,
    ``(mean f_adv - mean f_clean) / mean f_clean`` over all examples.

    Returns:
        ``"mean"``: a float (NaN when no example is defined); ``"none"``: the per-example ratios.
    """
    clean = clean_error.detach().double()
    adv = adv_error.detach().double()
    if clean.shape != adv.shape:
        raise ValueError(
            f"clean and adversarial errors differ in shape: {clean.shape} vs {adv.shape}"
        )
    if reduction == "ratio-of-means":
        base = float(clean.mean()) if clean.numel() else math.nan
        return (float(adv.mean()) - base) / base if base > 0 else math.nan
    defined = clean > 0
    ratio = torch.where(defined, (adv - clean) / clean.where(defined, 1.0), math.nan)
    if reduction == "none":
        return ratio
    if reduction == "mean":
        return float(ratio[defined].mean()) if defined.any() else math.nan
    raise ValueError(f"unknown reduction {reduction!r}; choose from mean, none, ratio-of-means")


def undefined_count(clean_error: Tensor) -> int:
    """How many examples :func:`relative_vulnerability` leaves out (clean error 0)."""
    return int((clean_error <= 0).sum())


def joint_loss(
    per_task: Mapping[str, Tensor], weights: Mapping[str, float] | None = None
) -> Tensor:
    """``L_T' = Σ_i w_i L_i`` per example (uniform ``1/M`` when ``weights`` is None)."""
    return weighted_sum(per_task, weights)


def adversarial_vulnerability(
    clean_losses: Mapping[str, Tensor],
    adv_losses: Mapping[str, Tensor],
    weights: Mapping[str, float] | None = None,
    *,
    reduction: Reduction = "mean",
) -> Tensor | float:
    """``E_x[|L_T'(x + δ) - L_T'(x)|]`` over the tasks of the two dicts (Definition 1).

    Pass the attacked tasks' losses for the paper's definition, or every model task's for the
    published code's variant (``|Σ_i ΔL_i|`` / n_tasks over all tasks: uniform weights).
    """
    if set(clean_losses) != set(adv_losses):
        raise ValueError(
            f"clean and adversarial losses cover different tasks: "
            f"{', '.join(clean_losses)} vs {', '.join(adv_losses)}"
        )
    delta = (joint_loss(adv_losses, weights) - joint_loss(clean_losses, weights)).abs()
    if reduction == "none":
        return delta.detach()
    if reduction == "mean":
        return float(delta.double().mean())
    raise ValueError(f"unknown reduction {reduction!r}; choose from mean, none")


def marginal_vulnerability(
    task_sets: Sequence[str], vulnerabilities: Sequence[float]
) -> list[float]:
    """``Δ_N = AV(T_{N+1}) - AV(T_N)`` for a chain of task sets, each adding one task.

    Args:
        task_sets: e.g. ``["s", "sd", "sdn"]``; each must be the previous plus exactly one task.
        vulnerabilities: the adversarial vulnerability measured on each set.

    Returns:
        ``len(task_sets) - 1`` differences.
    """
    if len(task_sets) != len(vulnerabilities):
        raise ValueError(
            f"got {len(task_sets)} task sets but {len(vulnerabilities)} vulnerabilities"
        )
    check_chain(task_sets)
    return [float(b) - float(a) for a, b in itertools.pairwise(vulnerabilities)]


def check_chain(task_sets: Sequence[str | Sequence[str]]) -> list[str]:
    """The added task of each step of a chain (Definition 3): each set must be the previous one
    plus exactly one task; at least two sets."""
    if len(task_sets) < 2:
        raise ValueError(
            f"a chain needs at least two task sets, each adding one task, got {list(task_sets)}"
        )
    sets = [resolve_tasks(t) for t in task_sets]
    added = []
    for prev, cur in itertools.pairwise(sets):
        new = set(cur) - set(prev)
        if not (set(prev) < set(cur) and len(new) == 1):
            raise ValueError(
                f"task set {''.join(cur)!r} must add exactly one task to the previous set "
                f"{''.join(prev)!r}"
            )
        added.append(new.pop())
    return added


def image_bootstrap(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval over images (:func:`scipy.stats.bootstrap`).

    ``statistic(index)`` computes the number from the images at ``index`` (resamples of
    ``range(n)``, shape ``[B, n]``; it returns ``[B]``), so several per-image arrays measured on
    the same images resample together (paired). NaN bounds when ``n < 2``.
    """
    if n < 2:
        return math.nan, math.nan
    from scipy.stats import bootstrap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap(
            (np.arange(n),),
            lambda idx, axis=-1: statistic(np.moveaxis(idx, axis, -1)),
            vectorized=True,
            batch=200,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def mean_interval(values: Tensor | np.ndarray, **kw: float) -> tuple[float, float, float]:
    """``(mean, low, high)`` of per-image ``values`` with :func:`image_bootstrap`'s interval."""
    v = np.asarray(values.detach().cpu().double() if isinstance(values, Tensor) else values, float)
    lo, hi = image_bootstrap(lambda idx: v[idx].mean(-1), len(v), **kw)
    return float(v.mean()) if len(v) else math.nan, lo, hi


def input_gradients(
    model: nn.Module,
    x: Tensor,
    y: Mapping[str, Tensor],
    tasks: str | Sequence[str],
    losses: Mapping[str, PerSampleLoss] | None = None,
) -> dict[str, Tensor]:
    """Per-task, per-example input gradients ``r_i = ∂_x L_i(x, y_i)`` (``{task: [N, ...]}``).

    One forward and one backward per task, in eval mode; each example's gradient is that of its
    own loss (the per-example losses are summed, and examples do not interact in eval mode).
    """
    keys = resolve_tasks(tasks, losses)
    x0 = x.detach()
    with attack_mode(model, x0):
        xg = x0.clone().requires_grad_(True)
        per_task = task_losses(forward(model, xg, keys), y, list(keys), losses)
        out = {}
        for i, k in enumerate(keys):
            total = per_task[k].sum()
            if total.requires_grad:
                (g,) = torch.autograd.grad(
                    total, xg, retain_graph=i < len(keys) - 1, allow_unused=True
                )
            else:
                g = None
            out[k] = (torch.zeros_like(x0) if g is None else g).detach()
    return out


def _uniform(keys: Sequence[str], weights: Mapping[str, float] | None) -> dict[str, float]:
    return resolve_weights(list(keys), weights)


def joint_gradient(
    grads: Mapping[str, Tensor], weights: Mapping[str, float] | None = None
) -> Tensor:
    """``∂_x L' = Σ_i w_i r_i`` per example (uniform ``1/M`` by default)."""
    w = _uniform(list(grads), weights)
    return sum(w[k] * g for k, g in grads.items() if w[k] > 0)


def first_order_vulnerability(
    grads: Mapping[str, Tensor],
    weights: Mapping[str, float] | None = None,
    *,
    eps: float,
    norm: str,
    reduction: Reduction = "mean",
) -> Tensor | float:
    """Lemma 2: ``ε · E_x‖∂_x L'(x)‖_q`` with ``q`` the dual of the attack norm.

    Exact for a model that is linear in ``x`` (as long as the ``[0, 1]`` clamp is inactive); a
    first-order prediction of :func:`adversarial_vulnerability` otherwise.
    """
    per_example = eps * lp_norm(joint_gradient(grads, weights), dual_norm(norm))
    if reduction == "none":
        return per_example
    return float(per_example.double().mean())


def gradient_covariance(grads: Mapping[str, Tensor], *, centered: bool = False) -> Tensor:
    """``C_ij = E_x[⟨r_i, r_j⟩]`` over examples (``[M, M]``, task order of ``grads``).

    The paper's ``Cov(r_i, r_j)`` under its zero-mean assumption; ``centered=True`` subtracts the
    mean gradient over the examples first.
    """
    flat = torch.stack([g.flatten(1).double() for g in grads.values()])  # [M, N, D]
    if centered:
        flat = flat - flat.mean(dim=1, keepdim=True)
    return torch.einsum("ind,jnd->ij", flat, flat) / flat.shape[1]


def theorem2_prediction(
    grads: Mapping[str, Tensor], *, eps: float, centered: bool = False
) -> dict[str, float]:
    """Theorem 2 (Mao et al. 2020) for an L2 attack on the uniformly weighted tasks of ``grads``.

    ``factor = sqrt((1 + (2/M) Σ_i Σ_{j<i} C_ij / C_ii) / M)`` with ``C`` from
    :func:`gradient_covariance`. The theorem's constant is ``K = ε · σ`` with
    ``σ² = mean_i C_ii`` (its proof assumes equal ``σ_i``), so ``prediction = K · factor``; it
    equals the root mean square of ``ε‖∂_x L'‖₂`` when all ``C_ii`` are equal.

    Returns:
        ``{"factor", "K", "prediction"}`` (NaN factor when the bracket is negative).
    """
    c = gradient_covariance(grads, centered=centered)
    m = c.shape[0]
    diag = c.diagonal()
    cross = 0.0
    for i in range(m):
        for j in range(i):
            cross += float(c[i, j] / diag[i]) if diag[i] > 0 else 0.0
    bracket = (1 + 2 / m * cross) / m
    if bracket < 0:
        warnings.warn("Theorem 2's bracket is negative: no prediction", RuntimeWarning, 2)
    factor = math.sqrt(bracket) if bracket >= 0 else math.nan
    k = eps * math.sqrt(float(diag.mean()))
    return {"factor": factor, "K": k, "prediction": k * factor}


def _mean_norms(grads: Mapping[str, Tensor], norm: str) -> dict[str, float]:
    q = dual_norm(norm)
    return {k: float(lp_norm(g, q).double().mean()) for k, g in grads.items()}


def theorem4_bound(
    grads: Mapping[str, Tensor],
    *,
    eps: float,
    norm: str,
    weights_n: Mapping[str, float] | None = None,
    weights_n1: Mapping[str, float] | None = None,
) -> float:
    """Theorem 4's bound on the first-order marginal vulnerability of adding the *last* task.

    ``ε · ((N+1) · w_{N+1} · E‖r_{N+1}‖_q + N · max_{i<=N} w_i · E‖r_i‖_q)`` where ``grads`` holds
    ``T_{N+1}`` in order (the new task last), ``w_i`` are ``T_N``'s weights (default ``1/N``) and
    ``w_{N+1}`` is ``T_{N+1}``'s weight of the new task (default ``1/(N+1)``). With uniform
    weights it is ``ε · (E‖r_{N+1}‖_q + max_{i<=N} E‖r_i‖_q)``.
    """
    keys = list(grads)
    if len(keys) < 2:
        raise ValueError(f"Theorem 4 needs at least two tasks (T_N plus the new one), got {keys}")
    old, new = keys[:-1], keys[-1]
    w_n = _uniform(old, weights_n)
    w_n1 = _uniform(keys, weights_n1)
    norms = _mean_norms(grads, norm)
    n = len(old)
    return eps * ((n + 1) * w_n1[new] * norms[new] + n * max(w_n[k] * norms[k] for k in old))


def first_order_marginal(
    grads: Mapping[str, Tensor],
    *,
    eps: float,
    norm: str,
    weights_n: Mapping[str, float] | None = None,
    weights_n1: Mapping[str, float] | None = None,
) -> float:
    """Lemma 5: ``ε · (E‖∂_x L'(T_{N+1})‖_q - E‖∂_x L'(T_N)‖_q)``, new task last in ``grads``."""
    keys = list(grads)
    if len(keys) < 2:
        raise ValueError(f"a marginal needs at least two tasks, got {keys}")
    old = {k: grads[k] for k in keys[:-1]}
    return first_order_vulnerability(grads, weights_n1, eps=eps, norm=norm) - (
        first_order_vulnerability(old, weights_n, eps=eps, norm=norm)
    )


def task_error_values(
    pred: Mapping[str, Tensor],
    y: Mapping[str, Tensor],
    keys: Sequence[str],
    errors: Mapping[str, PerSampleLoss] | None = None,
) -> dict[str, Tensor]:
    """Per-example errors ``f_i`` (registry's, or ``errors`` overrides for custom keys)."""
    out = {}
    for k in keys:
        fn = errors[k] if errors is not None and k in errors else default_error(k)
        out[k] = fn(pred[k], y[k]).detach()
    return out


def error_table(
    model: nn.Module,
    x: Tensor,
    x_adv: Tensor,
    y: Mapping[str, Tensor],
    tasks: str | Sequence[str],
    *,
    losses: Mapping[str, PerSampleLoss] | None = None,
    errors: Mapping[str, PerSampleLoss] | None = None,
):
    """Clean and adversarial per-task errors and losses of one batch as a DataFrame.

    Columns: ``task, n, clean_loss, adv_loss, clean_error, adv_error, relative_vulnerability,
    n_undefined`` (one row per task; means over the examples).
    """
    import pandas as pd

    keys = resolve_tasks(tasks, losses if losses is not None else errors)
    rows = []
    with attack_mode(model, x), torch.no_grad():
        pred_c = forward(model, x, keys)
        pred_a = forward(model, x_adv, keys)
        loss_c = task_losses(pred_c, y, list(keys), losses)
        loss_a = task_losses(pred_a, y, list(keys), losses)
        err_c = task_error_values(pred_c, y, keys, errors)
        err_a = task_error_values(pred_a, y, keys, errors)
    for k in keys:
        rows.append(
            {
                "task": k,
                "n": int(x.shape[0]),
                "clean_loss": float(loss_c[k].double().mean()),
                "adv_loss": float(loss_a[k].double().mean()),
                "clean_error": float(err_c[k].double().mean()),
                "adv_error": float(err_a[k].double().mean()),
                "relative_vulnerability": relative_vulnerability(err_c[k], err_a[k]),
                "n_undefined": undefined_count(err_c[k]),
            }
        )
    return pd.DataFrame(rows)
