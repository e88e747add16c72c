"""Simultaneous intervals for a family of models compared on the same images and seeds.

A search picks the best of ``M`` models and then says whether it beats the single-task model
and which others it cannot tell apart. Tested one pair at a time on the data that picked the
best, such verdicts are wrong far more often than their nominal 5 % (the best of 8 equal
models "beats" the baseline in 13 % of replications). So every interval here is simultaneous:
with probability ≥ ``confidence`` *all* of them cover their true values at once, which covers
whichever model the data selected too (a family-wise error rate).

Training seeds are clusters, not extra images: two seeds of one model share nothing an image
bootstrap could see. The unit of resampling follows what varies:

* **one seed** (``S = 1``): a paired bootstrap over images (the same resampled images for every
  model); a single-step max-t band (Romano and Wolf 2005) over the models' values, and another
  over all pairwise differences. The verdict covers the image noise only: the training seed is
  fixed, and a seed can reorder models by more than the images do.
* **several seeds** (``S ≥ 2``): each seed's statistic (over its images) is one observation per
  model, so the intervals rest on ``S`` seeds: the models' values get Bonferroni t-intervals
  with the seed variance pooled over the models (``M (S − 1)`` degrees of freedom), the pairwise
  differences Tukey's studentized range over the seed × model table (seeds as blocks,
  ``(S − 1)(M − 1)`` degrees of freedom; for two models the paired t-test).

A model's value is the statistic over its images (one seed) or the mean of its seeds'
statistics, the same number the search ranks by; it lies inside its own interval by
construction (every interval is centred on it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from rts.attacks.statistics import get_statistic, resampled_statistic


@dataclass(frozen=True)
class Family:
    """Values of ``M`` models and their simultaneous intervals.

    Attributes:
        value: ``[M]`` each model's statistic (mean over seeds when there are several).
        low, high: ``[M]`` simultaneous intervals of the values.
        diff_low, diff_high: ``[M, M]`` simultaneous intervals of ``value[i] − value[j]`` over
            every pair (NaN on the diagonal, and everywhere when they cannot be computed).
        seeds: training seeds the intervals rest on.
        images: images per seed they rest on (the smallest count over the seeds).
        method: ``"images"`` (bootstrap over images, one seed) or ``"seeds"`` (seed-level).
        confidence: the simultaneous coverage (1 − family-wise error rate).
    """

    value: np.ndarray
    low: np.ndarray
    high: np.ndarray
    diff_low: np.ndarray
    diff_high: np.ndarray
    seeds: int
    images: int
    method: str
    confidence: float

    def diff(self, i: int, j: int) -> tuple[float, float, float]:
        """``value[i] − value[j]`` and its simultaneous interval."""
        d = float(self.value[i] - self.value[j])
        return d, float(self.diff_low[i, j]), float(self.diff_high[i, j])


Seed = tuple[np.ndarray, np.ndarray]
"""One training seed's per-image errors of every model: ``(clean [N, M], adv [N, M])``, the
same images in the same rows for every model."""


def simultaneous(
    seeds: Sequence[Seed],
    statistic: str = "mean",
    *,
    confidence: float = 0.95,
    n_resamples: int = 999,
    seed: int = 0,
) -> Family:
    """The :class:`Family` of the models in the columns of ``seeds`` (see the module).

    Args:
        seeds: one ``(clean [N, M], adv [N, M])`` per training seed.
        statistic: the vulnerability statistic (:data:`rts.attacks.statistics.STATISTICS`).
        confidence: simultaneous coverage of the values and of the pairwise differences.
        n_resamples: bootstrap resamples (one seed only).
        seed: seed of the bootstrap's generator (the same seed gives the same intervals).
    """
    if not seeds:
        raise ValueError("simultaneous intervals need at least one seed's errors")
    stat = get_statistic(statistic)
    per_seed = np.array(
        [[stat(c[:, m], a[:, m]) for m in range(c.shape[1])] for c, a in seeds], dtype=float
    )
    images = min(c.shape[0] for c, _ in seeds)
    if len(seeds) == 1:
        c, a = seeds[0]
        return _images(c, a, statistic, per_seed[0], confidence, n_resamples, seed)
    return _seeds(per_seed, images, confidence)


def _nan_family(value: np.ndarray, seeds: int, images: int, method: str, conf: float) -> Family:
    m = value.size
    nan1, nan2 = np.full(m, np.nan), np.full((m, m), np.nan)
    return Family(value, nan1, nan1.copy(), nan2, nan2.copy(), seeds, images, method, conf)


def _band(centred: np.ndarray, confidence: float, n: int) -> tuple[float, np.ndarray]:
    """Single-step max-t band: the ``confidence`` quantile of ``max |centred| / sd`` over the
    columns of the bootstrap draws ``centred`` ``[B, K]``, and the columns' sd ``[K]``, scaled
    by ``√(n / (n − 1))`` (a bootstrap over ``n`` images underestimates the variance by
    ``(n − 1) / n``), its quantile read on Student's t scale. Columns without spread (sd 0)
    are known exactly and do not enter the maximum."""
    from scipy.stats import norm
    from scipy.stats import t as student

    sd = centred.std(axis=0, ddof=1) * math.sqrt(n / (n - 1))
    spread = sd > 0
    if not spread.any():
        return 0.0, sd
    z = float(np.quantile((np.abs(centred[:, spread]) / sd[spread]).max(axis=1), confidence))
    # the sd is estimated from n images: read the quantile on Student's t scale (n − 1 df), as
    # a t-test does; without it a maximum over many pairs exceeds its level (7.5 % for 5 %)
    return float(student.ppf(norm.cdf(z), n - 1)), sd


def _images(
    clean: np.ndarray,
    adv: np.ndarray,
    statistic: str,
    value: np.ndarray,
    confidence: float,
    n_resamples: int,
    seed: int,
) -> Family:
    """One seed: paired bootstrap over images, max-t bands for values and differences."""
    n, m = clean.shape
    if n < 3 or np.isnan(value).any():
        return _nan_family(value, 1, n, "images", confidence)
    index = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    draws = np.stack(
        [resampled_statistic(statistic, clean[:, k], adv[:, k], index) for k in range(m)], axis=1
    )
    draws = draws[np.isfinite(draws).all(axis=1)]
    if len(draws) < max(10, n_resamples // 2):
        return _nan_family(value, 1, n, "images", confidence)
    centred = draws - value
    crit, sd = _band(centred, confidence, n)
    low, high = value - crit * sd, value + crit * sd
    diff_low, diff_high = np.full((m, m), np.nan), np.full((m, m), np.nan)
    if m > 1:
        i, j = np.triu_indices(m, k=1)
        crit_d, sd_d = _band(centred[:, i] - centred[:, j], confidence, n)
        d = value[i] - value[j]
        diff_low[i, j], diff_high[i, j] = d - crit_d * sd_d, d + crit_d * sd_d
        diff_low[j, i], diff_high[j, i] = -diff_high[i, j], -diff_low[i, j]
    return Family(value, low, high, diff_low, diff_high, 1, n, "images", confidence)


@lru_cache(maxsize=256)
def _tukey(models: int, df: int, confidence: float) -> float:
    """Tukey's critical value for a difference over its standard error (``q / √2``)."""
    from scipy.stats import studentized_range

    return float(studentized_range.ppf(confidence, models, df)) / math.sqrt(2)


