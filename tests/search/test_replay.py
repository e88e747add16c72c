"""Replay: trials answered from measured tables (Standley et al.'s), the HOA model, reuse, and
the real-table benchmark's scoring."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.taskgrouping import compute_fraction, score_pick
from rts.search.config.convert import load_config, resolve
from rts.search.config.replay import read_replay, read_table
from rts.search.config.schema import ConfigError, reuses_stage1
from rts.search.engine.replay import NotMeasured, replay_trial
from rts.search.engine.space import Space
from rts.search.engine.trial import TrialSession, build_spec
from rts.search.results.effects import fit_effects, rank_subsets

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "benchmarks" / "data" / "taskgrouping"
REPLAY = [
    f"replay.tables={{1.0: '{DATA / 'results.txt'}', 0.2: '{DATA / 'results_20.txt'}'}}",
    "replay.columns=[s,d,n,k,e]",
    "replay.skip_rows=1",
    "search.main=d",
    "search.pool=snke",
    "search.max_aux=4",
    "search.encoders=resnet18",
    "stage2.epochs=5",
    "search.deterministic=true",
    "tracking.tensorboard=false",
]


def replayed(cfg, aux: str, stage: int, epochs: int) -> list[dict]:
    """Every report of a replayed trial of ``aux`` trained ``epochs`` epochs."""
    space = Space.from_config(cfg)
    spec = build_spec(cfg, space.candidate(aux, "uniform", "resnet18"), stage)
    spec = spec.__class__(**{**spec.__dict__, "epochs": epochs})
    reports: list[dict] = []
    replay_trial(spec, TrialSession("t", lambda m, w=None: reports.append(dict(m))))
    return reports


def test_replay_reproduces_every_set_at_both_fractions():
    cfg = resolve(load_config(None, REPLAY))
    full = read_table(str(DATA / "results.txt"), tuple("sdnke"), 1)
    early = read_table(str(DATA / "results_20.txt"), tuple("sdnke"), 1)
    sets = [t for t in full if "d" in t]
    assert len(sets) == 16
    for tasks in sets:
        aux = tasks.replace("d", "")
        reports = replayed(cfg, aux, 2, 5)
        assert [r["epoch"] for r in reports] == [1, 2, 3, 4, 5]
        assert reports[0]["vuln"] == early[tasks]["d"]  # epoch 1 of 5 = 20 %
        assert reports[-1]["vuln"] == full[tasks]["d"]
        assert reports[-1]["clean_error"] == full[tasks]["d"]


def test_replay_refuses_a_set_the_table_lacks(tmp_path):
    table = tmp_path / "full.csv"
    pd.DataFrame({"a": [0.5, 0.4, np.nan], "b": [np.nan, 0.3, 0.2]}).to_csv(table, index=False)
    early = tmp_path / "early.csv"
    pd.DataFrame({"a": [0.9], "b": [np.nan]}).to_csv(early, index=False)
    over = [
        f"replay.tables={{1.0: '{table}', 0.5: '{early}'}}",
        "replay.columns=[d,s]",
        "search.main=d",
        "search.pool=s",
        "search.encoders=resnet18",
        "stage2.epochs=2",
    ]
    cfg = resolve(load_config(None, over))
    assert replayed(cfg, "", 2, 2)[-1]["vuln"] == 0.5
    with pytest.raises(NotMeasured, match=r"'sd'.*0\.5 of training"):  # a missing early cell
        replayed(cfg, "s", 1, 1)
    assert read_replay(cfg.replay).value("s", "s", 1.0) == 0.2


def test_replay_config_errors_name_the_value():
    with pytest.raises(ConfigError, match=r"replay.columns: has no column for task\(s\) 'r'"):
        load_config(None, [*REPLAY, "search.pool=snker", "search.max_aux=5"])
    with pytest.raises(ConfigError, match="needs the full-training values"):
        load_config(None, [*REPLAY, f"replay.tables={{0.2: '{DATA / 'results_20.txt'}'}}"])
    with pytest.raises(ConfigError, match=r"has 5 columns, replay\.columns names 4"):
        load_config(
            None, [*REPLAY, "replay.columns=[s,d,n,k]", "search.pool=snk", "search.max_aux=3"]
        )


def test_hoa_predicts_the_mean_of_pairs_and_skips_a_missing_pair():
    # main alone 1.0; pairs: s 0.8, n 0.6, k missing; a triple (ignored by HOA)
    model = fit_effects(["", "s", "n", "sn"], [1.0, 0.8, 0.6, 5.0], "snk", "hoa")
    subsets = ["", "s", "sn", "snk", "sk", "k"]
    pred = dict(zip(subsets, model.predict(subsets), strict=True))
    assert pred[""] == 1.0 and pred["s"] == 0.8
    assert pred["sn"] == pytest.approx(0.7)
    assert pred["snk"] == pytest.approx(0.7)  # k's pair is missing: the mean of s and n
    assert pred["sk"] == pytest.approx(0.8)
    assert math.isnan(pred["k"])
    order = rank_subsets(model, ["k", "sn", "s"])
    assert list(order["aux"]) == ["sn", "s", "k"]  # unpredicted last


def test_scoring_ranks_ties_and_regret():
    test = {"": 0.5, "a": 0.2, "b": 0.2, "ab": 0.9}
    assert score_pick(test, "a") == (1, 0.0)
    assert score_pick(test, "b") == (1, 0.0)  # ties take the better rank
    rank, regret = score_pick(test, "")
    assert rank == 3 and regret == pytest.approx(0.3 / 0.7)
    assert score_pick(test, "ab") == (4, 1.0)
    trials = pd.DataFrame({"epochs": [1, 1, 5, 5, 0], "cost_units": [1.0, 1.0, 5.0, 0.0, 0.0]})
    # two early lookups (0.2 each), one full training; a reused row and a failed one free
    assert compute_fraction(trials, 5, 1, 0.2) == pytest.approx(1.4)


def test_defaults_train_pairs_in_full_and_reuse_them():
    cfg = resolve(load_config(None, REPLAY))
    assert (cfg.stage1.design, cfg.stage1.model, cfg.stage1.epochs) == ("pairs", "hoa", 5)
    assert cfg.stage2.top_k == 2 and reuses_stage1(cfg)
    sampler = resolve(load_config(None, [*REPLAY, "stage1.design=sampler", "stage1.model=none"]))
    assert sampler.stage1.epochs == 3 and not reuses_stage1(sampler)


def test_dry_run_charges_reused_stage1_trials_once():
    from rts.search.engine.plan import plan_search

    plan = plan_search(load_config(None, REPLAY))
    assert (plan.stage1_trials, plan.stage2_trials_max) == (5, 2)  # baseline reused from stage 1
    assert plan.units_expected / plan.exhaustive_units == pytest.approx(7 / 16)  # as the run
    retrain = plan_search(load_config(None, [*REPLAY, "stage2.reuse=false"]))
    assert retrain.stage2_trials_max == 3 and retrain.units_expected == pytest.approx(40)


def _comparable(trials: pd.DataFrame) -> pd.DataFrame:
    keep = ["trial_id", "stage", "role", "aux", "epochs", "status", "vuln", "cost_units"]
    return trials[keep].sort_values("trial_id").reset_index(drop=True)


def test_replayed_searches_pick_right_and_resume(local_ray, tmp_path, capsys):
    from rts.search.results.pipeline import run_search

    full = read_table(str(DATA / "results.txt"), tuple("sdnke"), 1)
    best = min((t for t in full if "d" in t), key=lambda t: full[t]["d"]).replace("d", "")
    exhaustive = [
        *REPLAY,
        "name=exh",
        "stage1.design=sampler",
        "stage1.model=none",
        "search.sampler=grid",
        "search.n_trials=16",
        "stage1.epochs=5",
        "stage1.scheduler=fifo",
        "stage1.encoder=same",
    ]
    out = run_search(load_config(None, exhaustive), storage=tmp_path)
    assert out.summary.recommended_aux == best
    assert out.summary.cost_units == pytest.approx(out.summary.exhaustive_units)
    s2 = out.trials[out.trials["stage"] == 2]
    assert len(s2) == 16 and (s2["cost_units"] == 0).all()  # all reused, none retrained

    cfg = load_config(None, [*REPLAY, "name=dflt"])
    said: list[str] = []
    first = run_search(cfg, storage=tmp_path, echo=said.append)
    assert any("trained in full with stage 2's recipe; stage 2 reuses them" in s for s in said)
    ratio = first.summary.cost_units / first.summary.exhaustive_units
    assert ratio == pytest.approx(7 / 16)  # 5 pairs in full + 2 predicted sets
    from rts.search.results.summary import format_summary

    text = format_summary(first.summary)
    assert "relative vulnerability (replayed metric)" in text and "skill unknown" not in text
    s2 = first.trials[first.trials["stage"] == 2]
    assert (s2["role"] == "predicted").sum() == 2 and (s2["role"] == "baseline").sum() == 1
    # Interrupted once stage 1 had finished (stage 2's tables and experiment gone), then once
    # stage 2 had written its tables (the run's own tables gone): each rerun resumes.
    run = tmp_path / "dflt"
    for name in ("trials.parquet", "summary.json", "summary.md"):
        (run / name).unlink()
    for f in (run / "stages").glob("stage2*"):
        f.unlink()
    shutil.rmtree(run / "ray" / "stage2")
    again = run_search(cfg, storage=tmp_path)
    pd.testing.assert_frame_equal(_comparable(again.trials), _comparable(first.trials))
    (run / "trials.parquet").unlink()
    again = run_search(cfg, storage=tmp_path)
    pd.testing.assert_frame_equal(_comparable(again.trials), _comparable(first.trials))
    assert again.summary.recommended_aux == first.summary.recommended_aux
    from rts.cli import main

    capsys.readouterr()
    assert main(["analyze", str(run)]) == 0
    out = capsys.readouterr().out
    assert "early vs full training on the replayed tables" in out
    assert "main d, 0.2 of training: Spearman" in out and "over 16 task sets" in out


def test_scatter_draws_no_line_below_five_points():
    from rts.search.analysis.correlate import correlate
    from rts.search.report.plots import scatter_figure

    values = pd.DataFrame({"vuln": [0.1, 0.3]}, index=["a", "b"])
    target = pd.Series([0.2, 0.5], index=["a", "b"])
    stats = correlate(values["vuln"].to_numpy(), target.to_numpy())
    assert "note" in stats and "needs >= 5" in stats["note"]
    table = pd.DataFrame([{"surrogate": "vuln", **stats}])
    for col in ("pearson_r", "pearson_lo", "pearson_hi"):
        table[col] = table.get(col, math.nan)
    fig = scatter_figure(values, target, table)
    ax = fig.axes[0]
    assert len(ax.lines) == 0 and "no correlation below 5 points" in ax.get_title()


def test_replay_correlation_spans_every_task_set():
    from rts.search.analysis.replay import replay_correlations
    from rts.search.config.convert import to_dict

    cfg = resolve(load_config(None, REPLAY))
    table = replay_correlations(to_dict(cfg))
    row = table.loc[("d", 0.2)]
    assert row["n"] == 16 and row["spearman_lo"] < row["spearman"] < row["spearman_hi"]
