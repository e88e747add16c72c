"""Loss weighting schemes, separate from the architecture.

A weighting turns the batch-mean task losses ``{task: L_i}`` into the one scalar the model is
trained on, and reports its current per-task weights ``w_i`` (the multiplier of ``L_i``):

=============== ==========================================================================
``uniform``     ``w_i = 1/M`` (the paper's baseline, settings S1–S3, S5–S8).
``manual``      weights given per task; 0 drops a task (its decoder gets no gradient).
``optimal``     the paper's "optimal" weights (supplement App. B, setting S4): the main task
                1, each auxiliary by the table in :data:`OPTIMAL_AUX_WEIGHTS`.
``mtrobust``    MTRobust / the published job scripts: main task(s) ``1/|main|``, each of the
                ``A`` auxiliaries ``lam / A`` (``--mt_lambda``; the jobs use 0.1).
``gradnorm``    GradNorm (Chen et al. 2018), learned: ``w`` moves so that every task's
                weighted gradient norm at the last shared layer approaches the mean norm times
                ``r_i^alpha`` (``r_i`` = the task's relative inverse training rate).
``uncertainty`` homoscedastic uncertainty (Kendall et al. 2018), learned:
                ``Σ_i L_i / (2 σ_i²) + log σ_i``, reported weight ``1 / (2 σ_i²)``.
=============== ==========================================================================

Static weights go through :func:`tasks.losses.weighted_sum` (the attacks use the same sum).
Learned schemes own a small Adam optimizer for their parameters (``lr``), independent of the
model's schedule; its state is part of the module's ``state_dict`` so training can resume.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from rts.tasks.losses import weighted_sum
from rts.tasks.registry import canonical_tasks, parse_tasks

__all__ = [
    "OPTIMAL_AUX_WEIGHTS",
    "WEIGHTINGS",
    "GradNormWeighting",
    "LossWeighting",
    "StaticWeighting",
    "UncertaintyWeighting",
    "WeightingSpec",
    "make_weighting",
    "static_weights",
]

OPTIMAL_AUX_WEIGHTS: dict[str, tuple[float, dict[str, float]]] = {
    "s": (0.1, {"d": 0.01}),
    "d": (0.1, {"n": 0.01}),
    "n": (0.1, {"d": 0.01}),
    "D": (0.01, {"s": 0.1}),
    "E": (0.1, {}),
}
"""Supplement App. B: auxiliary ``a`` → (its weight, {main task: weight for that pair}).

"Semantic segmentation (s): 0.01 for sd combination, 0.1 otherwise" reads as: ``s`` as an
auxiliary of main task ``d`` gets 0.01, of any other main task 0.1. The main task gets 1.
"""


@dataclass(frozen=True)
class WeightingSpec:
    """A loss weighting as primitives (goes into configs and checkpoints via ``asdict``).

    Attributes:
        scheme: one of :data:`WEIGHTINGS`.
        main: the main task(s) for ``optimal`` (one key) and ``mtrobust`` (one or more).
        weights: per-task weights for ``manual``.
        lam: MTRobust's auxiliary lambda (total weight of the auxiliaries).
        alpha: GradNorm's asymmetry (1.5 in Chen et al.'s NYUv2 runs).
        lr: Adam learning rate of the learned schemes' own parameters.
    """

    scheme: str = "uniform"
    main: str | None = None
    weights: dict[str, float] | None = field(default=None)
    lam: float = 0.1
    alpha: float = 1.5
    lr: float = 0.025


class LossWeighting(nn.Module):
    """Base class: ``forward(losses) -> total``; ``weights()``; ``step()`` after backward.

    Attributes:
        tasks: the weighted tasks, registry order.
        spec: the :class:`WeightingSpec` it was built from.
        learned: whether it has parameters of its own (then call :meth:`step`).
    """

    learned = False

    def __init__(self, tasks: str, spec: WeightingSpec) -> None:
        super().__init__()
        self.tasks = canonical_tasks(tasks)
        self.spec = spec

    @property
    def active_tasks(self) -> str:
        """Tasks with a non-zero weight: the only ones the model must decode while training."""
        return self.tasks

    def weights(self) -> dict[str, float]:
        """Current weight ``w_i`` of every task (the multiplier of its loss)."""
        raise NotImplementedError

    def forward(
        self, losses: Mapping[str, Tensor], shared: Sequence[Tensor] = ()
    ) -> Tensor:  # pragma: no cover - abstract
        """The total loss from the batch-mean losses ``{task: scalar}``.

        Args:
            losses: scalar loss per task (the active tasks at least).
            shared: the last shared layer's parameters (GradNorm measures gradient norms there).
        """
        raise NotImplementedError

    def step(self) -> None:
        """Update the weighting's own parameters after ``total.backward()`` (no-op if static)."""


