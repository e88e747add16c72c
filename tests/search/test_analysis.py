"""Analysis: correlations against scipy and by hand, decision metrics, paper tables, the adapter."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from rts.cli import main
from rts.search.analysis.correlate import (
    ANALYSIS_COLUMNS,
    analyze,
    correlate,
    decision_metrics,
    default_k,
    surrogate_values,
)
from rts.search.analysis.paper import enable_chain, heatmap_panels, heatmap_table, pair_cells
from rts.search.analysis.recommend import recommendation
from rts.search.analysis.rundata import (
    combinations,
    compute_summary,
    load_run,
    make_run_data,
    weights_key,
)
from rts.search.analysis.stats import KENDALL_VECTOR_MAX, _kendall_vec
from rts.search.report.text import format_analysis
from rts.search.results.pareto import pareto_front

# Worst-case (APGD, single-task) main-task relative vulnerability of every subset of the pool
# s, n, E around the main task d: the "ground truth" of an exhaustive search.
TARGETS = {
    "d": 1.0,
    "sd": 1.6,
    "dn": 0.7,
    "dE": 1.2,
    "sdn": 1.3,
    "sdE": 1.9,
    "dnE": 0.9,
    "sdnE": 1.5,
}
WEIGHTED = ("sd", {"s": 0.1, "d": 0.9}, 1.1)  # tasks, weights, target
NOISE_EPOCH1 = {
    "d": 0.5,
    "sd": -0.7,
    "dn": 0.9,
    "dE": -0.4,
    "sdn": 0.2,
    "sdE": -0.9,
    "dnE": 0.6,
    "sdnE": 0.0,
}


def fake_frames(*, with_stage1: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Hand-made canonical frames: an exhaustive search over 8 subsets plus one weighted model.

    Stage 2: per combination, PGD/APGD/WGD single-task attacks (APGD is the worst, equal to the
    target), a weaker multi-task PGD, and an FGSM row that must be ignored (strong attacks ran).
    Stage 1: per-epoch history where ``vuln`` equals the target at epoch 3 (a perfect surrogate)
    and is noisy at epoch 1; ``grad_bound`` at epochs 0 and 1.
    """
    trials, attacks, history = [], [], []
    combos = [(k, None, v) for k, v in TARGETS.items()] + [WEIGHTED]
    for i, (tasks, weights, target) in enumerate(combos):
        wtag = "w" if weights else "u"
        tid2 = f"t2-{tasks}-{wtag}"
        trials.append(
            {
                "trial_id": tid2,
                "stage": 2,
                "tasks": tasks,
                "main": "d",
                "weights": weights,
                "encoder": "resnet50",
                "epochs": 10,
                "status": "completed",
                "wall_s": 300.0 + i,
                "clean_error": 0.1 + 0.05 * target,
            }
        )
        for attack, delta in (("pgd", -0.2), ("apgd", 0.0), ("wgd", -0.1), ("fgsm", 5.0)):
            attacks.append(
                {
                    "trial_id": tid2,
                    "attack": attack,
                    "attacked": "d",
                    "task": "d",
                    "rel_vuln": target + delta,
                }
            )
        attacks.append(
            {
                "trial_id": tid2,
                "attack": "pgd",
                "attacked": tasks,
                "task": "d",
                "rel_vuln": target - 0.3,
            }
        )
        for aux in tasks.replace("d", ""):
            attacks.append(
                {
                    "trial_id": tid2,
                    "attack": "pgd",
                    "attacked": tasks,
                    "task": aux,
                    "rel_vuln": 2.0 + 0.1 * i,
                }
            )
        if not with_stage1:
            continue
        tid1 = f"t1-{tasks}-{wtag}"
        trials.append(
            {
                "trial_id": tid1,
                "stage": 1,
                "tasks": tasks,
                "main": "d",
                "weights": weights,
                "encoder": "resnet50",
                "trained_encoder": "resnet18",
                "epochs": 3,
                "status": "completed",
                "wall_s": 30.0,
                "clean_error": math.nan,
            }
        )
        noise = NOISE_EPOCH1.get(tasks, 0.3) if not weights else 0.3
        for epoch in range(4):
            history.append(
                {
                    "trial_id": tid1,
                    "epoch": epoch,
                    "time_s": 10.0 * epoch,
                    "clean_error": 0.2 + 0.05 * target if epoch else math.nan,
                    "vuln": {0: math.nan, 1: target + noise, 2: target + noise / 2, 3: target}[
                        epoch
                    ],
                    "grad_bound": 0.01 * (i + 1) if epoch <= 1 else math.nan,
                }
            )
    return pd.DataFrame(trials), pd.DataFrame(attacks), pd.DataFrame(history)


