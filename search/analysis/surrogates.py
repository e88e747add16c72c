"""Surrogates: cheap numbers, read from a trial's records, that should predict its robustness.

A surrogate is one function from a finished trial's records (:class:`TrialRecord`: its row in
``trials``, its per-epoch ``history`` and its ``attacks`` rows) to a float, registered with
:func:`register_surrogate`. ``rts analyze`` correlates every registered surrogate with the target
(the fully trained, strongly attacked model's worst-case main-task relative vulnerability) and asks
whether ranking by it would have picked the best task combination.

Per-epoch surrogates (``per_epoch=True``) take ``(trial, epoch)`` and are expanded by
:func:`expand_surrogates` into one concrete surrogate per epoch the run recorded
(``vuln@1``, ``vuln@2``, ``grad_bound@0``, …), so "vulnerability after e epochs" is available at
any recorded epoch without registering one function per epoch.

The registered ones follow RQ4 of the paper (Table 3) plus the first-order bound of Lemma 2 /
Theorem 4, ``ε·E_x‖∂x L'(x)‖_q`` (q the dual norm of the attack norm), which needs no attack and,
at epoch 0, no training at all.

Adding a surrogate is one function::

    @register_surrogate("my_proxy", description="...", needs_attack=False)
    def my_proxy(trial: TrialRecord) -> float:
        return float(trial.row["clean_error"]) ** 2
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

SurrogateFn = Callable[..., float]
"""``(trial) -> float`` or, for per-epoch surrogates, ``(trial, epoch) -> float``; NaN = not
available for this trial."""


@dataclass(frozen=True)
class TrialRecord:
    """Everything recorded about one trial, as :mod:`rts.search.analysis` normalises it.

    Attributes:
        row: the trial's row of ``RunData.trials`` (``trial_id``, ``stage``, ``tasks``, ``main``,
            ``weights``, ``encoder``, ``epochs``, ``status``, ``wall_s``, ``clean_error``).
        history: its per-epoch rows (``epoch`` 0 = before training, then ``time_s``,
            ``clean_error``, ``vuln``, ``grad_bound``; any may be NaN), sorted by epoch.
        attacks: its attack rows (``attack``, ``attacked``, ``task``, ``rel_vuln``, …).
    """

    row: Mapping[str, Any]
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    attacks: pd.DataFrame = field(default_factory=pd.DataFrame)

    def at_epoch(self, column: str, epoch: int) -> float:
        """``history[column]`` at ``epoch``; NaN when that epoch or column was not recorded."""
        h = self.history
        if h.empty or column not in h.columns:
            return math.nan
        values = h[column].to_numpy(dtype=float)
        hit = (h["epoch"].to_numpy() == epoch) & ~np.isnan(values)
        return float(values[hit][-1]) if hit.any() else math.nan

    def last(self, column: str) -> tuple[float, int | None]:
        """The last recorded (non-NaN) value of ``history[column]`` and its epoch."""
        h = self.history
        if h.empty or column not in h.columns:
            return math.nan, None
        rows = h.dropna(subset=[column])
        if rows.empty:
            return math.nan, None
        last = rows.iloc[-1]
        return float(last[column]), int(last["epoch"])

    def epochs_with(self, column: str) -> list[int]:
        """Epochs at which ``history[column]`` holds a value."""
        h = self.history
        if h.empty or column not in h.columns:
            return []
        return sorted(int(e) for e in h.loc[h[column].notna(), "epoch"].unique())


@dataclass(frozen=True)
class SurrogateSpec:
    """A registered surrogate (family).

    Attributes:
        name: registry key; concrete per-epoch surrogates are named ``f"{name}@{epoch}"``.
        fn: ``(trial) -> float`` or ``(trial, epoch) -> float``.
        description: one line for tables and the report.
        per_epoch: whether ``fn`` takes an epoch and is expanded over recorded epochs.
        column: for per-epoch surrogates, the ``history`` column whose recorded epochs it is
            expanded over.
        needs_training: whether computing it trains the model (for the compute estimate).
        needs_attack: whether computing it runs an attack.
        direction: ``"lower"`` when a lower value predicts a more robust model (ranking picks the
            smallest), ``"higher"`` for the reverse.
    """

    name: str
    fn: SurrogateFn
    description: str
    per_epoch: bool = False
    column: str | None = None
    needs_training: bool = True
    needs_attack: bool = True
    direction: str = "lower"


@dataclass(frozen=True)
class Surrogate:
    """A concrete surrogate: a spec, and for per-epoch ones, the epoch it is read at.

    Attributes:
        name: display name (``"vuln@1"``, ``"clean_error"``).
        spec: the registered family.
        epoch: the epoch for per-epoch surrogates, else ``None`` (end of the trial).
    """

    name: str
    spec: SurrogateSpec
    epoch: int | None = None

    @property
    def description(self) -> str:
        """The family's description, with the epoch when there is one."""
        if self.epoch is None:
            return self.spec.description
        return f"{self.spec.description} at epoch {self.epoch}"

    def __call__(self, trial: TrialRecord) -> float:
        """The surrogate's value on ``trial`` (NaN when not available); never raises on gaps."""
        value = self.spec.fn(trial, self.epoch) if self.spec.per_epoch else self.spec.fn(trial)
        try:
            return float(value)
        except (TypeError, ValueError):
            return math.nan


SURROGATES: dict[str, SurrogateSpec] = {}


