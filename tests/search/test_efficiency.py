"""The search-efficiency benchmark's accounting and scoring, on hand-made results frames.

Expected values are computed by hand from the frames (encoder costs from
``rts.models.EncoderSpec.cost``: ResNet18 = 1, ResNet50 = 2.26).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.search_efficiency import (
    BUDGETS,
    DEFAULT_BUDGETS,
    DEFAULT_CONFIG,
    GOAL_FRACTION,
    Budget,
    compute_spent,
    mean_truth,
    sampling_diagnostics,
    score_pick,
    seed_agreement,
    stage1_metric,
    stage2_reproduces_truth,
    summarize_budgets,
    surrogates_vs,
    trial_units,
    truth_values,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def trial(tid, stage, aux, *, epochs, enc="resnet18", status="completed", vuln=1.0, wall=10.0):
    return {
        "trial_id": tid,
        "stage": stage,
        "aux": aux,
        "trained_encoder": enc,
        "epochs": epochs,
        "status": status,
        "vuln": vuln,
        "clean_error": 0.5,
        "wall_s": wall,
    }


@pytest.fixture
def exhaustive() -> pd.DataFrame:
    """An exhaustive run over 4 subsets: stage 1 (ResNet18, 2 epochs, surrogates only) and
    stage 2 (ResNet50, 8 epochs each), truth 0.3 < 0.5 < 0.7 < 0.9."""
    rows = [trial(f"s1-{i}", 1, a, epochs=2, wall=5.0) for i, a in enumerate(["", "s", "D", "sD"])]
    truth = {"": 0.5, "s": 0.9, "D": 0.3, "sD": 0.7}
    rows += [
        trial(f"s2-{i}", 2, a, epochs=8, enc="resnet50", vuln=v, wall=40.0)
        for i, (a, v) in enumerate(truth.items())
    ]
    return pd.DataFrame(rows)


@pytest.fixture
def search() -> pd.DataFrame:
    """A search: 3 stage-1 trials on ResNet18 (one pruned at epoch 1, one failed at epoch 1),
    2 stage-2 trials on ResNet50 (8 epochs), one trial time unknown."""
    return pd.DataFrame(
        [
            trial("s1-1", 1, "D", epochs=2, vuln=0.2, wall=6.0),
            trial("s1-2", 1, "s", epochs=1, status="pruned", vuln=0.8, wall=3.0),
            trial("s1-3", 1, "sD", epochs=1, status="failed", vuln=math.nan, wall=math.nan),
            trial("s2-1", 2, "D", epochs=8, enc="resnet50", vuln=0.3, wall=40.0),
            trial("s2-2", 2, "", epochs=8, enc="resnet50", vuln=0.5, wall=41.0),
        ]
    )


def test_trial_units_weight_epochs_by_the_trained_encoder(search):
    assert list(trial_units(search)) == pytest.approx([2.0, 1.0, 1.0, 8 * 2.26, 8 * 2.26])


def test_compute_spent_counts_every_epoch_trained_against_the_full_trainings(search, exhaustive):
    spent = compute_spent(search, exhaustive)
    # Stage 1: 2 + 1 (pruned) + 1 (failed: its epoch was spent) ResNet18 epochs.
    assert spent["stage1_units"] == pytest.approx(4.0)
    assert spent["stage2_units"] == pytest.approx(2 * 8 * 2.26)
    assert spent["units"] == pytest.approx(4.0 + 36.16)
    # The exhaustive cost is its stage 2 only: 4 subsets x 8 epochs x 2.26 (not its stage 1).
    assert spent["exhaustive_units"] == pytest.approx(4 * 8 * 2.26)
    assert spent["units_fraction"] == pytest.approx(40.16 / 72.32)
    # Wall: the unknown trial time is skipped; the exhaustive wall is its stage-2 trials' sum.
    assert spent["wall_s"] == pytest.approx(6 + 3 + 40 + 41)
    assert spent["exhaustive_wall_s"] == pytest.approx(160.0)
    assert spent["wall_fraction"] == pytest.approx(90 / 160)


def test_compute_spent_without_full_trainings_is_nan(search, exhaustive):
    spent = compute_spent(search, exhaustive[exhaustive["stage"] == 1])
    assert math.isnan(spent["units_fraction"])
    assert math.isnan(spent["wall_fraction"])


def test_truth_values_use_completed_stage2_trials_and_average_repeats(exhaustive):
    extra = pd.DataFrame(
        [
            trial("s2-9", 2, "D", epochs=8, vuln=0.5),  # a repeat: D becomes (0.3 + 0.5) / 2
            trial("s2-10", 2, "n", epochs=3, status="failed", vuln=0.0),
            trial("s2-11", 2, "E", epochs=8, vuln=math.nan),
        ]
    )
    truth = truth_values(pd.concat([exhaustive, extra], ignore_index=True))
    assert list(truth.index) == ["D", "", "sD", "s"]
    assert list(truth) == pytest.approx([0.4, 0.5, 0.7, 0.9])
    with pytest.raises(ValueError, match="no completed stage-2 trial"):
        truth_values(exhaustive[exhaustive["stage"] == 1])


def test_score_pick_ranks_hits_and_regret():
    truth = pd.Series({"D": 0.3, "": 0.5, "n": 0.5, "sD": 0.7, "s": 0.9})
    best = score_pick("D", truth)
    assert (best["rank"], best["top1_hit"], best["regret"], best["regret_norm"]) == (
        1,
        True,
        0.0,
        0.0,
    )
    tie = score_pick("n", truth)  # ties share the rank: one subset is strictly better
    assert tie["rank"] == 2 and tie["top2_hit"] and not tie["top1_hit"]
    third = score_pick("sD", truth)
    assert third["rank"] == 4 and not third["top3_hit"]
    assert third["regret"] == pytest.approx(0.4)
    assert third["regret_norm"] == pytest.approx(0.4 / 0.6)
    worst = score_pick("s", truth)
    assert worst["regret_norm"] == pytest.approx(1.0)
    assert worst["best"] == "D"
    for missing in ("E", math.nan):  # not in the truth, or no recommendation at all
        miss = score_pick(missing, truth)
        assert math.isnan(miss["rank"]) and not miss["top3_hit"] and math.isnan(miss["regret"])


def test_sampling_diagnostics_rank_completed_before_pruned(search, exhaustive):
    truth = truth_values(exhaustive)
    diag = sampling_diagnostics(search, truth)
    assert diag["best_sampled"] is True  # D
    assert diag["best_stage1_rank"] == 1
    assert diag["distinct_sampled"] == 3
    assert diag["stage1_pruned"] == 1
    assert diag["stage2"] == "D,-"
    # A pruned trial ranks after every completed one, whatever its vulnerability.
    s = search.copy()
    s.loc[s["trial_id"] == "s1-1", ["aux", "status", "epochs", "vuln"]] = ["n", "completed", 2, 5]
    s.loc[s["trial_id"] == "s1-2", ["aux", "status", "vuln"]] = ["D", "pruned", 0.01]
    diag = sampling_diagnostics(s, truth)
    assert diag["best_stage1_rank"] == 2
    s = s[s["aux"] != "D"]
    assert sampling_diagnostics(s, truth)["best_sampled"] is False
    assert math.isnan(sampling_diagnostics(s, truth)["best_stage1_rank"])


def test_stage2_reproduces_truth(search, exhaustive):
    truth = truth_values(exhaustive)
    assert stage2_reproduces_truth(search, truth) == 0.0
    off = search.copy()
    off.loc[off["trial_id"] == "s2-2", "vuln"] = 0.65
    assert stage2_reproduces_truth(off, truth) == pytest.approx(0.15)


def test_summarize_budgets_needs_every_seed_within_rank_and_fraction():
    def row(budget, seed, rank, frac):
        return {
            "budget": budget,
            "seed": seed,
            "rank": rank,
            "units_fraction": frac,
            "wall_fraction": frac * 1.5,
            "top1_hit": rank <= 1,
            "top2_hit": rank <= 2,
            "top3_hit": rank <= 3,
            "regret": 0.1 * (rank - 1),
            "regret_norm": 0.05 * (rank - 1),
            "best_sampled": True,
            "search_s": 60.0,
        }

    rows = pd.DataFrame(
        [
            row("a", 0, 1, 0.18),
            row("a", 1, 2, 0.19),
            row("b", 0, 1, 0.18),
            row("b", 1, 3, 0.18),  # rank 3: missed
            row("c", 0, 1, 0.25),  # over the compute goal
        ]
    )
    out = summarize_budgets(rows).set_index("budget")
    assert list(out["goal"]) == ["met", "missed", "missed"]
    assert out.loc["a", "top1"] == "1/2" and out.loc["a", "top2"] == "2/2"
    assert out.loc["b", "mean_regret"] == pytest.approx(0.1)
    assert out.loc["a", "units_fraction"] == pytest.approx(0.185)


def test_default_budgets_are_planned_within_the_compute_goal():
    """Each default budget, applied to the ground-truth study, is planned (dry run) at most 20 %
    of its exhaustive cost: stage 2 = top-k + the baseline of the 16 subsets."""
    from rts.search.config.convert import load_config
    from rts.search.engine.plan import plan_search

    for name in DEFAULT_BUDGETS:
        cfg = load_config(DEFAULT_CONFIG, BUDGETS[name].overrides())
        plan = plan_search(cfg)
        assert plan.configurations == 16
        assert plan.units_expected / plan.exhaustive_units <= GOAL_FRACTION, name
    top2 = load_config(DEFAULT_CONFIG, Budget("x", "tpe", 1, 1, top_k=2).overrides())
    plan = plan_search(top2)  # 3 of 16 full trainings are 18.75 % before any stage-1 trial
    assert plan.units_expected / plan.exhaustive_units > 3 / 16


def test_budgets_share_the_truth_runs_trial_seed_not_its_sampler_seed():
    """A search runs with the first truth seed as its trial seed whatever its sampler seed, so
    its stage-2 values are the truth run's (common random numbers)."""
    from rts.search.config.convert import load_config
    from rts.search.engine.space import Space
    from rts.search.engine.trial import build_spec

    for name, budget in BUDGETS.items():
        cfg = load_config(
            DEFAULT_CONFIG, [*budget.overrides(), "search.seed=7", "search.trial_seed=0"]
        )
        cand = Space.from_config(cfg).candidate("sD", "uniform", "resnet18")
        assert build_spec(cfg, cand, 2).seed == 0, name
        assert cfg.search.seed == 7
        assert cfg.stage1.metric == budget.metric and cfg.stage2.baseline == budget.baseline


