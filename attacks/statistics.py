"""Statistics of a model's vulnerability over images, their bootstrap intervals, paired tests.

A vulnerability number comes from per-image clean and adversarial errors of one task. Which
summary of them ranks models is a choice (``attack.statistic``):

=================== =============================================================================
``mean``            the paper's relative task vulnerability ``E_k[(f(x+δ) − f(x)) / f(x)]`` over
                    the images with a non-zero clean error (the others are counted as undefined)
``ratio_of_means``  the published code's ``(E f(x+δ) − E f(x)) / E f(x)``: one heavy-tailed image
                    with a tiny clean error cannot dominate it
``median``          the median of the per-image ratios (robust to heavy tails)
``adv_error``       the mean adversarial error ``E f(x+δ)`` itself (no ratio at all)
=================== =============================================================================

Intervals are 95 % percentile bootstraps over images (``scipy.stats.bootstrap``); comparisons of
two models attacked on the same images are paired (:func:`paired_difference`). Verdicts over
several models and training seeds (simultaneous intervals) live in
:mod:`rts.attacks.simultaneous`; they resample with :func:`resampled_statistic`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np

Statistic = Callable[[np.ndarray, np.ndarray], float]
"""``(clean_errors[N], adv_errors[N]) -> value``; NaN when undefined."""


def _ratios(clean: np.ndarray, adv: np.ndarray) -> np.ndarray:
    ok = clean > 0
    return (adv[ok] - clean[ok]) / clean[ok]


def mean_of_ratios(clean: np.ndarray, adv: np.ndarray) -> float:
    """The paper's mean of per-image relative increases (images with clean error 0 left out)."""
    r = _ratios(clean, adv)
    return float(r.mean()) if r.size else math.nan


def ratio_of_means(clean: np.ndarray, adv: np.ndarray) -> float:
    """``(mean adv − mean clean) / mean clean`` (the published code's variant)."""
    base = float(clean.mean()) if clean.size else math.nan
    return (float(adv.mean()) - base) / base if base > 0 else math.nan


def median_of_ratios(clean: np.ndarray, adv: np.ndarray) -> float:
    """The median per-image relative increase."""
    r = _ratios(clean, adv)
    return float(np.median(r)) if r.size else math.nan


def mean_adv_error(clean: np.ndarray, adv: np.ndarray) -> float:
    """The mean adversarial error."""
    return float(adv.mean()) if adv.size else math.nan


STATISTICS: dict[str, Statistic] = {
    "mean": mean_of_ratios,
    "ratio_of_means": ratio_of_means,
    "median": median_of_ratios,
    "adv_error": mean_adv_error,
}
"""The vulnerability statistics by name (``attack.statistic``)."""


def resampled_statistic(name: str, clean: np.ndarray, adv: np.ndarray, index: np.ndarray):
    """The statistic ``name`` on every bootstrap resample at once: ``index`` ``[B, N]`` holds
    the resampled image indices, the result is ``[B]`` (NaN where undefined), equal to calling
    :func:`get_statistic` on each row (vectorised: thousands of resamples in milliseconds)."""
    get_statistic(name)
    c, a = clean[index], adv[index]
    if name == "adv_error":
        return a.mean(axis=1)
    if name == "ratio_of_means":
        base = c.mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(base > 0, (a.mean(axis=1) - base) / base, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(c > 0, (a - c) / c, np.nan)
    defined = (c > 0).any(axis=1)
    out = np.full(index.shape[0], np.nan)
    if name == "mean":
        out[defined] = np.nanmean(ratios[defined], axis=1)
    else:
        out[defined] = np.nanmedian(ratios[defined], axis=1)
    return out


def get_statistic(name: str) -> Statistic:
    """The statistic ``name``; an unknown name lists the choices."""
    if name not in STATISTICS:
        raise ValueError(f"unknown statistic {name!r}; choose from {', '.join(STATISTICS)}")
    return STATISTICS[name]


def _arrays(clean, adv) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(clean, dtype=float).ravel()
    a = np.asarray(adv, dtype=float).ravel()
    if c.shape != a.shape:
        raise ValueError(f"clean and adversarial errors differ in length: {c.size} vs {a.size}")
    return c, a


def interval(
    clean,
    adv,
    statistic: str = "mean",
    *,
    confidence: float = 0.95,
    n_resamples: int = 999,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(value, low, high)``: the statistic and its percentile bootstrap interval over images.

    NaN bounds when fewer than 3 images, or when the statistic is undefined on most resamples.
    """
    c, a = _arrays(clean, adv)
    stat = get_statistic(statistic)
    value = stat(c, a)
    if c.size < 3 or math.isnan(value):
        return value, math.nan, math.nan
    lo, hi = _bootstrap((c, a), lambda i: stat(c[i], a[i]), confidence, n_resamples, seed)
    return value, lo, hi


def paired_difference(
    first: tuple,
    second: tuple,
    statistic: str = "mean",
    *,
    confidence: float = 0.95,
    n_resamples: int = 999,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``statistic(first) − statistic(second)`` with a paired bootstrap interval over images.

    ``first`` and ``second`` are ``(clean, adv)`` per-image errors of two models on the *same*
    images in the same order (an image is resampled for both at once). A 95 % interval that
    contains 0 means the two are not distinguishable on these images (a tie).
    """
    c1, a1 = _arrays(*first)
    c2, a2 = _arrays(*second)
    if c1.size != c2.size:
        raise ValueError(f"paired comparison needs the same images: {c1.size} vs {c2.size}")
    stat = get_statistic(statistic)
    value = stat(c1, a1) - stat(c2, a2)
    if c1.size < 3 or math.isnan(value):
        return value, math.nan, math.nan
    lo, hi = _bootstrap(
        (c1,), lambda i: stat(c1[i], a1[i]) - stat(c2[i], a2[i]), confidence, n_resamples, seed
    )
    return value, lo, hi


def _bootstrap(data: tuple, stat_of_index, confidence, n_resamples, seed) -> tuple[float, float]:
    """Percentile interval of ``stat_of_index(resampled image indices)`` (scipy's bootstrap)."""
    from scipy.stats import bootstrap

    index = np.arange(len(data[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap(
            (index,),
            lambda i: stat_of_index(np.asarray(i, dtype=int)),
            vectorized=False,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    finite = dist[np.isfinite(dist)]
    if finite.size < max(10, n_resamples // 2):
        return math.nan, math.nan
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(finite, [alpha, 1 - alpha])
    return float(lo), float(hi)