def fake_run(**kw):
    """:func:`fake_frames` as a RunData."""
    trials, attacks, history = fake_frames(**kw)
    return make_run_data(trials, attacks, history, config={"name": "fake", "search": {"main": "d"}})


# --------------------------------------------------------------------------------------------
# Correlations


def test_pearson_by_hand_on_five_points():
    # x = 1..5, y = 2,4,5,9,10: dx = -2..2; dy = -4,-2,-1,3,4; Σdxdy = 21, Σdx² = 10, Σdy² = 46.
    out = correlate([1, 2, 3, 4, 5], [2, 4, 5, 9, 10], n_resamples=99)
    assert out["n"] == 5
    assert out["pearson_r"] == pytest.approx(21 / math.sqrt(460), abs=1e-12)
    assert out["spearman_rho"] == pytest.approx(1.0)  # same order
    assert out["kendall_tau"] == pytest.approx(1.0)  # all 10 pairs concordant


def test_no_correlation_below_five_points():
    out = correlate([1, 2, 3, 4], [2, 4, 5, 9], n_resamples=99)
    assert out["n"] == 4 and math.isnan(out["pearson_r"]) and math.isnan(out["pearson_lo"])
    assert out["note"] == "needs >= 5 points with surrogate and target, got 4"


def test_correlations_equal_scipy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=25)
    y = 0.6 * x + rng.normal(size=25)
    y[4] = y[7]  # a tie, where Spearman/Kendall variants differ
    out = correlate(x, y, n_resamples=199)
    for name, fn, key in (
        ("pearson", stats.pearsonr, "r"),
        ("spearman", stats.spearmanr, "rho"),
        ("kendall", stats.kendalltau, "tau"),
    ):
        res = fn(x, y)
        assert out[f"{name}_{key}"] == pytest.approx(res.statistic, abs=1e-12)
        assert out[f"{name}_p"] == pytest.approx(res.pvalue, rel=1e-9)


def test_bootstrap_interval_equals_scipy_bootstrap():
    rng = np.random.default_rng(5)
    x = rng.normal(size=30)
    y = x + rng.normal(size=30)
    out = correlate(x, y, n_resamples=499, seed=11, confidence=0.9)
    ref = stats.bootstrap(
        (x, y),
        lambda a, b: stats.pearsonr(a, b).statistic,
        paired=True,
        vectorized=False,
        n_resamples=499,
        confidence_level=0.9,
        method="percentile",
        rng=np.random.default_rng(11),
    )
    assert out["pearson_lo"] == pytest.approx(ref.confidence_interval.low, abs=1e-9)
    assert out["pearson_hi"] == pytest.approx(ref.confidence_interval.high, abs=1e-9)
    assert out["pearson_lo"] < out["pearson_r"] < out["pearson_hi"]
    for name, key in (("spearman", "rho"), ("kendall", "tau")):
        assert out[f"{name}_lo"] <= out[f"{name}_{key}"] <= out[f"{name}_hi"]


def test_vectorised_kendall_equals_scipy_with_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=(8, 13)).astype(float)  # many ties
    y = rng.integers(0, 4, size=(8, 13)).astype(float)
    expected = [stats.kendalltau(a, b).statistic for a, b in zip(x, y, strict=True)]
    assert _kendall_vec(x, y) == pytest.approx(expected, abs=1e-12)
    assert math.isnan(_kendall_vec(np.ones(5), np.arange(5.0)))


