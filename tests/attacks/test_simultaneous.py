"""Simultaneous intervals on crafted errors whose answers are known by hand, scipy as the oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from rts.attacks.simultaneous import simultaneous
from rts.attacks.statistics import STATISTICS, paired_difference, resampled_statistic


@pytest.mark.parametrize("name", list(STATISTICS))
def test_resampled_statistic_is_the_statistic_of_every_resample(name):
    rng = np.random.default_rng(0)
    clean = np.r_[0.0, rng.uniform(0.1, 1, 19)]  # one image with clean error 0
    adv = clean + rng.uniform(0, 0.5, 20)
    index = rng.integers(0, 20, size=(50, 20))
    want = [STATISTICS[name](clean[i], adv[i]) for i in index]
    np.testing.assert_allclose(resampled_statistic(name, clean, adv, index), want)


def _seed(levels, n=100, noise=0.3, rng=None, clean=None):
    """One seed's ``(clean [n, M], adv [n, M])``: ratio = level + image noise."""
    rng = rng or np.random.default_rng(0)
    clean = clean if clean is not None else rng.uniform(0.1, 1.0, n)
    n = len(clean)
    ratio = np.asarray(levels)[None, :] + rng.normal(0, noise, (n, len(levels)))
    c = np.repeat(clean[:, None], len(levels), axis=1)
    return c, c * (1 + ratio)


def test_equal_models_are_tied_and_each_value_lies_in_its_interval():
    fam = simultaneous([_seed([0.5, 0.5, 0.5])], "mean")
    assert fam.seeds == 1 and fam.images == 100 and fam.method == "images"
    assert np.all(fam.low <= fam.value) and np.all(fam.value <= fam.high)
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        d, lo, hi = fam.diff(i, j)
        assert lo <= 0 <= hi and lo <= d <= hi


def test_a_constant_difference_is_told_apart_though_the_bars_overlap():
    """Two models 0.01 apart on every image: fully overlapping own intervals, and a paired
    difference of exactly +0.01 [+0.01, +0.01] (the issue's example)."""
    clean = np.random.default_rng(1).uniform(0.1, 1.0, 60)
    adv = clean * 1.5
    fam = simultaneous([(np.c_[clean, clean], np.c_[adv + 0.01, adv])], "adv_error")
    assert fam.low[0] < fam.high[1] and fam.low[1] < fam.high[0]  # the bars overlap
    assert fam.diff(0, 1) == pytest.approx((0.01, 0.01, 0.01))


def test_one_pair_of_seeds_is_the_paired_t_test():
    """Two models under several seeds: the difference's interval is scipy's paired t-interval
    of the seeds' statistics (Tukey for two models)."""
    rng = np.random.default_rng(2)
    clean = rng.uniform(0.1, 1.0, 50)
    seeds = [_seed([0.5 + rng.normal(0, 0.05), 0.4], rng=rng, clean=clean) for _ in range(4)]
    fam = simultaneous(seeds, "mean")
    per_seed = np.array([[STATISTICS["mean"](c[:, m], a[:, m]) for m in (0, 1)] for c, a in seeds])
    ci = stats.ttest_rel(per_seed[:, 0], per_seed[:, 1]).confidence_interval(0.95)
    assert fam.method == "seeds" and fam.seeds == 4
    assert fam.diff(0, 1)[1:] == pytest.approx((ci.low, ci.high))
    np.testing.assert_allclose(fam.value, per_seed.mean(axis=0))


def test_a_seed_level_offset_is_seed_noise_not_a_difference():
    """Two truly equal models, 3 seeds, each seed shifts a model's every image by ±0.05 (seed
    noise) with little image noise: pooling (seed, image) units as independent declares a
    difference; the seeds as clusters do not."""
    rng = np.random.default_rng(3)
    clean = rng.uniform(0.1, 1.0, 100)
    offsets = [(0.05, -0.04), (-0.05, 0.06), (0.04, -0.05)]
    seeds = [_seed([0.5 + a, 0.5 + b], noise=0.02, rng=rng, clean=clean) for a, b in offsets]
    fam = simultaneous(seeds, "mean")
    _, lo, hi = fam.diff(0, 1)
    assert fam.seeds == 3 and lo <= 0 <= hi
    pooled = [np.concatenate([s[0] for s in seeds]), np.concatenate([s[1] for s in seeds])]
    _, plo, phi = paired_difference(
        (pooled[0][:, 0], pooled[1][:, 0]), (pooled[0][:, 1], pooled[1][:, 1]), "mean"
    )
    assert not plo <= 0 <= phi  # what the old pooled interval said


def test_an_undefined_seed_is_left_out_and_too_few_images_give_nan():
    clean = np.r_[np.zeros(5)]
    fam = simultaneous([(np.c_[clean, clean], np.c_[clean, clean])], "mean")
    assert math.isnan(fam.value[0]) and np.isnan(fam.low).all()
    c, a = _seed([0.5, 0.5], n=2)
    assert np.isnan(simultaneous([(c, a)], "mean").diff_low).all()