class StaticWeighting(LossWeighting):
    """Fixed weights: ``total = Σ_i w_i L_i`` via :func:`tasks.losses.weighted_sum`."""

    def __init__(self, weights: Mapping[str, float], spec: WeightingSpec) -> None:
        super().__init__("".join(weights), spec)
        self._weights = {k: float(weights[k]) for k in self.tasks}

    @property
    def active_tasks(self) -> str:
        return "".join(k for k in self.tasks if self._weights[k] != 0.0)

    def weights(self) -> dict[str, float]:
        return dict(self._weights)

    def forward(self, losses: Mapping[str, Tensor], shared: Sequence[Tensor] = ()) -> Tensor:
        return weighted_sum({k: losses[k] for k in self.active_tasks}, self._weights)


class _LearnedWeighting(LossWeighting):
    """A weighting with parameters and its own Adam optimizer (saved in ``state_dict``)."""

    learned = True

    def _make_optimizer(self) -> None:
        if not self.spec.lr > 0:
            raise ValueError(f"weighting lr must be > 0, got lr={self.spec.lr}")
        self.optimizer = torch.optim.Adam(self.parameters(), lr=self.spec.lr)

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> nn.Module:
        # Moving the module (.to(device)) replaces nothing: parameters are updated in place,
        # so the optimizer keeps pointing at them; only its state tensors need moving.
        result = super()._apply(fn, recurse)
        for state in self.optimizer.state.values():
            for key, value in state.items():
                if isinstance(value, Tensor) and value.dim() > 0:
                    state[key] = fn(value)
        return result

    def get_extra_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

    def step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


class GradNormWeighting(_LearnedWeighting):
    """GradNorm (Chen et al., ICML 2018), the paper's reference for learned weights.

    Each training step, with ``G_i = w_i · ||∇_W L_i||`` at the last shared layer ``W``,
    ``L̃_i = L_i(t) / L_i(0)`` and ``r_i = L̃_i / mean_j L̃_j``, the weights follow the gradient
    of ``Σ_i |G_i − mean_j(G_j) · r_i^alpha|`` (the target held constant), then are
    renormalised to sum to 1 (Chen et al. normalise to ``M``; only the scale differs, and 1 keeps
    the total comparable to ``uniform``). A task whose weighted gradient is smaller than the
    others', or that trains more slowly, gains weight. The model itself sees
    ``Σ_i w_i L_i`` with ``w`` held constant. ``L_i(0)`` is the first training batch's loss.
    """

    def __init__(self, tasks: str, spec: WeightingSpec) -> None:
        super().__init__(tasks, spec)
        if not spec.alpha >= 0:
            raise ValueError(f"gradnorm alpha must be >= 0, got alpha={spec.alpha}")
        m = len(self.tasks)
        self.w = nn.Parameter(torch.full((m,), 1.0 / m))
        self.register_buffer("initial_losses", torch.full((m,), math.nan))
        self._make_optimizer()

    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.w.detach().cpu().tolist(), strict=True))

    def forward(self, losses: Mapping[str, Tensor], shared: Sequence[Tensor] = ()) -> Tensor:
        stacked = torch.stack([losses[k] for k in self.tasks])
        if self.training and torch.is_grad_enabled() and stacked.requires_grad:
            if not shared:
                raise ValueError("gradnorm needs the shared layer's parameters (shared=...)")
            self._set_weight_grad(stacked, list(shared))
        return (self.w.detach().to(stacked.dtype) * stacked).sum()

    def _set_weight_grad(self, stacked: Tensor, shared: list[Tensor]) -> None:
        if torch.isnan(self.initial_losses).any():
            self.initial_losses.copy_(stacked.detach().float())
        norms = []
        for loss in stacked:
            grads = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
            sq = [g.float().square().sum() for g in grads if g is not None]
            norms.append(torch.stack(sq).sum().sqrt() if sq else stacked.new_zeros(()).float())
        g = torch.stack(norms).detach()
        ratio = stacked.detach().float() / self.initial_losses.clamp_min(1e-12)
        r = ratio / ratio.mean().clamp_min(1e-12)
        with torch.enable_grad():
            weighted = self.w * g
            target = (weighted.mean() * r.pow(self.spec.alpha)).detach()
            gradnorm_loss = (weighted - target).abs().sum()
            (grad,) = torch.autograd.grad(gradnorm_loss, self.w)
        self.w.grad = grad

    def step(self) -> None:
        if self.w.grad is None:
            return
        super().step()
        with torch.no_grad():
            self.w.clamp_(min=1e-6)
            self.w.div_(self.w.sum())