@pytest.mark.parametrize("n", [40, KENDALL_VECTOR_MAX + 5])
def test_kendall_interval_equals_scipy_bootstrap_both_paths(n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=n)
    y = x + rng.normal(size=n)
    out = correlate(x, y, n_resamples=59, seed=4)
    rs = np.random.default_rng(4)
    ref = {}
    for name, fn in (
        ("pearson", stats.pearsonr),
        ("spearman", stats.spearmanr),
        ("kendall", stats.kendalltau),
    ):
        ref[name] = stats.bootstrap(
            (x, y),
            lambda a, b, fn=fn: fn(a, b).statistic,
            paired=True,
            vectorized=False,
            n_resamples=59,
            method="percentile",
            rng=rs,
        ).confidence_interval
    assert out["kendall_lo"] == pytest.approx(ref["kendall"].low, abs=1e-9)
    assert out["kendall_hi"] == pytest.approx(ref["kendall"].high, abs=1e-9)
    assert out["spearman_lo"] == pytest.approx(ref["spearman"].low, abs=1e-9)


def test_bootstrap_is_seeded():
    x = np.arange(8.0)
    y = np.array([0.5, 1.7, 1.1, 3.9, 3.0, 6.2, 5.1, 8.4])
    a = correlate(x, y, n_resamples=199, seed=1)
    b = correlate(x, y, n_resamples=199, seed=1)
    c = correlate(x, y, n_resamples=199, seed=2)
    assert a == b
    assert (a["pearson_lo"], a["pearson_hi"]) != (c["pearson_lo"], c["pearson_hi"])


def test_small_samples_keep_an_interval_despite_degenerate_resamples():
    # n = 5: about 0.16% of resamples draw one point only (undefined r); they are left out.
    out = correlate([1, 2, 3, 4, 5], [1.0, 2.5, 2.0, 4.5, 4.0], n_resamples=299)
    assert np.isfinite(out["pearson_lo"]) and np.isfinite(out["pearson_hi"])
    assert -1 <= out["pearson_lo"] <= out["pearson_hi"] <= 1
    assert out["note"] == ""


@pytest.mark.parametrize(
    ("x", "y", "note"),
    [
        ([1.0, 2.0], [2.0, 1.0], "needs >= 5 points"),
        ([1.0, 2.0, math.nan, 4.0], [1.0, math.nan, 3.0, 2.0], "got 2"),
        ([1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0], "surrogate is constant"),
        ([1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 5.0, 5.0, 5.0, 5.0], "target is constant"),
        ([], [], "got 0"),
    ],
)
def test_degenerate_inputs_give_nan_with_a_note(x, y, note):
    out = correlate(x, y)
    assert note in out["note"]
    assert all(math.isnan(out[k]) for k in ("pearson_r", "spearman_p", "kendall_hi"))


def test_nan_pairs_are_dropped():
    out = correlate([1, 2, math.nan, 3, 4, 5], [2, 4, 100, 5, 9, 10], n_resamples=9)
    assert out["n"] == 5
    assert out["pearson_r"] == pytest.approx(21 / math.sqrt(460))


def test_correlate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="confidence"):
        correlate([1, 2, 3], [1, 2, 3], confidence=1.5)
    with pytest.raises(ValueError, match="equal length"):
        correlate([1, 2, 3], [1, 2])


# --------------------------------------------------------------------------------------------
# Decision metrics


def _series(values):
    return pd.Series(values, index=[f"c{i}" for i in range(len(values))], dtype=float)


TARGET = _series([0.9, 0.3, 1.5, 0.6, 1.2])  # best c1 (0.3), worst c2 (1.5)