def register_surrogate(
    name: str,
    *,
    description: str,
    per_epoch: bool = False,
    column: str | None = None,
    needs_training: bool = True,
    needs_attack: bool = True,
    direction: str = "lower",
) -> Callable[[SurrogateFn], SurrogateFn]:
    """Decorator adding ``fn`` to :data:`SURROGATES` under ``name``; a duplicate name raises."""
    if direction not in ("lower", "higher"):
        raise ValueError(f"direction must be 'lower' or 'higher', got direction={direction!r}")
    if "@" in name:
        raise ValueError(f"surrogate names may not contain '@', got {name!r}")
    if per_epoch and not column:
        raise ValueError(f"per-epoch surrogate {name!r} needs the history column it reads")

    def decorator(fn: SurrogateFn) -> SurrogateFn:
        if name in SURROGATES:
            raise ValueError(f"surrogate {name!r} is already registered")
        SURROGATES[name] = SurrogateSpec(
            name, fn, description, per_epoch, column, needs_training, needs_attack, direction
        )
        return fn

    return decorator


def get_surrogate(name: str) -> Surrogate:
    """A concrete surrogate by name: ``"clean_error"`` or ``"vuln@3"`` for a per-epoch family."""
    family, _, epoch = name.partition("@")
    spec = SURROGATES.get(family)
    if spec is None:
        raise ValueError(f"unknown surrogate {name!r}; choose from {', '.join(sorted(SURROGATES))}")
    if spec.per_epoch:
        if not epoch.isdigit():
            raise ValueError(
                f"surrogate {family!r} is read at an epoch: write {family}@<epoch>, got {name!r}"
            )
        return Surrogate(name, spec, int(epoch))
    if epoch:
        raise ValueError(f"surrogate {family!r} has no epoch, got {name!r}")
    return Surrogate(name, spec)


def expand_surrogates(trials: list[TrialRecord], names: list[str] | None = None) -> list[Surrogate]:
    """The concrete surrogates for these trials, in registry order.

    Per-epoch families become one surrogate per epoch at which at least one trial recorded
    their ``column``; plain ones are always listed (they may still be NaN everywhere).
    ``names`` restricts the result to those families or concrete names.
    """
    out: list[Surrogate] = []
    for spec in SURROGATES.values():
        if spec.per_epoch:
            epochs = sorted({e for t in trials for e in t.epochs_with(spec.column or "")})
            out.extend(Surrogate(f"{spec.name}@{e}", spec, e) for e in epochs)
        else:
            out.append(Surrogate(spec.name, spec))
    if names is not None:
        for n in names:
            family = n.partition("@")[0]
            if family not in SURROGATES:
                get_surrogate(n)  # raises with the list of choices
        out = [s for s in out if s.name in names or s.spec.name in names]
    return out


# --------------------------------------------------------------------------------------------
# The registered surrogates (paper RQ4, Table 3; Lemma 2 / Theorem 4 for the gradient bound).


@register_surrogate(
    "vuln",
    description="main-task relative vulnerability to the stage-1 attack",
    per_epoch=True,
    column="vuln",
)
def early_vulnerability(trial: TrialRecord, epoch: int) -> float:
    """Early stopping (paper: 50 vs 150 epochs): the cheap attack's vulnerability at ``epoch``."""
    return trial.at_epoch("vuln", epoch)


@register_surrogate(
    "surrogate_vuln",
    description="main-task relative vulnerability of the surrogate-stage model (its last epoch)",
)
def surrogate_encoder_vulnerability(trial: TrialRecord) -> float:
    """Surrogate encoder (paper: ResNet18 for ResNet50): stage-1 vulnerability at its last epoch.

    Prefers the trial's attack rows for its main task (single-task attacks) when present; else
    the last ``vuln`` of its history.
    """
    a = trial.attacks
    main = trial.row.get("main")
    if not a.empty and main:
        rows = a[(a["task"] == main) & (a["attacked"] == main)]["rel_vuln"].dropna()
        if len(rows):
            return float(rows.max())
    return trial.last("vuln")[0]


@register_surrogate(
    "clean_error",
    description="main-task clean error of the surrogate-stage model (no attack)",
    needs_attack=False,
)
def clean_error(trial: TrialRecord) -> float:
    """Clean performance (paper: r = 0.98 with robustness): main-task error, no attack needed."""
    value = trial.last("clean_error")[0]
    if math.isnan(value):
        raw = trial.row.get("clean_error", math.nan)
        value = math.nan if raw is None else float(raw)
    return value


@register_surrogate(
    "grad_bound",
    description="first-order bound ε·E‖∂x L'‖_q of Lemma 2 (no attack)",
    per_epoch=True,
    column="grad_bound",
    needs_attack=False,
)
def first_order_bound(trial: TrialRecord, epoch: int) -> float:
    """``ε·E_x‖∂x L'(x)‖_q`` at ``epoch`` (0 = initialisation): one gradient, no attack."""
    return trial.at_epoch("grad_bound", epoch)


@register_surrogate(
    "grad_bound_all",
    description="first-order bound ε·E‖∂x L_train‖_q of the whole weighted training loss",
    per_epoch=True,
    column="grad_bound_all",
    needs_attack=False,
)
def joint_first_order_bound(trial: TrialRecord, epoch: int) -> float:
    """Theorem 4's joint gradient ``ε·E‖Σ_i w_i ∂x L_i‖_q`` over every task the model trains.

    At initialisation (epoch 0) the main-task bound is the same for every subset trained from the
    same seed (the auxiliary heads do not touch the main head), so only this one can rank subsets
    before any training.
    """
    return trial.at_epoch("grad_bound_all", epoch)
