"""Vectorised rank correlations and bootstrap intervals for the surrogate analysis."""

from __future__ import annotations

import math
import warnings

import numpy as np

MIN_BOOTSTRAP = 5
"""Bootstrap intervals need at least this many points (below, resamples are mostly degenerate)."""


def _pearson_vec(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson r along ``axis`` (NaN where x or y is constant); vectorised for the bootstrap."""
    xm = x - x.mean(axis=axis, keepdims=True)
    ym = y - y.mean(axis=axis, keepdims=True)
    num = (xm * ym).sum(axis=axis)
    den = np.sqrt((xm * xm).sum(axis=axis) * (ym * ym).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    scale = np.maximum(np.abs(x).max(axis=axis), np.abs(y).max(axis=axis))
    tiny = den <= 1e-12 * np.maximum(scale, 1e-300) ** 2
    return np.clip(np.where(tiny, np.nan, r), -1.0, 1.0)


def _spearman_vec(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman rho along ``axis``: Pearson on average ranks (scipy's definition)."""
    from scipy.stats import rankdata

    return _pearson_vec(rankdata(x, axis=axis), rankdata(y, axis=axis), axis=axis)


KENDALL_VECTOR_MAX = 120
"""Up to this many points the bootstrap uses the vectorised Kendall tau (faster than scipy)."""


def _kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall tau-b of one resample (:func:`scipy.stats.kendalltau`), NaN if a side is constant."""
    from scipy.stats import kendalltau

    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(kendalltau(x, y).statistic)


def _kendall_vec(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Kendall tau-b along ``axis`` (scipy's default variant), vectorised over leading axes.

    With ``sx = sign(x_i - x_j)`` and ``sy`` likewise over all ordered pairs,
    ``tau_b = Σ sx·sy / sqrt(Σ|sx| · Σ|sy|)``: the numerator is twice concordant minus
    discordant pairs, each factor of the denominator twice the pairs untied in that variable.
    NaN where either side is constant.
    """
    x = np.moveaxis(np.asarray(x, dtype=float), axis, -1)
    y = np.moveaxis(np.asarray(y, dtype=float), axis, -1)
    sx = np.sign(x[..., :, None] - x[..., None, :]).astype(np.int8)
    sy = np.sign(y[..., :, None] - y[..., None, :]).astype(np.int8)
    num = (sx * sy).sum(axis=(-2, -1), dtype=np.int64)
    den = np.sqrt(
        np.abs(sx).sum(axis=(-2, -1), dtype=np.int64).astype(float)
        * np.abs(sy).sum(axis=(-2, -1), dtype=np.int64)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _bootstrap_ci(
    x: np.ndarray,
    y: np.ndarray,
    statistic,
    *,
    vectorized: bool,
    n_resamples: int,
    confidence: float,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """Paired percentile bootstrap CI from :func:`scipy.stats.bootstrap`.

    Resamples that draw a constant x or y (correlation undefined: likely for n < 6) are left out
    of the percentiles instead of turning the whole interval into NaN.
    """
    from scipy.stats import bootstrap

    # bound the memory of the vectorised statistics (Kendall builds n x n sign matrices)
    batch = max(1, min(n_resamples, int(4e7 // max(len(x) ** 2, 1))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap(
            (x, y),
            statistic,
            paired=True,
            vectorized=vectorized,
            batch=batch,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            rng=rng,
        )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if math.isnan(lo) or math.isnan(hi):
        dist = np.asarray(res.bootstrap_distribution, dtype=float)
        dist = dist[np.isfinite(dist)]
        if len(dist) < max(10, n_resamples // 10):
            return math.nan, math.nan
        alpha = (1 - confidence) / 2
        lo, hi = (float(v) for v in np.quantile(dist, [alpha, 1 - alpha]))
    return lo, hi
