"""The recommendation against the noise: tied sets and the baseline test on crafted frames."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rts.search.results.recommend import compare


def frame(models: dict[str, float], n: int = 60, noise: float = 0.05, seed: int = 0):
    """Per-image errors: clean ~ U(0.1, 1); adv = clean * (1 + level + per-image noise)."""
    rng = np.random.default_rng(seed)
    clean = rng.uniform(0.1, 1.0, n)
    rows = []
    for key, level in models.items():
        adv = clean * (1 + level + rng.normal(0, noise, n))
        rows += [
            {"key": key, "unit": i, "clean_error": c, "adv_error": a}
            for i, (c, a) in enumerate(zip(clean, adv, strict=True))
        ]
    return pd.DataFrame(rows)


def test_a_clear_winner_beats_everyone_and_the_baseline():
    c = compare(frame({"d": 1.0, "dD": 0.2, "dn": 0.8}), "mean", baseline="d")
    assert c.best == "dD" and c.tied == ["dD"]
    assert c.significant and c.vs_baseline[2] < 0
    row = c.table.set_index("key").loc["dD"]
    assert row["low"] <= row["value"] <= row["high"]


def test_candidates_within_the_noise_are_tied_with_the_best():
    c = compare(frame({"d": 1.0, "dD": 0.50, "dn": 0.505}, noise=0.3), "mean", baseline="d")
    assert set(c.tied) == {"dD", "dn"}
    assert c.significant


def test_nothing_significant_when_everyone_is_within_the_noise():
    c = compare(frame({"d": 0.5, "dD": 0.49, "dn": 0.51}, noise=0.5, n=20), "mean", baseline="d")
    assert set(c.tied) == {"d", "dD", "dn"}
    assert not c.significant


def test_only_images_every_candidate_has_are_compared():
    f = frame({"d": 1.0, "dD": 0.2})
    f = f[~((f["key"] == "d") & (f["unit"] < 10))]  # the baseline lacks 10 images
    c = compare(f, "adv_error", baseline="d")
    assert c.best == "dD"
    kept = f.pivot_table(index="unit", columns="key", values="adv_error").dropna()
    assert len(kept) == 50
    assert np.isclose(c.table.set_index("key").loc["dD", "value"], kept["dD"].mean())


def test_no_comparison_without_defined_values():
    assert (
        compare(pd.DataFrame(columns=["key", "unit", "clean_error", "adv_error"]), "mean") is None
    )