def test_perfect_surrogate_has_zero_regret():
    out = decision_metrics(TARGET * 2 + 1, TARGET, k=2)
    assert out["pick"] == out["best"] == "c1"
    assert out["top1_hit"] is True
    assert out["pick_rank"] == 1
    assert out["regret"] == 0.0 and out["regret_norm"] == 0.0
    assert out["topk_overlap"] == 1.0


def test_reversed_surrogate_picks_the_worst():
    out = decision_metrics(-TARGET, TARGET, k=2)
    assert out["pick"] == "c2"  # the most vulnerable combination
    assert out["top1_hit"] is False
    assert out["pick_rank"] == 5
    assert out["regret"] == pytest.approx(1.5 - 0.3)
    assert out["regret_norm"] == pytest.approx(1.0)
    assert out["topk_overlap"] == 0.0  # {c2, c4} vs {c1, c3}


def test_direction_higher_reverses_the_ranking():
    out = decision_metrics(-TARGET, TARGET, direction="higher")
    assert out["regret"] == 0.0 and out["pick"] == "c1"


def test_topk_overlap_and_compute_saved_by_hand():
    surrogate = _series([0.3, 0.1, 0.2, 0.9, 0.8])  # ranks c1, c2, c0, ...; target top-3 c1 c3 c0
    out = decision_metrics(
        surrogate,
        TARGET,
        k=3,
        surrogate_cost=_series([1.0] * 5),
        target_cost=_series([10.0] * 5),
    )
    assert out["pick"] == "c1" and out["top1_hit"] is True
    assert out["topk_overlap"] == pytest.approx(2 / 3)  # {c1, c2, c0} ∩ {c1, c3, c0}
    # surrogate on all 5 (5 s) + target on its top 3 (30 s) instead of target on all (50 s)
    assert out["compute_saved"] == pytest.approx(1 - 35 / 50)


def test_decision_metrics_ties_are_deterministic_and_nan_aligned():
    s = _series([1.0, 1.0, 2.0, math.nan, 3.0])
    t = _series([0.5, 0.4, 0.6, 0.1, math.nan])
    out = decision_metrics(s, t, k=5)
    assert out["k"] == 2  # c3 and c4 miss a value; k is capped at n - 1 = 2
    assert out["pick"] == "c0"  # tie on 1.0 broken by name
    assert out["best"] == "c1"
    assert out["regret"] == pytest.approx(0.1)
    assert math.isnan(out["compute_saved"])


def test_default_k_is_the_runs_stage2_top_k():
    trials, attacks, history = fake_frames()
    run = make_run_data(trials, attacks, history, config={"stage2": {"top_k": 4}})
    assert default_k(run) == 4
    assert analyze(run, surrogates=["vuln@3"], n_resamples=9)["k"].iloc[0] == 4
    assert default_k(fake_run()) == 3  # no stage2 section


def test_decision_metrics_without_overlap():
    out = decision_metrics(_series([1.0, math.nan]), _series([math.nan, 2.0]))
    assert out["pick"] == "" and math.isnan(out["regret"]) and "no combination" in out["note"]


# --------------------------------------------------------------------------------------------
# Run data, target, analysis


def test_weights_key_normalises_and_detects_uniform():
    assert weights_key(None, "sd") == ""
    assert weights_key({"s": 2, "d": 2}, "sd") == ""
    assert weights_key('{"s": 0.5, "d": 0.5}', "sd") == ""
    assert weights_key({"s": 0.1, "d": 0.9}, "sd") == weights_key([1, 9], "sd") == "s=0.1,d=0.9"
    assert weights_key("d=9,s=1", "sd") == "s=0.1,d=0.9"
    with pytest.raises(ValueError, match="not in tasks"):
        weights_key({"n": 1.0}, "sd")
    with pytest.raises(ValueError, match="2 weights"):
        weights_key([1.0, 2.0], "sdn")


