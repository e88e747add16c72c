"""Results logic without Ray: stage-2 selection, Pareto ranks, the summary, the plan."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pandas as pd
import pytest

from rts.search.config.convert import load_config
from rts.search.engine.faults import failure_reason
from rts.search.engine.plan import asha_expected_epochs, plan_search
from rts.search.engine.space import Space
from rts.search.results.collect import candidate_columns
from rts.search.results.pareto import pareto_ranks
from rts.search.results.select import rank_stage1, select_stage2
from rts.search.results.summary import format_summary, summarize


def sp(**kw) -> Space:
    base = dict(main="d", pool="sDnk", min_aux=0, max_aux=2, encoders=("resnet18",))
    return Space(**{**base, **kw})


def row(tid, aux, vuln, *, status="completed", epochs=3, clean=0.5, scheme="uniform", w=None):
    space = sp(schemes=("uniform", "searched"))
    cand = space.candidate(aux, scheme, "resnet18", w)
    return {
        "trial_id": tid,
        "stage": 1,
        **candidate_columns(cand),
        "status": status,
        "epochs": epochs,
        "vuln": vuln,
        "clean_error": clean,
        "cost_units": float(epochs),
        "wall_s": 1.0,
    }


def test_pareto_ranks_match_brute_force():
    rng = random.Random(0)
    points = [(rng.randint(0, 5), rng.randint(0, 5)) for _ in range(40)]
    ranks = pareto_ranks([p[0] for p in points], [p[1] for p in points])
    front = {
        i
        for i, p in enumerate(points)
        if not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points)
    }
    assert {i for i, r in enumerate(ranks) if r == 0} == front
    for i, p in enumerate(points):  # a point is dominated only by points of lower rank
        for j, q in enumerate(points):
            if q[0] <= p[0] and q[1] <= p[1] and q != p:
                assert ranks[j] < ranks[i]


def test_ranking_puts_completed_first_then_by_epochs_reached():
    trials = pd.DataFrame(
        [
            row("s1-0001", "s", 0.2, status="pruned", epochs=1),
            row("s1-0002", "k", 0.9),
            row("s1-0003", "n", 0.1, status="failed", epochs=0),
            row("s1-0004", "D", 0.5, status="pruned", epochs=2),
            row("s1-0005", "sk", 0.4),
        ]
    )
    assert list(rank_stage1(trials)["trial_id"]) == ["s1-0005", "s1-0002", "s1-0004", "s1-0001"]


def test_stage2_selection_dedupes_adds_baseline_and_twins():
    space = sp(schemes=("uniform", "searched"))
    trials = pd.DataFrame(
        [
            row("s1-0001", "sk", 0.3),
            row("s1-0002", "sk", 0.3),  # duplicate of 0001: same tasks and weights
            row("s1-0003", "", 0.35),  # the baseline never takes a top-k place
            row("s1-0004", "s", 0.4, scheme="searched", w={"s": 0.1}),
            row("s1-0005", "s", 0.45),  # the uniform twin of 0004, sampled in stage 1
            row("s1-0006", "k", 0.5),
        ]
    )
    entries = select_stage2(trials, space, top_k=2, uniform_twins=True)
    got = [(e.role, e.candidate.aux, e.candidate.scheme, e.surrogate_trial_id) for e in entries]
    assert got == [
        ("top", "sk", "uniform", "s1-0001"),
        ("top", "s", "searched", "s1-0004"),
        ("uniform-twin", "s", "uniform", "s1-0005"),
        ("baseline", "", "uniform", "s1-0003"),
    ]
    assert select_stage2(trials, space, top_k=2, uniform_twins=True) == entries  # pure
    plain = select_stage2(trials, space, top_k=5, uniform_twins=False)
    assert [e.candidate.aux for e in plain if e.role == "top"] == ["sk", "s", "s", "k"]


def test_ranking_and_selection_by_another_stage1_metric():
    trials = pd.DataFrame(
        [
            {**row("s1-0001", "s", 0.2), "grad_bound_all": 0.9},
            {**row("s1-0002", "k", 0.9), "grad_bound_all": 0.1},
            {**row("s1-0003", "n", 0.5), "grad_bound_all": math.nan},  # not recorded: unranked
            {**row("s1-0004", "", 0.1), "grad_bound_all": 0.05},
        ]
    )
    ranked = rank_stage1(trials, metric="grad_bound_all")
    assert list(ranked["trial_id"]) == ["s1-0004", "s1-0002", "s1-0001"]
    assert list(rank_stage1(trials)["trial_id"]) == ["s1-0004", "s1-0001", "s1-0003", "s1-0002"]
    entries = select_stage2(
        trials, sp(), top_k=1, uniform_twins=False, metric="grad_bound_all", baseline=False
    )
    assert [(e.role, e.candidate.aux) for e in entries] == [("top", "k")]
    # A metric the table never recorded ranks nothing (no silent fallback to vuln).
    assert rank_stage1(trials, metric="grad_bound").empty


def test_pareto_selection_prefers_the_front():
    trials = pd.DataFrame(
        [
            row("s1-0001", "s", 0.30, clean=0.9),
            row("s1-0002", "k", 0.31, clean=0.1),  # on the front with 0001
            row("s1-0003", "n", 0.305, clean=0.95),  # dominated by 0001
        ]
    )
    entries = select_stage2(trials, sp(), top_k=2, uniform_twins=False, pareto=True)
    assert [e.candidate.aux for e in entries if e.role == "top"] == ["s", "k"]


def stage2_table() -> pd.DataFrame:
    rows = [
        row("s2-0001", "sk", 0.6, epochs=10, clean=0.3),
        row("s2-0002", "s", 0.5, epochs=10, clean=0.35, scheme="searched", w={"s": 0.1}),
        row("s2-0003", "s", 0.7, epochs=10, clean=0.32),
        row("s2-0004", "", 0.8, epochs=10, clean=0.25),
        row("s2-0005", "k", math.nan, status="failed", epochs=0),
    ]
    for r in rows:
        r["stage"] = 2
    return pd.DataFrame(rows)


def test_summary_compares_with_baseline_uniform_and_exhaustive():
    stage1 = pd.DataFrame(
        [row("s1-0001", "sk", 0.3), row("s1-0002", "k", 0.5, status="pruned", epochs=1)]
    )
    space = sp(schemes=("uniform", "searched"))
    s = summarize(
        stage1, stage2_table(), space, stage2_epochs=10, aggregate="worst", attacks=("pgd",)
    )
    assert (s.recommended_trial, s.recommended_aux, s.vuln) == ("s2-0002", "s", 0.5)
    assert json.loads(s.recommended_weights) == {"s": 0.1, "d": 1.0}
    assert s.baseline_vuln == 0.8 and s.uniform_vuln == 0.7
    assert (s.best_uniform_aux, s.best_uniform_vuln) == ("sk", 0.6)
    assert (s.stage1_completed, s.stage1_pruned, s.stage2_failed) == (1, 1, 1)
    assert s.cost_units == 3 + 1 + 4 * 10 + 0
    # 11 subsets x 2 schemes, 10 epochs of resnet18 (cost 1) each
    assert (s.exhaustive_configs, s.exhaustive_units) == (22, 220)
    text = format_summary(s, "runs/x")
    assert (
        "Recommended auxiliary set: {s} (train d + {s}, encoder resnet18, weights s=0.1,d=1;"
        in text
    )
    assert "| single-task baseline | 0.8 (-37.5% for the recommendation)" in text
    assert "| same tasks, uniform weights | 0.7 (-28.6% for the recommendation)" in text
    assert "20.0% of an exhaustive search (22 configurations, 220.0 units)" in text
    assert json.loads(s.to_json())["vuln"] == 0.5


def test_summary_when_the_baseline_wins_and_when_nothing_completed():
    table = stage2_table()
    table.loc[table["aux"] == "", "vuln"] = 0.1
    s = summarize(table.iloc[:0], table, sp(), stage2_epochs=1, aggregate="worst", attacks=())
    assert s.recommended_aux == "" and "Recommended: no auxiliary task" in format_summary(s)
    none = summarize(
        table.iloc[:0], table.iloc[4:], sp(), stage2_epochs=1, aggregate="worst", attacks=()
    )
    assert none.recommended_trial == "" and "no recommendation" in format_summary(none)


def test_asha_expected_epochs_by_hand():
    assert asha_expected_epochs(3, 1, 2) == 1 + 1 / 2 + 1 / 4
    assert asha_expected_epochs(9, 1, 3) == 1 + 2 / 3 + 6 / 9
    assert asha_expected_epochs(4, 4, 2) == 4
    assert asha_expected_epochs(5, 1, 2, "fifo") == 5


def test_plan_counts():
    cfg = load_config(
        None,
        [
            "stage1.design=sampler",  # 8 proposals, ASHA's rungs
            "stage1.model=none",
            "search.pool=sDnk",
            "search.max_aux=2",
            "search.n_trials=8",
            "weighting.schemes=[uniform,searched]",
            "stage2.top_k=3",
        ],
    )
    plan = plan_search(cfg)
    assert plan.configurations == 22 and plan.continuous and plan.subsets == 11
    assert plan.stage1_trials == 8 and plan.stage1_epochs_max == 24
    assert plan.stage2_trials_max == 3 + 3 + 1  # top 3, their twins, the baseline
    grid = ["search.pool=sk", "search.sampler=grid", "stage1.design=sampler", "stage1.model=none"]
    assert plan_search(load_config(None, grid)).stage1_trials == 4  # each once, whatever n_trials
    default = plan_search(load_config(None, ["search.pool=sDnk", "search.max_aux=2"]))
    assert (default.stage1_trials, default.stage1_epochs_max) == (5, 50)  # pairs in full
    assert default.stage2_trials_max == 2  # the 2 best-predicted; the baseline is reused
    assert default.units_expected / default.exhaustive_units == pytest.approx(7 / 11)


class _Cause(Exception):
    pass


def test_failure_reason_is_the_original_exception():
    class RayTaskErrorLike(Exception):
        def __init__(self, cause):
            super().__init__("ray::ImplicitFunc.train()\n  traceback ...\nRuntimeError: boom")
            self.cause = cause

    assert failure_reason(RayTaskErrorLike(_Cause("bad\nthing happened"))) == (
        "_Cause: thing happened"
    )
    assert failure_reason(ValueError("x")) == "ValueError: x"
    assert failure_reason(None) == ""


def test_rank_ignores_nan_vulnerability():
    trials = pd.DataFrame([row("s1-0001", "s", math.nan), row("s1-0002", "k", 0.4)])
    assert list(rank_stage1(trials)["trial_id"]) == ["s1-0002"]


@pytest.mark.parametrize("k", [0, 1])
def test_top_k_zero_still_trains_the_baseline(k):
    trials = pd.DataFrame([row("s1-0001", "s", 0.3)])
    entries = select_stage2(trials, sp(), top_k=k, uniform_twins=True)
    assert [e.role for e in entries] == ["top"] * k + ["baseline"]


def test_a_trial_without_a_saved_config_means_the_stage_was_interrupted(tmp_path):
    """Ctrl-C can stop a trial before Ray writes its params.json: resume, don't crash."""
    from types import SimpleNamespace

    from rts.search.engine.experiment import SearchInterrupted, check_complete

    done = SimpleNamespace(config={"candidate": {"main": "d"}}, path=str(tmp_path / "a"))
    unsaved = SimpleNamespace(config={}, path=str(tmp_path / "b"))

    class Grid(list):
        num_terminated = 1
        num_errors = 1

    paths = SimpleNamespace(location=str(tmp_path))
    with pytest.raises(SearchInterrupted, match="1 of 2 trials finished"):
        check_complete(Grid([done, unsaved]), 2, 2, paths)
    Grid.num_errors = 0
    Grid.num_terminated = 2
    check_complete(Grid([done, done]), 2, 2, paths)  # complete: no error


