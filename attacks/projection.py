"""Norm balls in pixel space: per-sample norms, projection, ascent directions and random starts.

Every attack in :mod:`attacks` keeps ``x_adv`` inside the ``eps``-ball of its own clean image
(one ball per sample, never one for the whole batch) and inside the image domain ``[0, 1]``.
The single exception is the compat norm ``"l2-batch"``, which reproduces the published code's
whole-batch sphere (peers.md §1.2) and is never a default.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Norm = Literal["linf", "l2", "l2-batch"]
NORMS: tuple[str, ...] = ("linf", "l2")
"""The per-sample norms every attack supports."""

COMPAT_NORMS: tuple[str, ...] = ("l2-batch",)
"""Norms kept only to reproduce the published code (``pgd`` and ``wgd``)."""


def per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Reshape ``[N]`` values to broadcast against ``like`` (``[N, 1, 1, ...]``)."""
    return values.reshape((-1,) + (1,) * (like.dim() - 1))


def lp_norm(v: Tensor, norm: str) -> Tensor:
    """Per-sample norm ``[N]`` of ``v [N, ...]``: ``"linf"``, ``"l2"`` or ``"l1"``."""
    flat = v.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm in ("l2", "l2-batch"):
        return flat.norm(p=2, dim=1)
    if norm == "l1":
        return flat.abs().sum(dim=1)
    raise ValueError(f"unknown norm {norm!r}; choose from linf, l2, l1")


def dual_norm(norm: str) -> str:
    """The dual norm ``q`` of an attack norm ``p`` (``1/p + 1/q = 1``): linf → l1, l2 → l2."""
    if norm == "linf":
        return "l1"
    if norm in ("l2", "l2-batch"):
        return "l2"
    raise ValueError(f"unknown norm {norm!r}; choose from linf, l2")


def project(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    """Project ``x_adv`` onto the ``eps``-ball around ``x`` (per sample), then into ``[0, 1]``.

    L-inf clips each coordinate of ``δ = x_adv - x`` to ``[-eps, eps]``; L2 rescales ``δ`` by
    ``min(1, eps / ‖δ‖₂)`` (torchattacks' PGDL2). Clamping into ``[0, 1]`` afterwards only
    shrinks ``|δ|`` coordinate-wise (``x`` is in ``[0, 1]``), so the ball constraint still holds.
    ``"l2-batch"`` puts the whole batch's ``δ`` *on* the sphere of radius ``eps`` (published code).
    """
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    elif norm == "l2":
        n = lp_norm(delta, "l2")
        factor = torch.where(n > eps, eps / n.clamp_min(torch.finfo(n.dtype).tiny), 1.0)
        delta = delta * per_sample(factor.to(delta.dtype), delta)
    elif norm == "l2-batch":
        n = delta.norm(p=2)
        if n > 0:
            delta = delta * (eps / n)
    else:
        raise ValueError(f"unknown norm {norm!r}; choose from {', '.join(NORMS + COMPAT_NORMS)}")
    return (x + delta).clamp(0.0, 1.0)


def ascent_direction(grad: Tensor, norm: str) -> Tensor:
    """The steepest-ascent direction of unit ``norm`` for a gradient (per sample).

    L-inf: ``sign(g)``; L2: ``g / ‖g‖₂`` (0 where the gradient is 0).
    """
    if norm == "linf":
        return grad.sign()
    if norm == "l2":
        n = lp_norm(grad, "l2")
        return grad / per_sample(n.clamp_min(torch.finfo(grad.dtype).tiny), grad)
    raise ValueError(f"unknown norm {norm!r}; choose from {', '.join(NORMS)}")


def uniform_start(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """A random start inside the ball (Madry et al.; torchattacks PGD / PGDL2).

    L-inf (and the compat ``"l2-batch"``, as the published code does): ``x + U(-eps, eps)``.
    L2: a Gaussian direction scaled to radius ``U(0, 1)·eps`` per sample. Then clamp to
    ``[0, 1]``. Noise is drawn on the CPU from ``generator`` and moved to ``x``'s device.
    """
    if norm in ("linf", "l2-batch"):
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1
        delta = noise.to(x.device) * eps
    elif norm == "l2":
        direction = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        radius = torch.rand(x.shape[0], generator=generator, dtype=x.dtype)
        n = lp_norm(direction, "l2").clamp_min(torch.finfo(x.dtype).tiny)
        delta = (direction * per_sample(radius / n * eps, direction)).to(x.device)
    else:
        raise ValueError(f"unknown norm {norm!r}; choose from {', '.join(NORMS + COMPAT_NORMS)}")
    return (x + delta).clamp(0.0, 1.0)


def sphere_start(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """AutoAttack's APGD start: ``x + eps · t / ‖t‖`` per sample, then clamp to ``[0, 1]``.

    ``t = 2·U(0,1) - 1`` normalised by its L-inf norm (L-inf), or ``t ~ N(0, 1)`` normalised
    by its L2 norm (L2): a point on the ball's boundary.
    """
    if norm == "linf":
        t = torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1
    elif norm == "l2":
        t = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    else:
        raise ValueError(f"unknown norm {norm!r}; choose from {', '.join(NORMS)}")
    n = lp_norm(t, norm).clamp_min(torch.finfo(x.dtype).tiny)
    delta = (t * per_sample(eps / n, t)).to(x.device)
    return (x + delta).clamp(0.0, 1.0)
