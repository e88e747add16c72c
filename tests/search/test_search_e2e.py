"""End to end on a real local Ray (2 CPUs) and real Optuna, with fake and real trials.

The fake trial (``tests.search.fake_trial``) has a closed-form oracle: auxiliary ``k`` moves
the main task's vulnerability by ``MARGINAL[k]``, identically at every epoch, so the best
configuration of a space is known without running the search.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import optuna
import pandas as pd
import pytest

from rts.search.config.convert import load_config
from rts.search.engine.samplers import journal_storage
from rts.search.engine.space import Candidate
from rts.search.results.pareto import pareto_ranks
from rts.search.results.pipeline import run_search
from tests.search.fake_trial import MARGINAL, FakeTrial, fake_vulnerability
from tests.search.tiny import EARLY_SCREEN, TINY_REAL_SEARCH

ray = pytest.importorskip("ray")

PROMISED_COLUMNS = {
    "trial_id",
    "stage",
    "role",
    "main",
    "aux",
    "tasks",
    "weights",
    "encoder",
    "trained_encoder",
    "epochs",
    "max_epochs",
    "status",
    "failure",
    "vuln",
    "clean_error",
    "cost_units",
    "wall_s",
    "node_id",
    "surrogate_trial_id",
    "surrogate_vuln",
    "surrogate_clean_error",
    "checkpoint",
}


def events(log_path) -> list[dict]:
    return [json.loads(line) for line in log_path.read_text().splitlines()]


def study_states(journal) -> dict[str, int]:
    study = optuna.load_study(study_name="stage1", storage=journal_storage(journal))
    states: dict[str, int] = {}
    for t in study.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    return states


def test_exhaustive_search_prunes_fails_and_recommends_the_oracle_best(local_ray, tmp_path):
    cfg = load_config(
        None,
        [
            "name=grid",
            *EARLY_SCREEN,
            "search.pool=sDk",
            "search.max_aux=2",
            "search.sampler=grid",
            "search.encoders=[resnet18]",
            "stage1.epochs=4",
            "stage1.grace_period=1",
            "stage1.reduction_factor=2",
            "stage2.top_k=2",
            "stage2.epochs=2",
            "resources.max_concurrent=1",
        ],
    )
    log_path = tmp_path / "events.jsonl"
    lines: list[str] = []
    out = run_search(
        cfg,
        storage=tmp_path,
        trial_fn=FakeTrial(fail_on="D", log_path=str(log_path)),
        echo=lines.append,
    )
    trials = out.trials
    assert set(trials.columns) >= PROMISED_COLUMNS
    assert trials["trial_id"].is_unique
    s1 = trials[trials["stage"] == 1].set_index("aux")
    # Exhaustive: every subset of sDk with at most 2 tasks exactly once.
    subsets = {"".join(c) for n in range(3) for c in itertools.combinations("sDk", n)}
    assert sorted(s1.index) == sorted(subsets)

    # The injected fault: recorded with its reason, the search went on.
    failed = s1[s1["status"] == "failed"]
    assert set(failed.index) == {a for a in subsets if "D" in a}
    assert set(failed["failure"]) == {"RuntimeError: injected fault: auxiliary task 'D'"}
    assert failed["vuln"].isna().all()

    # Pruned trials really stopped: no epoch beyond the one ASHA stopped them at ever ran.
    pruned = s1[s1["status"] == "pruned"]
    assert len(pruned) >= 1
    ran = pd.DataFrame(e for e in events(log_path) if e["event"] == "epoch" and e["stage"] == 1)
    last_epoch = ran.groupby("trial_id")["epoch"].max()
    for _, row in pruned.iterrows():
        assert row["epochs"] < 4
        assert last_epoch[row["ray_trial_id"]] == row["epochs"]
    completed = s1[s1["status"] == "completed"]
    assert (completed["epochs"] == 4).all()
    for aux, row in completed.iterrows():  # metrics are the oracle's
        cand = Candidate("d", aux, "uniform", row_weights(row), "resnet18")
        assert row["vuln"] == pytest.approx(fake_vulnerability(cand, "resnet18", 4))

    # The Optuna study in the journal tells the same story.
    states = study_states(out.paths.journal)
    assert states == {
        k: v
        for k, v in {
            "COMPLETE": len(completed),
            "PRUNED": len(pruned),
            "FAIL": len(failed),
        }.items()
        if v
    }

    # Stage 2: the 2 best completed candidates plus the single-task baseline.
    s2 = trials[trials["stage"] == 2]
    best_two = completed[completed.index != ""].sort_values("vuln").index[:2]
    assert set(s2.loc[s2["role"] == "top", "aux"]) == set(best_two)
    assert list(s2.loc[s2["role"] == "baseline", "aux"]) == [""]
    assert (s2["status"] == "completed").all() and (s2["epochs"] == 2).all()
    for _, row in s2.iterrows():
        sid = row["surrogate_trial_id"]
        if sid:
            assert row["surrogate_vuln"] == trials.set_index("trial_id").loc[sid, "vuln"]
        assert (out.paths.root / row["checkpoint"] / "state.json").exists()

    # The recommendation is the oracle's best among the configurations that can train.
    feasible = [a for a in subsets if "D" not in a]
    oracle = min(feasible, key=lambda a: sum(MARGINAL[k] for k in a))
    assert out.summary.recommended_aux == oracle == "sk"
    base = s2[s2["aux"] == ""].iloc[0]
    assert out.summary.baseline_vuln == pytest.approx(base["vuln"])  # its rows, re-summed
    assert out.summary.cost_units == trials["epochs"].sum()  # resnet18 costs 1 per epoch
    assert out.summary.exhaustive_units == 7 * 2  # 7 configurations x 2 target epochs

    for name in ("config.yaml", "trials.parquet", "history.parquet", "attacks.parquet"):
        assert (out.paths.root / name).exists()
    history = pd.read_parquet(out.paths.history)
    assert set(history["trial_id"]) == set(trials["trial_id"])
    assert (history.loc[history["stage"] == 1].groupby("trial_id")["epoch"].min() == 0).all()
    attacks = pd.read_parquet(out.paths.attacks)
    assert set(attacks["trial_id"]) == set(s2["trial_id"])
    assert any("failed" in line for line in lines)
    summary = (out.paths.root / "summary.md").read_text()
    assert "Recommended auxiliary set: {s, k}" in summary
    # per-image errors give every stage-2 number its interval and the baseline test
    images = pd.read_parquet(out.paths.images)
    assert set(images["trial_id"]) == set(s2.loc[s2["status"] == "completed", "trial_id"])
    assert out.summary.vuln_low < out.summary.vuln < out.summary.vuln_high
    assert out.summary.significant is True and "significantly more robust" in summary


def row_weights(row: pd.Series) -> tuple[float, ...]:
    weights = json.loads(row["weights"])
    return tuple(weights[k] for k in row["tasks"])


def test_diverged_trial_is_recorded_as_failed(local_ray, tmp_path):
    cfg = load_config(
        None,
        [
            "name=nan",
            "search.pool=sk",
            "search.max_aux=1",
            "search.sampler=grid",
            "search.encoders=[resnet18]",
            "stage1.epochs=2",
            "stage1.scheduler=fifo",
            "stage2.top_k=1",
            "stage2.epochs=1",
        ],
    )
    out = run_search(cfg, storage=tmp_path, trial_fn=FakeTrial(nan_on="k"))
    s1 = out.trials[out.trials["stage"] == 1].set_index("aux")
    assert s1.loc["k", "status"] == "failed"
    assert s1.loc["k", "failure"] == "TrialDiverged: diverged: train_loss=nan at epoch 1"
    assert set(s1.loc[["", "s"], "status"]) == {"completed"}
    assert out.summary.recommended_aux == "s"


@pytest.mark.parametrize("deterministic", [False, True], ids=["asynchronous", "deterministic"])
def test_pareto_search_with_searched_weights(local_ray, tmp_path, deterministic):
    """NSGA-II (the Pareto default) in both modes: Optuna 5.1's NSGA-II holds a thread lock, so a
    searcher that pickled its sampler with the experiment failed at the Tuner's start."""
    cfg = load_config(
        None,
        [
            "name=pareto",
            *EARLY_SCREEN,
            f"search.deterministic={str(deterministic).lower()}",
            "search.pool=sDnk",
            "search.max_aux=2",
            "search.objective=pareto",
            "search.n_trials=8",
            "search.encoders=[resnet18]",
            "weighting.schemes=[uniform,searched]",
            "stage1.epochs=2",
            "stage1.scheduler=fifo",
            "stage2.top_k=2",
            "stage2.epochs=1",
        ],
    )
    out = run_search(cfg, storage=tmp_path, trial_fn=FakeTrial())
    assert out.paths.root.name == "pareto"
    study = optuna.load_study(study_name="stage1", storage=journal_storage(out.paths.journal))
    assert len(study.directions) == 2
    s1 = out.trials[out.trials["stage"] == 1]
    assert len(s1) == 8
    for _, row in s1.iterrows():
        params = json.loads(row["params"])  # asynchronous: Optuna's own parameters too
        weight_params = {k[2:] for k in params if k.startswith("w_")}
        weights = json.loads(params["weights"])
        if row["scheme"] == "searched":
            assert weight_params == (set() if deterministic else set(row["aux"]))
            assert set(weights) == set(row["tasks"])  # weights only for the chosen tasks
            assert row[f"w_{row['main']}"] == 1.0
        else:
            assert weight_params == set()
            assert {row[f"w_{k}"] for k in row["tasks"]} == {1 / len(row["tasks"])}
    s2 = out.trials[out.trials["stage"] == 2]
    tops = s2[s2["role"] == "top"]
    for _, twin in s2[s2["role"] == "uniform-twin"].iterrows():
        assert twin["scheme"] == "uniform"
        assert ((tops["aux"] == twin["aux"]) & (tops["scheme"] == "searched")).any()
    done = s2[s2["status"] == "completed"]
    ranks = pareto_ranks(done["vuln"], done["clean_error"])
    front = {t for t, r in zip(done["trial_id"], ranks, strict=True) if r == 0}
    assert {p[0] for p in out.summary.pareto} == front
    assert out.summary.recommended_trial in front