def test_make_run_data_validates_input():
    ok = pd.DataFrame({"trial_id": ["a"], "tasks": ["ds"]})
    run = make_run_data(ok)
    assert run.trials.loc[0, "tasks"] == "sd" and run.trials.loc[0, "main"] == "d"
    with pytest.raises(ValueError, match="unknown task 'x'"):
        make_run_data(pd.DataFrame({"trial_id": ["a"], "tasks": ["dx"]}))
    with pytest.raises(ValueError, match="main task 'n'"):
        make_run_data(pd.DataFrame({"trial_id": ["a"], "tasks": ["ds"], "main": ["n"]}))
    with pytest.raises(ValueError, match="appears twice"):
        make_run_data(pd.DataFrame({"trial_id": ["a", "a"], "tasks": ["d", "s"]}))
    with pytest.raises(ValueError, match="stage must be"):
        make_run_data(pd.DataFrame({"trial_id": ["a"], "tasks": ["d"], "stage": [3]}))
    bad_hist = pd.DataFrame({"trial_id": ["zz"], "epoch": [0]})
    with pytest.raises(ValueError, match="unknown trial_id 'zz'"):
        make_run_data(ok, None, bad_hist)


def test_target_is_the_worst_strong_attack_on_the_main_task():
    run = fake_run()
    combos = combinations(run).set_index("combo")
    assert len(combos) == 9
    for tasks, target in TARGETS.items():
        row = combos.loc[tasks]
        assert row["target"] == pytest.approx(target)  # APGD; FGSM (+5) ignored
        assert row["target_attack"] == "apgd/single"
        assert row["n_target"] == 1
    weighted = combos.loc["sd[s=0.1,d=0.9]"]
    assert weighted["target"] == pytest.approx(1.1) and weighted["weights"] == "s=0.1,d=0.9"
    assert list(combinations(run)["tasks"])[:2] == ["dn", "dnE"]  # best first


def test_the_search_vuln_is_the_target_when_recorded():
    trials, attacks, history = fake_frames()
    trials.loc[trials["trial_id"] == "t2-dn-u", "vuln"] = 3.25  # the search's aggregate
    config = {"attack": {"ensemble": ["pgd", "apgd", "wgd"], "aggregate": "worst"}}
    combos = combinations(make_run_data(trials, attacks, history, config=config))
    row = combos.set_index("combo").loc["dn"]
    assert row["target"] == 3.25 and row["target_attack"] == "worst of pgd/apgd/wgd"
    assert combos["combo"].iloc[-1] == "dn"  # now the most vulnerable


def test_several_encoders_make_separate_combinations():
    trials = pd.DataFrame(
        {
            "trial_id": ["a", "b"],
            "tasks": ["sd", "sd"],
            "main": ["d", "d"],
            "encoder": ["resnet18", "resnet50"],
            "vuln": [1.0, 2.0],
        }
    )
    combos = combinations(make_run_data(trials)).set_index("combo")
    assert combos.loc["sd@resnet18", "target"] == 1.0
    assert combos.loc["sd@resnet50", "target"] == 2.0


def test_repeats_are_averaged_and_unfinished_targets_ignored():
    trials = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c"],
            "tasks": ["d", "d", "sd"],
            "stage": [2, 2, 2],
            "status": ["completed", "completed", "failed"],
        }
    )
    attacks = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c"],
            "attack": ["pgd"] * 3,
            "attacked": ["d"] * 3,
            "task": ["d"] * 3,
            "rel_vuln": [1.0, 2.0, 9.0],
        }
    )
    combos = combinations(make_run_data(trials, attacks)).set_index("combo")
    assert combos.loc["d", "target"] == pytest.approx(1.5)
    assert combos.loc["d", "n_target"] == 2
    assert math.isnan(combos.loc["sd", "target"])