def test_summary_flags_models_without_skill_and_distrusts_such_a_recommendation():
    table = stage2_table()
    table["skill"] = 0.7
    table["spread"] = 0.9
    table.loc[table["trial_id"] == "s2-0002", "skill"] = -4.1  # the recommendation (d+s)
    table.loc[table["aux"] == "", "spread"] = 0.01  # the baseline ignores the image
    s = summarize(table.iloc[:0], table, sp(), stage2_epochs=1, aggregate="worst", attacks=())
    assert (s.recommended_aux, s.skill, s.baseline_skill) == ("s", -4.1, 0.7)
    assert len(s.skill_flags) == 2
    text = format_summary(s)
    first = text.splitlines()[2]
    assert first.startswith("**Not trusted**") and "skill -4.10" in first
    assert "d+s: main-task skill -4.10: worse than the training mean" in text
    assert "d: main-task skill 0.70 but its d prediction barely changes" in text


def test_summary_of_models_that_learned_raises_no_flag():
    table = stage2_table().assign(skill=0.6, spread=0.8)
    s = summarize(table.iloc[:0], table, sp(), stage2_epochs=1, aggregate="worst", attacks=())
    assert s.skill_flags == () and "Not trusted" not in format_summary(s)
    assert "| recommended: d + {s} | 0.5 | 0.35 | 0.6 |" in format_summary(s)


