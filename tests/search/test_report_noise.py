"""The report's recommendation against the noise: intervals from the run's per-image errors, the
paired test against the single-task model, and what one training seed cannot tell."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from rts.search.analysis.recommend import recommendation
from rts.search.analysis.rundata import load_run
from rts.search.report.html import recommendation_lines
from tests.search.test_analysis import TARGETS, WEIGHTED, write_fake_run_folder


def with_images(folder, noise: float, n: int = 40):
    """Per-image worst-case errors whose mean of ratios is each stage-2 trial's target, with
    Gaussian image noise of size ``noise``."""
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.1, 1.0, n)
    rows = []
    combos = [(k, "u", v) for k, v in TARGETS.items()] + [(WEIGHTED[0], "w", WEIGHTED[2])]
    for tasks, tag, target in combos:
        ratio = target + rng.normal(0, noise, n)
        ratio += target - ratio.mean()  # exactly the target on average
        for i, (c, r) in enumerate(zip(clean, ratio, strict=True)):
            rows.append(
                {
                    "trial_id": f"t2-{tasks}-{tag}",
                    "attack": "worst",
                    "image": i,
                    "clean_error": c,
                    "adv_error": c * (1 + r),
                }
            )
    pd.DataFrame(rows).to_parquet(folder / "images.parquet")
    return folder


def test_a_clear_winner_is_significant_and_carries_intervals(tmp_path):
    run = load_run(with_images(write_fake_run_folder(tmp_path / "run"), noise=0.05))
    rec = recommendation(run)
    assert rec["tasks"] == "dn" and rec["seeds"] == 1  # 0.7 against d alone at 1.0
    assert rec["target_low"] < 0.7 < rec["target_high"]
    assert rec["baseline_low"] < 1.0 < rec["baseline_high"]
    d, _, hi = rec["diff"]
    assert abs(d - (0.7 - 1.0)) < 1e-9 and hi < 0 and rec["significant"]
    text = "\n".join(recommendation_lines(rec, pd.DataFrame()))
    assert "**0.700** [" in text and "difference -0.3 [" in text and "-30%" in text
    assert "One training seed" in text and "stage2.seeds" in text


def test_a_difference_inside_the_noise_is_reported_as_a_tie(tmp_path):
    run = load_run(with_images(write_fake_run_folder(tmp_path / "run"), noise=3.0, n=12))
    rec = recommendation(run)
    assert rec["significant"] is False
    lines = recommendation_lines(rec, pd.DataFrame())
    tie = [line for line in lines if line.startswith("**Not significant**")]
    assert tie and "includes 0: treat them as tied" in tie[0]
    assert not re.search(r"[+-]\d+(\.\d+)?%", tie[0])  # no percentage change read into it


def test_a_run_without_per_image_errors_says_it_cannot_test(tmp_path):
    rec = recommendation(load_run(write_fake_run_folder(tmp_path / "run")))
    assert "diff" not in rec and "target_low" not in rec
    text = "\n".join(recommendation_lines(rec, pd.DataFrame()))
    assert "no per-image errors" in text and "One training seed" not in text


def test_the_paired_differences_figure_shows_what_the_verdicts_are_read_from(tmp_path):
    from rts.search.report.html import differences_item

    run = load_run(with_images(write_fake_run_folder(tmp_path / "run"), noise=0.05))
    item = differences_item(run, pd.DataFrame())
    assert item is not None and item.id == "differences" and item.png.startswith(b"\x89PNG")
    assert "not from whether two models' own intervals overlap" in item.caption
    ((_, numbers),) = item.tables
    assert numbers.loc["dn", "minus the single-task model"].endswith("(better)")
    assert numbers.loc["d", "minus the recommendation"].endswith("(worse)")