def test_analysis_finds_the_perfect_surrogate():
    table = analyze(fake_run(), n_resamples=99).set_index("surrogate")
    assert list(table.reset_index().columns) == list(ANALYSIS_COLUMNS)
    assert {
        "vuln@1",
        "vuln@2",
        "vuln@3",
        "surrogate_vuln",
        "clean_error",
        "grad_bound@0",
        "grad_bound@1",
    } <= set(table.index)
    perfect = table.loc["vuln@3"]
    assert perfect["n"] == 9
    assert perfect["pearson_r"] == pytest.approx(1.0)
    assert perfect["regret"] == 0.0 and perfect["top1_hit"]
    assert perfect["pick"] == "dn"
    # vuln@1 carries noise: its correlation is scipy's on the same numbers
    x = [TARGETS[k] + NOISE_EPOCH1[k] for k in sorted(TARGETS)] + [1.1 + 0.3]
    y = [TARGETS[k] for k in sorted(TARGETS)] + [1.1]
    assert table.loc["vuln@1", "pearson_r"] == pytest.approx(stats.pearsonr(x, y).statistic)
    # compute: 9 combos x 10 s of stage 1 until epoch 1, + the top-3's stage-2 seconds
    _, cost_s, _ = surrogate_values(fake_run())
    assert cost_s.loc["dn", "vuln@1"] == 10.0
    assert cost_s.loc["dn", "grad_bound@0"] == 0.0
    assert table.loc["vuln@1", "cost_unit"] == "s"
    assert 0 < table.loc["vuln@1", "compute_saved"] < 1
    assert table.loc["vuln@1", "surrogate_source"] == "stage 1"


def test_analysis_restricted_to_named_surrogates():
    table = analyze(fake_run(), surrogates=["vuln@3", "clean_error"], n_resamples=9)
    assert list(table["surrogate"]) == ["vuln@3", "clean_error"]
    with pytest.raises(ValueError, match="unknown surrogate 'nope'"):
        analyze(fake_run(), surrogates=["nope"])


def test_analysis_without_stage1_reads_stage2_history():
    trials, attacks, history = fake_frames()
    # move the stage-1 history onto the stage-2 trials and drop stage 1
    history["trial_id"] = history["trial_id"].str.replace("t1-", "t2-")
    trials = trials[trials["stage"] == 2]
    run = make_run_data(trials, attacks, history)
    table = analyze(run, n_resamples=9).set_index("surrogate")
    assert table.loc["vuln@3", "pearson_r"] == pytest.approx(1.0)
    assert table.loc["vuln@3", "surrogate_source"].startswith("stage 2")


def test_analysis_without_targets_or_with_too_few_is_nan_with_a_note():
    trials, attacks, history = fake_frames()
    no_target = make_run_data(trials, None, history)
    table = analyze(no_target, n_resamples=9)
    assert len(table) > 0 and table["pearson_r"].isna().all()
    assert table["note"].str.contains("no target").all()
    rec = recommendation(no_target, table)
    assert rec["status"] == "surrogate" and rec["tasks"] == "dn"

    keep = trials[(trials["stage"] == 1) | trials["trial_id"].isin(["t2-d-u", "t2-sd-u"])]
    few = make_run_data(keep, attacks[attacks["trial_id"].isin(keep["trial_id"])], history)
    row = analyze(few, n_resamples=9).set_index("surrogate").loc["vuln@3"]
    assert row["n"] == 2 and math.isnan(row["pearson_r"])
    assert "needs >= 5" in row["note"]
    assert row["regret"] == 0.0  # the ranking of 2 is still scored
    assert row["cost_unit"] == "s"  # combinations without a target do not force epochs


def test_format_analysis_prints_every_surrogate():
    table = analyze(fake_run(), n_resamples=9)
    text = format_analysis(table)
    assert "Pearson r" in text and "regret" in text
    for name in table["surrogate"]:
        assert name in text


def test_recommendation_and_compute_summary():
    run = fake_run()
    rec = recommendation(run, analyze(run, n_resamples=9))
    assert rec["status"] == "target" and rec["tasks"] == "dn"
    assert rec["baseline"] == pytest.approx(1.0)
    assert rec["change"] == pytest.approx(-0.3)
    assert rec["surrogate"]["regret"] == 0.0
    comp = compute_summary(run).set_index("stage")
    assert comp.loc[1, "trials"] == 9 and comp.loc[1, "wall_s"] == pytest.approx(270.0)
    assert comp.loc[2, "epochs"] == 90


