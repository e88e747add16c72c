"""The reliability benchmark's statistics on crafted data (the benchmark itself is not a test)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.truth_reliability import split_half_spearman, subset_values


def test_split_half_spearman_is_one_for_seeds_that_agree_and_low_for_noise():
    rng = np.random.default_rng(0)
    truth = np.arange(16, dtype=float)
    agree = pd.DataFrame({s: truth + rng.normal(0, 0.01, 16) for s in range(4)})
    assert split_half_spearman(agree) == pytest.approx((1.0, 1.0))
    noise = pd.DataFrame({s: rng.normal(0, 1, 16) for s in range(4)})
    mean, low = split_half_spearman(noise)
    assert abs(mean) < 0.6 and low <= mean


def test_split_half_spearman_uses_every_split_once():
    """4 seeds: the 3 splits {0,1|2,3}, {0,2|1,3}, {0,3|1,2}, computed here by hand."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    values = pd.DataFrame({s: rng.normal(size=10) for s in range(4)})
    want = [
        spearmanr(values[[a, b]].mean(axis=1), values[[c, d]].mean(axis=1)).statistic
        for (a, b), (c, d) in (((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2)))
    ]
    assert split_half_spearman(values) == pytest.approx((np.mean(want), np.min(want)))


def test_subset_values_reads_the_worst_case_rows():
    trials = pd.DataFrame({"trial_id": ["a", "b"], "aux": ["", "s"]})
    images = pd.DataFrame(
        {
            "trial_id": ["a", "a", "b", "b", "a"],
            "attack": ["worst", "worst", "worst", "worst", "pgd"],
            "image": [0, 1, 0, 1, 0],
            "clean_error": [0.1, 0.2, 0.1, 0.2, 0.1],
            "adv_error": [0.2, 0.2, 0.1, 0.3, 9.0],
        }
    )
    got = subset_values(images, trials, "mean")
    assert got[""] == pytest.approx(0.5) and got["s"] == pytest.approx(0.25)


def test_seeds_needed_follows_the_spearman_brown_prophecy():
    from benchmarks.truth_reliability import seeds_needed

    # r1 = 0.5: a mean of k seeds has reliability k/(k+1); 0.8 needs k = 4 per half
    assert seeds_needed(0.5) == 8
    r1 = 0.22  # k = 0.8 * 0.78 / (0.22 * 0.2) = 14.18 -> 15 per half
    k = seeds_needed(r1) / 2
    assert k == 15 and k * r1 / (1 + (k - 1) * r1) >= 0.8 > (k - 1) * r1 / (1 + (k - 2) * r1)
    assert seeds_needed(0.9) == 2 and seeds_needed(0.0) == float("inf")


def test_pairwise_spearman_averages_every_pair_of_seeds():
    from benchmarks.truth_reliability import pairwise_spearman

    base = np.arange(6.0)
    values = pd.DataFrame({0: base, 1: base, 2: base[::-1]})
    assert pairwise_spearman(values) == pytest.approx((1.0 - 1.0 - 1.0) / 3)


def test_an_odd_seed_count_splits_into_halves_that_use_every_seed():
    """3 seeds: {0|1,2}, {1|0,2}, {2|0,1}, by hand; and the full-S Spearman-Brown value."""
    from scipy.stats import spearmanr

    from benchmarks.truth_reliability import split_half

    rng = np.random.default_rng(2)
    values = pd.DataFrame({s: rng.normal(size=10) for s in range(3)})
    want = [
        spearmanr(values[a], values[[b, c]].mean(axis=1)).statistic
        for a, b, c in ((0, 1, 2), (1, 0, 2), (2, 0, 1))
    ]
    r = split_half(values)
    assert (r.mean, r.min, r.splits, r.constant) == pytest.approx(
        (np.mean(want), np.min(want), 3, 0)
    )
    assert r.full == pytest.approx(2 * r.mean / (1 + r.mean))


def test_a_constant_half_is_counted_and_warned_about():
    from benchmarks.truth_reliability import split_half

    values = pd.DataFrame({0: [1.0] * 5, 1: [1.0, 2, 3, 4, 5], 2: [5.0, 4, 3, 2, 1], 3: [1.0] * 5})
    with pytest.warns(UserWarning, match="left out"):
        r = split_half(values)
    assert r.constant == 1 and r.splits == 2