@lru_cache(maxsize=256)
def _bonferroni_t(models: int, df: int, confidence: float) -> float:
    from scipy.stats import t

    return float(t.ppf(1 - (1 - confidence) / (2 * models), df))


def _seeds(per_seed: np.ndarray, images: int, confidence: float) -> Family:
    """Several seeds: each seed's statistic is one observation (``per_seed`` ``[S, M]``);
    seeds where a model's statistic is undefined are left out."""
    x = per_seed[np.isfinite(per_seed).all(axis=1)]
    s, m = x.shape
    value = x.mean(axis=0) if s else np.nanmean(per_seed, axis=0)
    if s < 2:
        return _nan_family(value, s, images, "seeds", confidence)
    within = x - value
    df_v = m * (s - 1)
    half = _bonferroni_t(m, df_v, confidence) * math.sqrt((within**2).sum() / df_v / s)
    diff_low, diff_high = np.full((m, m), np.nan), np.full((m, m), np.nan)
    if m > 1:
        resid = within - within.mean(axis=1, keepdims=True)  # seeds are blocks
        df_d = (s - 1) * (m - 1)
        half_d = _tukey(m, df_d, confidence) * math.sqrt(2 * (resid**2).sum() / df_d / s)
        d = value[:, None] - value[None, :]
        diff_low, diff_high = d - half_d, d + half_d
        np.fill_diagonal(diff_low, np.nan)
        np.fill_diagonal(diff_high, np.nan)
    return Family(
        value, value - half, value + half, diff_low, diff_high, s, images, "seeds", confidence
    )