# --------------------------------------------------------------------------------------------
# Paper-style tables


def heatmap_run():
    """Single- and two-task models of s, d, n: baseline, a weighted sd, and an unrun pair."""
    trials = pd.DataFrame(
        {
            "trial_id": ["d", "s", "sd", "sd-w", "dn", "sdn"],
            "tasks": ["d", "s", "sd", "sd", "dn", "sdn"],
            "main": ["d", "s", "d", "d", "d", "d"],
            "weights": [None, None, None, '{"s": 0.1, "d": 0.9}', None, None],
        }
    )
    rows = [
        # trial, attack, attacked, task, value
        ("d", "pgd", "d", "d", 5.0),
        ("s", "pgd", "s", "s", 0.8),
        ("sd", "pgd", "d", "d", 5.6),  # single-task attack on d: cell (d, s)
        ("sd", "pgd", "s", "s", 0.9),  # single-task attack on s: cell (s, d)
        ("sd", "pgd", "sd", "d", 2.0),  # multi-task attack: cells (d, s) and (s, d)
        ("sd", "pgd", "sd", "s", 0.85),
        ("sd-w", "pgd", "d", "d", 1.25),
        ("dn", "pgd", "d", "d", 6.9),
        ("dn", "apgd", "d", "d", 17.0),
        ("sdn", "pgd", "d", "d", 99.0),  # three tasks: not in the pair tables
    ]
    attacks = pd.DataFrame(rows, columns=["trial_id", "attack", "attacked", "task", "rel_vuln"])
    return make_run_data(trials, attacks)


def test_heatmap_tables_have_the_right_cells():
    cells = pair_cells(heatmap_run())
    single = heatmap_table(cells, attack="pgd", mode="single")
    assert list(single.index) == ["s", "d", "n"] and list(single.columns) == ["s", "d", "n"]
    assert single.loc["d", "d"] == 5.0 and single.loc["s", "s"] == 0.8
    assert single.loc["d", "s"] == 5.6 and single.loc["s", "d"] == 0.9
    assert single.loc["d", "n"] == 6.9
    assert math.isnan(single.loc["n", "d"]) and math.isnan(single.loc["s", "n"])
    multi = heatmap_table(cells, attack="pgd", mode="multi")
    assert multi.loc["d", "s"] == 2.0 and multi.loc["s", "d"] == 0.85
    assert multi.loc["d", "d"] == 5.0  # a single-task model: all tasks = the main task
    assert math.isnan(multi.loc["d", "n"])  # dn was only attacked on d alone
    weighted = heatmap_table(cells, attack="pgd", mode="single", weighting="weighted")
    assert weighted.loc["d", "s"] == 1.25
    assert weighted.notna().sum().sum() == 1
    apgd = heatmap_table(cells, attack="apgd", mode="single")
    assert apgd.loc["d", "n"] == 17.0 and apgd.notna().sum().sum() == 1
    assert 99.0 not in cells["value"].to_numpy()
    with pytest.raises(ValueError, match="mode must be one of single, multi"):
        heatmap_table(cells, attack="pgd", mode="both")


def test_heatmap_panels_list_only_nonempty_tables():
    panels = heatmap_panels(pair_cells(heatmap_run()))
    keys = [(p["attack"], p["weighting"], p["mode"]) for p in panels]
    assert keys == [
        ("pgd", "baseline", "single"),
        ("pgd", "baseline", "multi"),
        ("pgd", "weighted", "single"),
        ("apgd", "baseline", "single"),
    ]