def test_zero_training_screen_ranks_by_the_metric_and_skips_the_baseline(local_ray, tmp_path):
    """stage1.epochs=0: every subset evaluated at initialisation only (no training epoch), ranked
    by grad_bound_all (the fake's is the converged oracle), the best one alone trained in full."""
    cfg = load_config(
        None,
        [
            "name=screen",
            *EARLY_SCREEN,
            "search.pool=sDnk",
            "search.max_aux=2",
            "search.sampler=grid",
            "search.encoders=[resnet18]",
            "stage1.epochs=0",
            "stage1.scheduler=fifo",
            "stage1.metric=grad_bound_all",
            "stage2.top_k=1",
            "stage2.baseline=false",
            "stage2.epochs=2",
        ],
    )
    log_path = tmp_path / "events.jsonl"
    out = run_search(cfg, storage=tmp_path, trial_fn=FakeTrial(log_path=str(log_path)))
    s1 = out.trials[out.trials["stage"] == 1]
    subsets = {"".join(c) for n in range(3) for c in itertools.combinations("sDnk", n)}
    assert set(s1["aux"]) == subsets
    assert (s1["status"] == "completed").all() and (s1["epochs"] == 0).all()
    assert s1["cost_units"].sum() == 0
    assert not [e for e in events(log_path) if e["event"] == "epoch" and e["stage"] == 1]
    # The study minimised grad_bound_all, and every trial is complete at epoch 0.
    study = optuna.load_study(study_name="stage1", storage=journal_storage(out.paths.journal))
    assert {t.state.name for t in study.trials} == {"COMPLETE"}
    assert sorted(t.values[0] for t in study.trials) == sorted(s1["grad_bound_all"])
    # At epoch 0 the fake's vuln is 2.0 everywhere: only grad_bound_all can rank.
    assert set(s1["vuln"]) == {2.0}
    oracle = min(subsets - {""}, key=lambda a: sum(MARGINAL[k] for k in a))
    s2 = out.trials[out.trials["stage"] == 2]
    assert list(s2["aux"]) == [oracle] == ["sk"]
    assert list(s2["role"]) == ["top"]  # no single-task baseline
    assert out.summary.recommended_aux == oracle
    assert math.isnan(out.summary.baseline_vuln)
    summary = (out.paths.root / "summary.md").read_text()
    assert "| single-task baseline | not trained (stage2.baseline: false) | |" in summary
    assert "nan" not in summary


