"""A model of task effects: what each auxiliary task (and pair) adds to the main task's metric.

The paper's RQ2 asks what each added task contributes (marginal vulnerability); Standley et al.
predict groups from pairs. Both say the space of auxiliary subsets has structure: fitting the
stage-1 metric of the trials that ran on task indicators,

    metric(aux) ≈ b + Σ_{t ∈ aux} β_t  (+ Σ_{t<u ∈ aux} γ_tu, ``pairwise``),

predicts every subset of the space, tried or not, and estimates each task's effect with an
interval ("adding s changes d's vulnerability by +0.12 [0.07, 0.17]"). Ridge regression
(scikit-learn's ``RidgeCV``, the penalty chosen by leave-one-out) keeps it stable when there are
about as many trials as coefficients; the cross-validated error says how far to trust it, and
the intervals are percentile bootstraps over trials.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

Kind = Literal["hoa", "additive", "pairwise"]
ALPHAS = tuple(10.0**k for k in range(-4, 4))
"""Ridge penalties tried (leave-one-out chooses)."""


def features(subsets: Sequence[str], pool: str, kind: Kind) -> tuple[np.ndarray, list[str]]:
    """Indicator matrix of ``subsets`` (rows) over the pool's tasks (and pairs); column names."""
    names = list(pool)
    if kind == "pairwise":
        names += [a + b for a, b in itertools.combinations(pool, 2)]
    x = np.zeros((len(subsets), len(names)))
    for i, aux in enumerate(subsets):
        for j, name in enumerate(names):
            x[i, j] = all(t in aux for t in name)
    return x, names


@dataclass(frozen=True)
class EffectModel:
    """A fitted task-effect model (see the module docstring).

    Attributes:
        kind: ``additive`` or ``pairwise``.
        pool: the auxiliary tasks it knows.
        intercept: the predicted metric of the main task alone.
        coef: effect of each task (and pair, ``"sD"``) on the metric.
        low, high: their 95 % bootstrap intervals (NaN with too few trials).
        alpha: the ridge penalty chosen.
        cv_rmse: the cross-validated root-mean-square error of its predictions (k-fold).
        spread: the standard deviation of the metric over the trials (compare ``cv_rmse``).
        n: trials it was fitted on.
    """

    kind: Kind
    pool: str
    intercept: float
    coef: dict[str, float]
    low: dict[str, float] = field(default_factory=dict)
    high: dict[str, float] = field(default_factory=dict)
    alpha: float = 1.0
    cv_rmse: float = math.nan
    spread: float = math.nan
    n: int = 0

    def predict(self, subsets: Sequence[str]) -> np.ndarray:
        """Predicted metric of each auxiliary subset (``hoa``: the mean of its pairs' values,
        the main task alone for ``""``; NaN when none of its pairs was measured)."""
        if self.kind == "hoa":
            return np.array([_hoa_value(self, aux) for aux in subsets], dtype=float)
        x, names = features(subsets, self.pool, self.kind)
        return self.intercept + x @ np.array([self.coef[n] for n in names])

    def table(self) -> pd.DataFrame:
        """One row per effect: ``term``, ``effect``, ``low``, ``high``, largest first."""
        rows = [
            {
                "term": t,
                "effect": v,
                "low": self.low.get(t, math.nan),
                "high": self.high.get(t, math.nan),
            }
            for t, v in self.coef.items()
        ]
        frame = pd.DataFrame(rows)
        return frame.reindex(frame["effect"].abs().sort_values(ascending=False).index)


def _hoa_value(model: EffectModel, aux: str) -> float:
    if not aux:
        return model.intercept
    pairs = [model.coef[t] for t in aux if t in model.coef]
    return float(np.mean(pairs)) if pairs else math.nan