def test_mean_truth_averages_the_seeds_and_skips_missing_runs():
    a = pd.Series({"s": 0.2, "D": 0.6, "": 1.0})
    b = pd.Series({"s": 0.6, "D": 0.4})  # "" failed in this run
    truth = mean_truth([a, b])
    assert list(truth.index) == ["s", "D", ""]
    assert list(truth) == pytest.approx([0.4, 0.5, 1.0])
    with pytest.raises(ValueError, match="no ground-truth run"):
        mean_truth([])


def test_seed_agreement_by_hand():
    a = pd.Series({"s": 0.1, "D": 0.2, "n": 0.3})
    b = pd.Series({"s": 0.3, "D": 0.25, "n": 0.1})
    c = pd.Series({"s": 0.35, "D": 0.1, "n": 0.25})
    out = seed_agreement({0: a, 1: b, 2: c}).set_index("seed")
    assert list(out["best"]) == ["s", "n", "D"]
    # Seed 0 against the mean of b and c (s 0.325, D 0.175, n 0.175): its best is the others'
    # worst; Spearman = Pearson of the ranks (1, 2, 3) and (3, 1.5, 1.5) = -1.5 / sqrt(3).
    assert out.loc[0, "best_rank_in_others"] == 3
    assert out.loc[0, "spearman_vs_others"] == pytest.approx(-1.5 / math.sqrt(3))
    assert out.loc[1, "best_rank_in_others"] == 3  # n: 0.275 in the mean of a and c
    assert out.loc[2, "best_rank_in_others"] == 3  # D: 0.225 > s, n = 0.2 in a and b
    single = seed_agreement({0: a})
    assert list(single.columns) == ["seed", "best"]