def test_stage1_metric_drives_asha_and_the_selection(local_ray, tmp_path):
    """stage1.metric=clean_error: the fake's clean error grows with every auxiliary task, the
    opposite of its vulnerability oracle, so the pick shows which metric ranked stage 1."""
    cfg = load_config(
        None,
        [
            "name=by-clean",
            *EARLY_SCREEN,
            "search.pool=sDk",
            "search.min_aux=1",
            "search.max_aux=3",
            "search.sampler=grid",
            "search.encoders=[resnet18]",
            "stage1.epochs=2",
            "stage1.scheduler=fifo",
            "stage1.metric=clean_error",
            "stage2.top_k=3",
            "stage2.epochs=1",
        ],
    )
    out = run_search(cfg, storage=tmp_path, trial_fn=FakeTrial())
    s2 = out.trials[(out.trials["stage"] == 2) & (out.trials["role"] == "top")]
    assert set(s2["aux"]) == {"s", "D", "k"}  # the three single auxiliaries: lowest clean error
    study = optuna.load_study(study_name="stage1", storage=journal_storage(out.paths.journal))
    s1 = out.trials[out.trials["stage"] == 1]
    assert sorted(t.values[0] for t in study.trials) == pytest.approx(sorted(s1["clean_error"]))


@pytest.mark.slow
def test_real_trial_end_to_end(local_ray, tmp_path):
    """The real trainable: models.train, the cheap attack every epoch, the ensemble at the end."""
    from rts.models import load_checkpoint

    cfg = load_config(None, ["name=real", *TINY_REAL_SEARCH])
    out = run_search(cfg, storage=tmp_path)
    trials = out.trials
    assert (trials["status"] == "completed").all(), trials["failure"].tolist()
    assert len(trials[trials["stage"] == 1]) == 2 and len(trials[trials["stage"] == 2]) == 2
    for col in ("vuln", "clean_error", "clean_d", "vuln_pgd", "skill", "skill_d"):
        assert trials[col].notna().all() and (trials[col] >= -1e6).all()
    assert (trials["skill"] <= 1).all() and (trials["skill"] == trials["skill_d"]).all()
    s2 = trials[trials["stage"] == 2]
    assert s2["vuln_apgd"].notna().all() and s2["vuln_wgd"].notna().all()
    # worst case per sample >= each attack's mean relative vulnerability
    for _, row in s2.iterrows():
        assert row["vuln"] >= max(row["vuln_pgd"], row["vuln_apgd"], row["vuln_wgd"]) - 1e-9
    history = pd.read_parquet(out.paths.history)
    epoch0 = history[(history["stage"] == 1) & (history["epoch"] == 0)]
    assert len(epoch0) == 2 and epoch0["grad_bound"].map(math.isfinite).all()
    # The bound of the whole training loss equals the main-task bound for the single-task model
    # and differs from it once an auxiliary task joins the loss.
    trial_tasks = trials.set_index("trial_id")["tasks"]
    # Seeded heads do not depend on the other tasks: at initialisation the main-task bound is
    # the same for both subsets, so only the whole-loss bound can rank them before training.
    assert epoch0["grad_bound"].max() == pytest.approx(epoch0["grad_bound"].min(), rel=1e-6)
    for _, row in epoch0.iterrows():
        same = row["grad_bound_all"] == pytest.approx(row["grad_bound"], rel=1e-6)
        assert math.isfinite(row["grad_bound_all"])
        assert same == (trial_tasks[row["trial_id"]] == "d")
    attacks = pd.read_parquet(out.paths.attacks)
    assert {"pgd", "apgd", "wgd", "worst"} <= set(attacks["attack"])
    # the per-image table reproduces every stage-2 trial's ranked number (mean statistic)
    images = pd.read_parquet(out.paths.images)
    for _, r in s2.iterrows():
        g = images[(images["trial_id"] == r["trial_id"]) & (images["attack"] == "worst")]
        ok = g["clean_error"] > 0
        ratios = (g["adv_error"] - g["clean_error"])[ok] / g["clean_error"][ok]
        assert len(g) == 4 and ratios.mean() == pytest.approx(r["vuln"])
    row = s2.iloc[0]
    model, meta = load_checkpoint(out.paths.root / row["checkpoint"] / "last.pt")
    # Finished stages drop Ray's per-epoch resume checkpoints (most of a run's size).
    assert not list((out.paths.root / "ray").glob("*/*/checkpoint_*"))
    assert model.tasks == row["tasks"] and meta["epoch"] == 1
    # what the data are, not how many workers decoded them (rts attack reads it back)
    assert meta["data"] == {k: v for k, v in dataclasses.asdict(cfg.data).items() if k != "workers"}
    # so `rts attack CHECKPOINT` attacks the search's own held-out images, not the defaults'.
    from rts.cli import main

    ckpt = out.paths.root / row["checkpoint"]
    again = tmp_path / "again"
    args = ["attack", str(ckpt), "--attack", "pgd", "--steps", "1", "--tasks", "d", "--n", "2"]
    assert main([*args, "--no-progress", "--out", str(again)]) == 0
    settings = json.loads((again / "attack.json").read_text())

    def what(data: dict) -> dict:  # the data themselves, not how they are read
        return {k: v for k, v in data.items() if k not in ("cache", "workers")}

    assert what(settings["data"]) == what(dataclasses.asdict(cfg.data)) and settings["n"] == 2