def test_enable_chain_by_hand():
    values = {"d": 1.0, "sd": 2.0, "dn": 0.5, "sdn": 1.5}
    least = enable_chain(values, "d", "sdn")
    assert list(least["tasks"]) == ["d", "dn", "sdn"]
    assert list(least["added"]) == ["", "n", "s"]
    assert least["effect"].iloc[1:].tolist() == pytest.approx([-0.5, 1.0])
    most = enable_chain(values, "d", "sdn", order="most")
    assert list(most["tasks"]) == ["d", "sd", "sdn"]
    assert most["effect"].iloc[1:].tolist() == pytest.approx([1.0, -0.5])
    given = enable_chain(values, "d", "sn", order="given")
    assert list(given["tasks"]) == ["d", "sd", "sdn"]
    partial = enable_chain({"d": 1.0, "dn": 2.0}, "d", "sdn")
    assert list(partial["tasks"]) == ["d", "dn"]  # sd, sdn missing: the chain stops


def test_pareto_front_by_hand():
    x = [0.1, 0.2, 0.3, 0.15, 0.3, math.nan]
    y = [0.9, 0.5, 0.1, 0.95, 0.1, 0.0]
    # (0.15, 0.95) is dominated by (0.1, 0.9); the two (0.3, 0.1) are equal: both kept
    assert pareto_front(x, y).tolist() == [True, True, True, False, True, False]


# --------------------------------------------------------------------------------------------
# The run folder adapter and the CLI


def write_fake_run_folder(root, **kw):
    """A run folder laid out as ``rts search`` writes it (``search.results``): config.yaml,
    trials.parquet (weights as JSON), history.parquet and attacks.parquet (the column names of
    ``attacks.evaluate_robustness``)."""
    trials, attacks, history = fake_frames(**kw)
    trials["weights"] = [None if w is None else json.dumps(w) for w in trials["weights"]]
    trials["aux"] = [t.replace("d", "") for t in trials["tasks"]]
    history.insert(1, "stage", 1)
    history["train_loss"] = 0.5
    attacks = attacks.rename(columns={"rel_vuln": "relative_vulnerability"})
    attacks["eps"] = 8 / 255
    root.mkdir(parents=True, exist_ok=True)
    trials.to_parquet(root / "trials.parquet")
    history.to_parquet(root / "history.parquet")
    attacks.to_parquet(root / "attacks.parquet")
    (root / "config.yaml").write_text(yaml.safe_dump({"name": "fake", "search": {"main": "d"}}))
    return root


def test_load_run_roundtrip(tmp_path):
    run = load_run(write_fake_run_folder(tmp_path / "run"))
    assert run.config["name"] == "fake"
    assert len(run.trials) == 18 and run.path == tmp_path / "run"
    expected = combinations(fake_run()).drop(columns=["surrogate_trials"])
    got = combinations(run).drop(columns=["surrogate_trials"])
    pd.testing.assert_frame_equal(got, expected)


def test_load_run_missing_folder_or_results(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run folder"):
        load_run(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"trials\.parquet"):
        load_run(tmp_path)


def test_cli_analyze_writes_csv_and_parquet(tmp_path, capsys):
    root = write_fake_run_folder(tmp_path / "run")
    assert main(["analyze", str(root), "--resamples", "49", "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "vuln@3" in out and "Pearson r" in out and "analysis.csv" in out
    csv = pd.read_csv(root / "analysis.csv")
    parquet = pd.read_parquet(root / "analysis.parquet")
    assert list(csv.columns) == list(ANALYSIS_COLUMNS) == list(parquet.columns)
    assert len(csv) == len(parquet) == 7
    row = parquet.set_index("surrogate").loc["vuln@3"]
    assert row["pearson_r"] == pytest.approx(1.0) and row["k"] == 2
    assert not list(root.glob(".*.tmp"))  # atomic writes leave no temp files


def test_cli_analyze_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rts: error: no run folder") and err.count("\n") == 1
    root = write_fake_run_folder(tmp_path / "run")
    assert main(["analyze", str(root), "--surrogates", "bogus"]) == 2
    assert "unknown surrogate 'bogus'; choose from" in capsys.readouterr().err
