"""Vulnerability statistics and intervals: hand-computed values and scipy as the oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from rts.attacks.metrics import relative_vulnerability
from rts.attacks.statistics import STATISTICS, get_statistic, interval, paired_difference

CLEAN = np.array([0.1, 0.2, 0.4, 0.0])
ADV = np.array([0.2, 0.3, 0.4, 0.5])


def test_statistics_by_hand():
    # ratios of the defined images: 1.0, 0.5, 0.0 (the last image has clean error 0)
    assert STATISTICS["mean"](CLEAN, ADV) == pytest.approx(0.5)
    assert STATISTICS["median"](CLEAN, ADV) == pytest.approx(0.5)
    assert STATISTICS["ratio_of_means"](CLEAN, ADV) == pytest.approx((0.35 - 0.175) / 0.175)
    assert STATISTICS["adv_error"](CLEAN, ADV) == pytest.approx(0.35)


def test_mean_statistic_is_the_paper_metric_of_attacks_metrics():
    import torch

    rng = np.random.default_rng(0)
    clean, adv = rng.uniform(0.01, 1, 50), rng.uniform(0, 2, 50)
    tc, ta = torch.tensor(clean), torch.tensor(adv)
    assert STATISTICS["mean"](clean, adv) == pytest.approx(relative_vulnerability(tc, ta))
    rom = relative_vulnerability(tc, ta, reduction="ratio-of-means")
    assert STATISTICS["ratio_of_means"](clean, adv) == pytest.approx(rom)


def test_unknown_statistic_lists_the_choices():
    with pytest.raises(ValueError, match="choose from mean, ratio_of_means, median, adv_error"):
        get_statistic("max")


def test_interval_matches_scipy_bootstrap_on_the_mean_adversarial_error():
    rng = np.random.default_rng(1)
    clean, adv = rng.uniform(0.1, 1, 40), rng.uniform(0, 2, 40)
    value, lo, hi = interval(clean, adv, "adv_error", n_resamples=999, seed=7)
    ref = stats.bootstrap(
        (adv,), np.mean, n_resamples=999, method="percentile", rng=np.random.default_rng(7)
    )
    assert value == pytest.approx(adv.mean())
    assert lo == pytest.approx(ref.confidence_interval.low, rel=1e-9)
    assert hi == pytest.approx(ref.confidence_interval.high, rel=1e-9)


def test_the_median_resists_one_heavy_tailed_image_the_mean_does_not():
    """A crafted heavy-tailed frame: the ranking of two models flips with the statistic."""
    n = 30
    clean = np.full(n, 0.1)
    a = np.full(n, 0.15)  # model A: +50 % on every image
    b = np.full(n, 0.12)  # model B: +20 % on most images ...
    clean_b = clean.copy()
    clean_b[0] = 1e-4  # ... but one image with a tiny clean error explodes its ratio
    b[0] = 0.1
    mean_a, mean_b = STATISTICS["mean"](clean, a), STATISTICS["mean"](clean_b, b)
    med_a, med_b = STATISTICS["median"](clean, a), STATISTICS["median"](clean_b, b)
    assert mean_b > mean_a  # the mean calls B more vulnerable
    assert med_b < med_a  # the median calls A more vulnerable


def test_paired_difference_ties_and_separates():
    rng = np.random.default_rng(2)
    clean = rng.uniform(0.1, 1, 60)
    adv = clean * rng.uniform(1.4, 1.6, 60)
    same = paired_difference((clean, adv), (clean, adv * 1.001), "mean")
    assert same[1] <= 0 <= same[2] or abs(same[0]) < 1e-2
    apart = paired_difference((clean, adv * 1.5), (clean, adv), "mean")
    assert apart[0] > 0 and apart[1] > 0  # clearly more vulnerable: interval above 0


def test_interval_is_nan_with_too_few_images():
    value, lo, hi = interval([0.1, 0.2], [0.2, 0.3])
    assert not math.isnan(value) and math.isnan(lo) and math.isnan(hi)