def test_effect_model_sends_predicted_untried_subsets_to_stage_2(local_ray, tmp_path):
    """stage1.model: additive fits the fake oracle's additive effects from a few trials and
    trains the subset it predicts best in stage 2, although stage 1 never tried it."""
    cfg = load_config(
        None,
        [
            "name=effects",
            "stage1.design=sampler",  # 8 random proposals screened, not the pairs design
            "search.pool=sDnkE",
            "search.max_aux=5",
            "search.sampler=random",
            "search.n_trials=8",
            "search.encoders=[resnet18]",
            "stage1.epochs=1",
            "stage1.scheduler=fifo",
            "stage1.model=additive",
            "stage2.top_k=2",
            "stage2.epochs=1",
            "stage2.uniform_twins=false",
        ],
    )
    out = run_search(cfg, storage=tmp_path, trial_fn=FakeTrial())
    s1 = out.trials[out.trials["stage"] == 1]
    s2 = out.trials[out.trials["stage"] == 2]
    best = "".join(k for k in "sDnkE" if MARGINAL[k] < 0)  # the oracle's best subset
    assert best == "sDkE" and best not in set(s1["aux"])  # never tried in stage 1
    predicted = s2[s2["role"] == "predicted"]
    assert len(predicted) == 2 and best in set(predicted["aux"])
    assert (predicted.loc[predicted["aux"] == best, "surrogate_trial_id"] == "").all()
    assert (s2["status"] == "completed").all()
    assert out.summary.recommended_aux == best


def test_pairs_design_trains_the_main_task_alone_and_with_each_task(local_ray, tmp_path):
    """stage1.design: pairs trains 1 + P models (no sampler, no pruning); the additive model
    fitted on them predicts the oracle's best subset, which stage 2 then trains."""
    pool = "sDnkE"
    cfg = load_config(
        None,
        [
            "name=pairs",
            f"search.pool={pool}",
            "search.max_aux=5",
            "search.encoders=[resnet18]",
            "stage1.design=pairs",
            "stage1.model=additive",
            "stage1.epochs=2",
            "stage2.top_k=1",
            "stage2.epochs=1",
            "stage2.uniform_twins=false",
        ],
    )
    out = run_search(cfg, storage=tmp_path, trial_fn=FakeTrial())
    s1 = out.trials[out.trials["stage"] == 1]
    assert sorted(s1["aux"]) == sorted(["", *pool]) and (s1["role"] == "design").all()
    assert (s1["status"] == "completed").all() and (s1["epochs"] == 2).all()
    best = "".join(k for k in pool if MARGINAL[k] < 0)
    s2 = out.trials[out.trials["stage"] == 2]
    assert set(s2["aux"]) == {best, ""} and out.summary.recommended_aux == best