def _images(levels: dict[str, float], noise: float, n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.1, 1.0, n)
    rows = []
    for tid, level in levels.items():
        adv = clean * (1 + level + rng.normal(0, noise, n))
        rows += [
            {"trial_id": tid, "attack": "worst", "image": i, "clean_error": c, "adv_error": a}
            for i, (c, a) in enumerate(zip(clean, adv, strict=True))
        ]
    return pd.DataFrame(rows)


def test_summary_with_per_image_errors_gives_intervals_ties_and_the_baseline_test():
    table = stage2_table().assign(skill=0.6)  # s2-0001 baseline (0.8), s2-0002 d+s (0.5), ...
    levels = dict(zip(table["trial_id"], table["vuln"], strict=True))
    levels.pop("s2-0005")  # failed
    clear = _images(levels, noise=0.02)

    def summary(images: pd.DataFrame):
        return summarize(
            table.iloc[:0],
            table,
            sp(),
            stage2_epochs=1,
            aggregate="worst",
            attacks=("pgd",),
            images=images,
        )

    s = summary(clear)
    assert s.significant is True and s.vuln_low < s.vuln < s.vuln_high
    assert s.vs_baseline[2] < 0
    text = format_summary(s)
    assert "significantly more robust than the single-task model" in text
    assert "| recommended: d + {s} | 0.5" in text and "[" in text.split("recommended:")[1]
    # the uniform twin (s2-0003, 0.7) and the best uniform alternative (s2-0001, 0.6) too
    assert s.uniform_low < 0.7 < s.uniform_high and s.best_uniform_low < 0.6 < s.best_uniform_high
    # every value shown is the statistic of the per-image rows its interval comes from
    assert f"| same tasks, uniform weights | {s.uniform_vuln:.4g} [" in text
    assert f"| best uniform-weight alternative: d + {{s, k}} | {s.best_uniform_vuln:.4g} [" in text
    for v, lo, hi in [
        (s.vuln, s.vuln_low, s.vuln_high),
        (s.uniform_vuln, s.uniform_low, s.uniform_high),
        (s.best_uniform_vuln, s.best_uniform_low, s.best_uniform_high),
        (s.baseline_vuln, s.baseline_low, s.baseline_high),
    ]:
        assert lo <= v <= hi
    noisy = _images({k: 0.5 for k in levels}, noise=0.6, n=12)
    t = summary(noisy)
    assert t.significant is False
    text = format_summary(t)
    assert text.splitlines()[2].startswith("**Not significant**")
    assert "within the noise" in text and "%" not in text.split("single-task baseline")[1][:60]
    assert len(t.tied) >= 2 and "Tied with the recommendation" in text
