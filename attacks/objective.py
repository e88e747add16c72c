"""The attacked objective and the argument checks every attack shares.

The objective of a batch is the **sum over samples** of the per-sample weighted multi-task loss
``Σ_i w_i · L_i(x_k)`` (per-task losses from :func:`tasks.losses.task_losses`, combined by
:func:`tasks.losses.weighted_sum`). Summing, not averaging, makes each sample's input gradient
independent of the batch it sits in, so attacking a batch equals attacking each sample alone.

Attacks run in eval mode under ``torch.enable_grad()`` in ``x.dtype`` with autocast off; every
module's previous train/eval flag is restored afterwards, even when the attack raises.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rts.attacks.options import positive
from rts.attacks.projection import COMPAT_NORMS, NORMS
from rts.tasks.losses import PerSampleLoss, task_losses, weighted_sum
from rts.tasks.registry import get_task

Weights = Mapping[str, float] | Sequence[float] | None
"""Per-task attack weights: a mapping task → weight, a sequence aligned with ``tasks``, or None
(uniform ``1/M``)."""

Combine = Callable[[Mapping[str, Tensor]], Tensor]
"""``{task: L_i [N]} -> objective [N]``: how an attack combines the per-task losses."""


def resolve_tasks(
    tasks: str | Sequence[str], losses: Mapping[str, PerSampleLoss] | None = None
) -> tuple[str, ...]:
    """The attacked task keys as a tuple, in the order given.

    A string is read as task letters (``"sd"``, ``"s,d"``) unless it is itself a key of
    ``losses`` (``"y"`` for a wrapped classifier). Registry keys are validated; a custom key
    needs a loss in ``losses``.
    """
    if isinstance(tasks, str):
        if losses is not None and tasks in losses:
            keys = [tasks]
        else:
            keys = [c for c in tasks if c not in ", "]
    else:
        keys = list(tasks)
    if not keys:
        raise ValueError(f"no task to attack in tasks={tasks!r}; name at least one task")
    for k in keys:
        if not isinstance(k, str):
            raise ValueError(f"task keys are strings, got {k!r}")
        if losses is None or k not in losses:
            get_task(k)
    if len(set(keys)) != len(keys):
        raise ValueError(f"a task appears twice in tasks={tasks!r}")
    return tuple(keys)


def resolve_weights(keys: Sequence[str], weights: Weights) -> dict[str, float]:
    """Explicit non-negative weights for ``keys``; None means uniform ``1/M``.

    A mapping may omit tasks (weight 0) but must not name tasks outside ``keys``. At least one
    weight must be positive: a weight of 0 means the task is not attacked at all.
    """
    if weights is None:
        return {k: 1.0 / len(keys) for k in keys}
    if isinstance(weights, Mapping):
        unknown = [k for k in weights if k not in keys]
        if unknown:
            raise ValueError(
                f"weights name task(s) {', '.join(map(repr, unknown))} that are not attacked; "
                f"attacked tasks are {', '.join(keys)}"
            )
        out = {k: float(weights.get(k, 0.0)) for k in keys}
    else:
        values = list(weights)
        if len(values) != len(keys):
            raise ValueError(
                f"got {len(values)} weights for {len(keys)} attacked tasks ({', '.join(keys)})"
            )
        out = {k: float(v) for k, v in zip(keys, values, strict=True)}
    for k, w in out.items():
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"weight of task {k!r} must be finite and >= 0, got {w}")
    if not any(w > 0 for w in out.values()):
        raise ValueError(f"all attack weights are 0 ({out}); at least one task must be attacked")
    return out


def check_eps(eps: float, norm: str) -> float:
    """``eps`` as a float: positive and finite, and at most 1 for L-inf (pixels are in [0, 1])."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"eps must be a number, got eps={eps!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"eps must be > 0, got eps={eps!r}")
    if norm == "linf" and value > 1:
        raise ValueError(f"eps must be in (0, 1] for linf attacks on [0, 1] images, got eps={eps}")
    return value


def check_norm(norm: str, allowed: Sequence[str] = NORMS) -> str:
    """Validate ``norm`` against the ones an attack supports."""
    if norm not in allowed:
        extra = (
            f" ('{COMPAT_NORMS[0]}' exists only in pgd and wgd)"
            if norm in COMPAT_NORMS and COMPAT_NORMS[0] not in allowed
            else ""
        )
        raise ValueError(f"unknown norm {norm!r}; choose from {', '.join(allowed)}{extra}")
    return norm


def check_steps(steps: int) -> int:
    """``steps`` as a positive int."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got steps={steps!r}")
    return steps


def check_step_size(step_size: float | None, default: float) -> float:
    """The step size: ``default`` when None, else a positive finite float."""
    if step_size is None:
        return default
    return positive("step_size", step_size)


def check_input(x: Tensor, y: Mapping[str, Tensor], keys: Sequence[str]) -> None:
    """``x`` a floating batch in [0, 1] and ``y`` holding a label for every attacked task."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ValueError("x must be a floating-point tensor [N, ...] of images in [0, 1]")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(
            f"x must be in [0, 1] (got min {float(x.min()):.4g}, max {float(x.max()):.4g}); "
            "normalisation belongs inside the model"
        )
    missing = [k for k in keys if k not in y]
    if missing:
        raise ValueError(
            f"no label for attacked task(s) {', '.join(missing)}; y has {', '.join(y) or 'none'}"
        )


