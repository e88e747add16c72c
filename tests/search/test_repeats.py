"""Asynchronous stage 1 never trains a candidate twice (real Ray, real Optuna, fake trials).

A space of two configurations ("d" alone, "d+s") with a budget of 6 trials forces the sampler to
repeat itself: each candidate is trained once, the other slots are answered from the earlier
trial's outcome, and the summary counts the repeats.
"""

from __future__ import annotations

import json

import optuna
import pytest

from rts.search.config.convert import load_config
from rts.search.engine.samplers import journal_storage
from rts.search.results.pipeline import run_search
from tests.search.fake_trial import FakeTrial
from tests.search.tiny import EARLY_SCREEN

pytest.importorskip("ray")

N_TRIALS = 6


def test_a_repeated_proposal_is_answered_not_trained(local_ray, tmp_path):
    cfg = load_config(
        None,
        [
            "name=repeats",
            "search.pool=s",
            *EARLY_SCREEN,
            "search.max_aux=1",  # two configurations
            "search.sampler=random",
            f"search.n_trials={N_TRIALS}",
            "search.encoders=[resnet18]",
            "stage1.epochs=2",
            "stage1.scheduler=fifo",
            "stage2.top_k=1",
            "stage2.epochs=1",
            "resources.max_concurrent=2",
        ],
    )
    log_path = tmp_path / "events.jsonl"
    out = run_search(cfg, storage=tmp_path, trial_fn=FakeTrial(log_path=str(log_path)))

    starts = [json.loads(line) for line in log_path.read_text().splitlines()]
    trained = [e["aux"] for e in starts if e["event"] == "start" and e["stage"] == 1]
    assert sorted(trained) == ["", "s"]  # each candidate trained once
    s1 = out.trials[out.trials["stage"] == 1]
    assert sorted(s1["aux"]) == ["", "s"] and (s1["status"] == "completed").all()

    study = optuna.load_study(study_name="stage1", storage=journal_storage(out.paths.journal))
    told = [t for t in study.trials if t.state.is_finished()]
    assert len(told) == len(study.trials) >= N_TRIALS  # every proposal told, none left running
    repeats = [t for t in study.trials if "repeat_of" in t.user_attrs]
    assert len(repeats) == len(study.trials) - 2
    by_aux = {row["aux"]: row["vuln"] for _, row in s1.iterrows()}
    for t in repeats:  # told what the trial it repeats reported
        chose_s = t.params.get("aux_s", t.params.get("n_aux"))  # per-task or subset encoding
        assert t.value == pytest.approx(by_aux["s" if chose_s else ""])
    assert study.user_attrs["untrained_slots"] == N_TRIALS - 2

    assert out.summary.stage1_repeats == len(repeats)
    text = out.paths.summary_md.read_text()
    assert f"{len(repeats)} repeated proposal(s) answered from earlier trials" in text