class UncertaintyWeighting(_LearnedWeighting):
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

    Learns ``s_i = log σ_i²`` (init 0) and trains on ``Σ_i ½·exp(−s_i)·L_i + ½·s_i``, the
    regression form for every task (as LibMTL does). Its optimum is ``σ_i² = L_i``, so a task
    with a large loss gets a small weight ``w_i = ½·exp(−s_i)``.
    """

    def __init__(self, tasks: str, spec: WeightingSpec) -> None:
        super().__init__(tasks, spec)
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))
        self._make_optimizer()

    def weights(self) -> dict[str, float]:
        w = 0.5 * torch.exp(-self.log_vars.detach()).cpu()
        return dict(zip(self.tasks, w.tolist(), strict=True))

    def forward(self, losses: Mapping[str, Tensor], shared: Sequence[Tensor] = ()) -> Tensor:
        stacked = torch.stack([losses[k] for k in self.tasks])
        s = self.log_vars.to(stacked.dtype)
        return (0.5 * torch.exp(-s) * stacked + 0.5 * s).sum()


def static_weights(
    scheme: str,
    tasks: str,
    *,
    main: str | None = None,
    weights: Mapping[str, float] | None = None,
    lam: float = 0.1,
) -> dict[str, float]:
    """The per-task weights of a static scheme (``uniform``, ``manual``, ``optimal``, ``mtrobust``).

    Raises ``ValueError`` naming the bad value when the scheme's inputs are missing or invalid.
    """
    keys = canonical_tasks(tasks)
    if scheme == "uniform":
        return {k: 1.0 / len(keys) for k in keys}
    if scheme == "manual":
        return _manual_weights(keys, weights)
    main_keys = _main_tasks(keys, main, scheme)
    aux = [k for k in keys if k not in main_keys]
    if scheme == "optimal":
        if len(main_keys) != 1:
            raise ValueError(f"optimal weights need exactly one main task, got main={main!r}")
        (m,) = main_keys
        out = {m: 1.0}
        for a in aux:
            if a not in OPTIMAL_AUX_WEIGHTS:
                raise ValueError(
                    f"the paper's optimal weights cover auxiliaries "
                    f"{', '.join(OPTIMAL_AUX_WEIGHTS)} (supplement App. B), got {a!r}; "
                    "use manual weights"
                )
            default, per_main = OPTIMAL_AUX_WEIGHTS[a]
            out[a] = per_main.get(m, default)
        return {k: out[k] for k in keys}
    if scheme == "mtrobust":
        if not (math.isfinite(lam) and lam >= 0):
            raise ValueError(f"mtrobust lam must be a finite number >= 0, got lam={lam}")
        return {k: 1.0 / len(main_keys) if k in main_keys else lam / len(aux) for k in keys}
    raise ValueError(
        f"unknown static weighting {scheme!r}; choose from uniform, manual, optimal, mtrobust"
    )


def _main_tasks(keys: str, main: str | None, scheme: str) -> str:
    if not main:
        raise ValueError(f"weighting {scheme!r} needs the main task (main=...); tasks are {keys!r}")
    main_keys = parse_tasks(main)
    outside = [k for k in main_keys if k not in keys]
    if outside:
        raise ValueError(f"main task {''.join(outside)!r} is not among the tasks {keys!r}")
    return main_keys


def _manual_weights(keys: str, weights: Mapping[str, float] | None) -> dict[str, float]:
    if not weights:
        raise ValueError(f"manual weighting needs weights for every task in {keys!r}")
    unknown = [k for k in weights if k not in keys]
    if unknown:
        raise ValueError(f"weights given for task(s) {unknown!r} not in {keys!r}")
    missing = [k for k in keys if k not in weights]
    if missing:
        raise ValueError(
            f"manual weights missing for task(s) {''.join(missing)!r}; give 0 to drop a task"
        )
    out = {}
    for k in keys:
        w = weights[k]
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"weight of task {k!r} must be a finite number >= 0, got {w!r}")
        out[k] = float(w)
    if not any(out.values()):
        raise ValueError(f"all manual weights are 0 ({out}); at least one task must be trained")
    return out


WEIGHTINGS: dict[str, Callable[[str, WeightingSpec], LossWeighting]] = {
    **{
        name: (
            lambda tasks, spec, name=name: StaticWeighting(
                static_weights(name, tasks, main=spec.main, weights=spec.weights, lam=spec.lam),
                spec,
            )
        )
        for name in ("uniform", "manual", "optimal", "mtrobust")
    },
    "gradnorm": GradNormWeighting,
    "uncertainty": UncertaintyWeighting,
}
"""Scheme name → ``factory(tasks, spec)``."""


def make_weighting(spec: WeightingSpec | str, tasks: str) -> LossWeighting:
    """Build the weighting ``spec`` (or a scheme name with defaults) for ``tasks``."""
    if isinstance(spec, str):
        spec = WeightingSpec(scheme=spec)
    if spec.scheme not in WEIGHTINGS:
        raise ValueError(
            f"unknown weighting {spec.scheme!r}; choose from {', '.join(sorted(WEIGHTINGS))}"
        )
    return WEIGHTINGS[spec.scheme](canonical_tasks(tasks), spec)