@contextlib.contextmanager
def attack_mode(model: nn.Module, x: Tensor) -> Iterator[None]:
    """Eval mode, gradients on, autocast off; restore every module's train flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.enable_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            yield
    finally:
        for module, flag in flags:
            module.training = flag


def _accepts_tasks(model: nn.Module) -> bool:
    """Whether ``model.forward`` takes a ``tasks`` argument (evaluate only those heads)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return "tasks" in params


def forward(model: nn.Module, x: Tensor, keys: Sequence[str]) -> Mapping[str, Tensor]:
    """``model(x, tasks=keys)`` when the model can evaluate a subset of heads, else ``model(x)``."""
    if _accepts_tasks(model) and all(len(k) == 1 for k in keys):
        out = model(x, tasks="".join(keys))
    else:
        out = model(x)
    if not isinstance(out, Mapping):
        raise ValueError(
            f"the model must return a dict of task outputs, got {type(out).__name__}; "
            "wrap a classifier as {'y': logits}"
        )
    return out


def per_task_losses(
    model: nn.Module,
    x: Tensor,
    y: Mapping[str, Tensor],
    keys: Sequence[str],
    losses: Mapping[str, PerSampleLoss] | None = None,
) -> dict[str, Tensor]:
    """Per-sample losses ``{task: [N]}`` of ``model`` at ``x`` (in whatever grad mode is active)."""
    pred = forward(model, x, keys)
    return task_losses(pred, y, list(keys), losses)


def weighted(weights: Mapping[str, float]) -> Combine:
    """The plain weighted objective ``Σ_i w_i L_i`` (per sample); tasks with weight 0 skipped."""

    def combine(per_task: Mapping[str, Tensor]) -> Tensor:
        return weighted_sum(per_task, weights)

    return combine


def loss_and_grad(
    model: nn.Module,
    x_adv: Tensor,
    y: Mapping[str, Tensor],
    keys: Sequence[str],
    losses: Mapping[str, PerSampleLoss] | None,
    combine: Combine,
) -> tuple[Tensor, Tensor]:
    """One forward and one backward: the per-sample objective ``[N]`` and its input gradient.

    The gradient is of the objective summed over samples (per-sample gradients). Only the
    attacked heads are evaluated; one backward whatever the number of tasks. Non-finite
    gradient entries are zeroed so one bad sample cannot leave the image domain.
    """
    x_adv = x_adv.detach().requires_grad_(True)
    per_task = per_task_losses(model, x_adv, y, keys, losses)
    objective = combine(per_task)
    if objective.requires_grad:
        (grad,) = torch.autograd.grad(objective.sum(), x_adv, allow_unused=True)
    else:
        grad = None
    if grad is None:
        grad = torch.zeros_like(x_adv)
    # a sample whose loss is NaN/inf must not turn its x_adv into NaN (warned by the caller)
    grad = torch.nan_to_num(grad.detach(), nan=0.0, posinf=0.0, neginf=0.0)
    return objective.detach(), grad


def warn_if_degenerate(objective: Tensor, grad: Tensor, attack: str) -> None:
    """Warn (not raise) on NaN objectives or an all-zero input gradient: legal but suspicious."""
    if not torch.isfinite(objective).all():
        warnings.warn(
            f"{attack}: the attacked loss is not finite for some samples", RuntimeWarning, 2
        )
    elif grad.numel() and not grad.any():
        warnings.warn(
            f"{attack}: the input gradient is zero for the whole batch; the attack cannot move",
            RuntimeWarning,
            stacklevel=2,
        )


def attacked_keys(keys: Sequence[str], weights: Mapping[str, float]) -> tuple[str, ...]:
    """The tasks with a positive weight: only their heads are evaluated."""
    return tuple(k for k in keys if weights[k] > 0)


@dataclass(frozen=True)
class Setup:
    """The checked arguments of one attack call.

    Attributes:
        keys: the attacked tasks (positive weight), in the order given.
        weights: their weights (the zero-weight tasks are dropped).
        eps: the budget.
        norm: the norm.
    """

    keys: tuple[str, ...]
    weights: dict[str, float]
    eps: float
    norm: str


def prepare(
    x: Tensor,
    y: Mapping[str, Tensor],
    tasks: str | Sequence[str],
    weights: Weights,
    losses: Mapping[str, PerSampleLoss] | None,
    eps: float,
    norm: str,
    allowed_norms: Sequence[str] = NORMS,
) -> Setup:
    """Check an attack's common arguments once, before any forward pass."""
    norm = check_norm(norm, allowed_norms)
    eps = check_eps(eps, norm)
    keys = resolve_tasks(tasks, losses)
    w = resolve_weights(keys, weights)
    active = attacked_keys(keys, w)
    check_input(x, y, active)
    return Setup(active, {k: w[k] for k in active}, eps, norm)