def fit_hoa(subsets: Sequence[str], values: Sequence[float], pool: str) -> EffectModel:
    """Standley et al.'s higher-order approximation (ICML 2020): the value of a set of
    auxiliary tasks is the mean of the values of the main task trained with each one alone.

    Fitted on the trials with at most one auxiliary task (the mean over repeats); a pair not
    measured is left out of every mean (``coef`` lacks it), a set without any measured pair
    predicts NaN. ``coef`` holds each task's pair value, ``intercept`` the main task alone.

    Raises:
        ValueError: no finite value of a pair.
    """
    aux = pd.Series(list(subsets), dtype=object)  # strings even when there are none
    frame = pd.DataFrame({"aux": aux, "value": np.asarray(values, dtype=float)})
    frame = frame[np.isfinite(frame["value"]) & (frame["aux"].str.len() <= 1)]
    means = frame.groupby("aux")["value"].mean()
    coef = {t: float(means[t]) for t in pool if t in means.index}
    if not coef:
        raise ValueError("the hoa model needs the main task trained with at least one pool task")
    single = float(means[""]) if "" in means.index else math.nan
    return EffectModel(
        kind="hoa",
        pool=pool,
        intercept=single,
        coef=coef,
        spread=float(np.std(frame["value"])) if len(frame) else math.nan,
        n=len(frame),
    )


def fit_effects(
    subsets: Sequence[str],
    values: Sequence[float],
    pool: str,
    kind: Kind = "additive",
    *,
    n_boot: int = 200,
    seed: int = 0,
) -> EffectModel:
    """Fit the effect model of ``kind`` on trials (auxiliary subset, metric value).

    Raises:
        ValueError: fewer than 3 trials with a finite value.
    """
    if kind == "hoa":
        return fit_hoa(subsets, values, pool)
    from sklearn.linear_model import Ridge, RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict

    y = np.asarray(values, dtype=float)
    ok = np.isfinite(y)
    subsets = [s for s, good in zip(subsets, ok, strict=True) if good]
    y = y[ok]
    if len(y) < 3:
        raise ValueError(f"the effect model needs at least 3 finished trials, got {len(y)}")
    x, names = features(subsets, pool, kind)
    cv = RidgeCV(alphas=ALPHAS).fit(x, y)
    alpha = float(cv.alpha_)
    folds = KFold(n_splits=min(5, len(y)), shuffle=True, random_state=seed)
    pred = cross_val_predict(Ridge(alpha=alpha), x, y, cv=folds)
    low, high = {}, {}
    if len(y) >= 6 and n_boot > 0:
        rng = np.random.default_rng(seed)
        draws = []
        for _ in range(n_boot):
            idx = rng.integers(0, len(y), len(y))
            draws.append(Ridge(alpha=alpha).fit(x[idx], y[idx]).coef_)
        lo, hi = np.percentile(np.array(draws), [2.5, 97.5], axis=0)
        low = dict(zip(names, map(float, lo), strict=True))
        high = dict(zip(names, map(float, hi), strict=True))
    return EffectModel(
        kind=kind,
        pool=pool,
        intercept=float(cv.intercept_),
        coef=dict(zip(names, map(float, cv.coef_), strict=True)),
        low=low,
        high=high,
        alpha=alpha,
        cv_rmse=float(np.sqrt(np.mean((pred - y) ** 2))),
        spread=float(np.std(y)),
        n=len(y),
    )


def all_subsets(pool: str, min_aux: int, max_aux: int) -> list[str]:
    """Every auxiliary subset of ``pool`` with ``min_aux..max_aux`` tasks (pool order)."""
    return [
        "".join(c) for k in range(min_aux, max_aux + 1) for c in itertools.combinations(pool, k)
    ]


def rank_subsets(model: EffectModel, subsets: Sequence[str]) -> pd.DataFrame:
    """``subsets`` with their predicted metric, lowest (most robust) first; ties by subset;
    subsets without a prediction (NaN) last."""
    frame = pd.DataFrame({"aux": list(subsets), "predicted": model.predict(list(subsets))})
    return frame.sort_values(["predicted", "aux"], kind="stable", na_position="last").reset_index(
        drop=True
    )