def test_stage1_metric_and_surrogates_vs_a_truth():
    trials = pd.DataFrame(
        [
            trial("s1-1", 1, "s", epochs=1),
            trial("s1-2", 1, "D", epochs=1),
            trial("s1-3", 1, "n", epochs=1),
            trial("s1-4", 1, "n", epochs=1),  # n sampled twice: its best (lowest) value counts
            trial("s2-1", 2, "s", epochs=8),
        ]
    )
    gb = {"s1-1": 3.0, "s1-2": 1.0, "s1-3": 2.0, "s1-4": 2.5, "s2-1": 0.0}
    history = pd.DataFrame(
        [
            {
                "trial_id": t,
                "stage": 1 if t.startswith("s1") else 2,
                "epoch": e,
                "grad_bound_all": v + e,
                "vuln": 9.0 - v,
            }
            for t, v in gb.items()
            for e in (0, 1)
        ]
    )
    got = stage1_metric(trials, history, "grad_bound_all@0")
    assert got.to_dict() == {"D": 1.0, "n": 2.0, "s": 3.0}
    assert stage1_metric(trials, history, "grad_bound_all@1")["n"] == 3.0
    assert stage1_metric(trials, history, "clean_error@0").empty  # not recorded
    truth = pd.Series({"D": 0.1, "n": 0.2, "s": 0.3})
    table = surrogates_vs(trials, history, truth, ["grad_bound_all@0", "vuln@0"]).set_index(
        "surrogate"
    )
    assert table.loc["grad_bound_all@0", "spearman"] == pytest.approx(1.0)
    assert table.loc["grad_bound_all@0", "their truth ranks"] == "1 2 3"
    assert table.loc["vuln@0", "spearman"] == pytest.approx(-1.0)  # 9 - v: reversed
    assert table.loc["vuln@0", "top 3"] == "s n D"


