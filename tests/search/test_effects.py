"""The task-effect model recovers known effects from crafted trial tables."""

from __future__ import annotations

import numpy as np
import pytest

from rts.search.results.effects import all_subsets, features, fit_effects, rank_subsets

POOL = "sDnEk"
MAIN = {"s": 0.3, "D": -0.2, "n": 0.1, "E": -0.1, "k": 0.05}


def truth(aux: str, pair: float = 0.0) -> float:
    value = 1.0 + sum(MAIN[t] for t in aux)
    return value + (pair if "s" in aux and "D" in aux else 0.0)


def test_features_are_task_and_pair_indicators():
    x, names = features(["", "sD", "k"], "sDk", "pairwise")
    assert names == ["s", "D", "k", "sD", "sk", "Dk"]
    assert x.tolist() == [[0] * 6, [1, 1, 0, 1, 0, 0], [0, 0, 1, 0, 0, 0]]


def test_additive_effects_are_recovered_with_intervals_that_cover_them():
    rng = np.random.default_rng(0)
    subsets = all_subsets(POOL, 0, 5)
    values = [truth(a) + rng.normal(0, 0.02) for a in subsets]
    model = fit_effects(subsets, values, POOL, "additive", seed=0)
    for t, beta in MAIN.items():
        assert model.coef[t] == pytest.approx(beta, abs=0.03)
        assert model.low[t] - 0.01 <= beta <= model.high[t] + 0.01
    assert model.cv_rmse < 0.05 < model.spread
    best = rank_subsets(model, subsets).iloc[0]["aux"]
    assert best == "DE"  # the two negative effects


def test_pairwise_model_finds_an_interaction_the_additive_one_cannot():
    rng = np.random.default_rng(1)
    subsets = all_subsets(POOL, 0, 5)
    values = [truth(a, pair=-0.6) + rng.normal(0, 0.02) for a in subsets]
    additive = fit_effects(subsets, values, POOL, "additive")
    pairwise = fit_effects(subsets, values, POOL, "pairwise")
    assert pairwise.coef["sD"] == pytest.approx(-0.6, abs=0.08)
    assert pairwise.cv_rmse < additive.cv_rmse / 2
    # the interaction makes sD best, which only the pairwise model predicts
    assert rank_subsets(pairwise, subsets).iloc[0]["aux"] == "sDE"


def test_predicts_subsets_never_tried():
    subsets = all_subsets(POOL, 0, 5)
    tried = [a for a in subsets if len(a) <= 1]  # the main task alone and each single task
    model = fit_effects(tried, [truth(a) for a in tried], POOL, "additive")
    assert model.predict(["sDnEk"])[0] == pytest.approx(truth("sDnEk"), abs=0.05)


def test_too_few_trials_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 3 finished trials"):
        fit_effects(["", "s", "D"], [1.0, float("nan"), 2.0], "sD")


def test_a_runs_stage1_trials_give_each_tasks_effect_in_the_report():
    import pandas as pd

    from rts.search.analysis.effects import effects_display, task_effects
    from rts.search.analysis.rundata import make_run_data
    from rts.search.report.html import render_markdown

    rng = np.random.default_rng(2)
    subsets = all_subsets(POOL, 0, 5)
    trials = pd.DataFrame(
        {
            "trial_id": [f"s1-{i:04d}" for i in range(len(subsets))],
            "stage": 1,
            "tasks": ["d" + a for a in subsets],
            "main": "d",
            "vuln": [truth(a) + rng.normal(0, 0.01) for a in subsets],
            "clean_error": 0.1,
        }
    )
    run = make_run_data(trials)
    model = task_effects(run)
    assert model.coef["s"] == pytest.approx(0.3, abs=0.03)
    table = effects_display(model, "d")
    first = table.iloc[0]
    assert first["term"] == "adding s" and first["effect on d's vulnerability"].startswith("+0.29")
    text = render_markdown(run, pd.DataFrame(), [])
    assert "## Task effects" in text and "adding D" in text