def test_with_perfect_surrogates_the_screen_finds_the_oracle_best(local_ray, tmp_path):
    """The whole benchmark path on simulated trials (tests.search.fake_trial, noise 0): the truth is
    the oracle's, grad_bound_all at initialisation ranks exactly like it, so the zero-training
    screen recommends the true best subset for 2 of 16 full trainings (12.5 %) plus what the
    screens cost."""
    from benchmarks.search_efficiency import evaluate
    from tests.search.fake_trial import FakeTrial

    ev = evaluate(
        str(DEFAULT_CONFIG),
        [],
        [BUDGETS["screen-top2"]],
        [0],
        [0],
        str(tmp_path),
        trial_fn=FakeTrial(),
        prefix="t-",
    )
    assert len(ev.truth) == 16 and list(ev.per_seed) == [0]
    assert ev.truth.index[0] == "sE"  # pool sdnE; MARGINAL: s -0.20, E -0.15 (d +0.10, n +0.15)
    (row,) = ev.frame.to_dict("records")
    assert row["pick"] == "sE" and row["rank"] == 1 and row["rank_run"] == 1
    # two full trainings (no baseline) plus the 16 zero-epoch screens, charged their wall time
    # (they ran input gradients and an attack: issue 25 found them charged 0 units)
    assert row["screen_units"] > 0 and row["stage1_units"] == pytest.approx(row["screen_units"])
    assert row["stage2_units"] == pytest.approx(2 / 16 * row["exhaustive_units"])
    assert row["units_fraction"] == pytest.approx(
        (row["stage2_units"] + row["screen_units"]) / row["exhaustive_units"]
    )
    assert row["no_pick"] is False and row["free_hit"] is False
    assert row["stage2_vs_truth"] == 0.0
    assert row["stage2"] == "sE,sdE"


def test_mean_regret_charges_a_search_without_a_pick_and_free_hits_are_apart():
    """Issue 25: a search that recommended nothing counts at the worst regret, and a hit on a
    single-task best that every stage 2 trains is reported apart."""
    from benchmarks.search_efficiency import score_pick, summarize_budgets

    truth = pd.Series({"": 0.1, "s": 0.3, "d": 0.7})
    rows = []
    for seed, pick in enumerate(["", math.nan]):
        row = {"budget": "b", "seed": seed, "units_fraction": 0.1, "wall_fraction": 0.1}
        row.update(score_pick(pick, truth), best_sampled=True, search_s=1.0)
        row["free_hit"] = pick == ""
        rows.append(row)
    (out,) = summarize_budgets(pd.DataFrame(rows)).to_dict("records")
    assert out["no_pick"] == "1/2" and out["mean_regret"] == pytest.approx((0 + 0.6) / 2)
    assert out["free_hits"] == "1/2" and out["hits_not_free"] == "0/2"


def test_a_zero_epoch_screen_is_charged_its_wall_time():
    from benchmarks.search_efficiency import compute_spent

    search = pd.DataFrame(
        {
            "stage": [1, 2],
            "epochs": [0, 8],
            "trained_encoder": "resnet18",
            "wall_s": [5.0, 40.0],
        }
    )
    exhaustive = search.assign(stage=2, epochs=8, wall_s=40.0)  # 16 units in 80 s
    spent = compute_spent(search, exhaustive)
    assert spent["screen_units"] == pytest.approx(5.0 * 16 / 80)
    assert spent["units"] == pytest.approx(8 + 1.0)


def test_simulation_draws_its_noise_and_truth_from_the_real_tables():
    from scipy import stats

    from benchmarks.efficiency_sim import fit_generator, noise_for, simulate

    rng = np.random.default_rng(0)
    x = rng.normal(0, 2.0, 40_000)
    y = x + rng.normal(0, noise_for(0.3, 2.0), x.size)
    assert stats.spearmanr(x, y)[0] == pytest.approx(0.3, abs=0.02)
    gen = fit_generator()
    assert 0.1 <= gen.early_spearman <= 0.4 and gen.full_spearman > 0.95  # the tables' facts
    assert gen.rmse < min(gen.rmse_additive, gen.rmse_mean)  # fitted lam beats both ends
    rows = simulate("sDnk", [0], names=("default",))
    assert rows["compute_fraction"].iloc[0] == pytest.approx(7 / 16)  # 5 in full + 2 predicted
