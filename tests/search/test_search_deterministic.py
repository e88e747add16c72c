"""Deterministic searches (``search.deterministic: true``) on a real local Ray and real Optuna.

The fake trials sleep a random extra time per epoch, so the order in which concurrent trials
report differs from run to run; the tables must not.
"""

from __future__ import annotations

import json

import optuna
import pandas as pd
import pytest

from rts.search.config.convert import load_config
from rts.search.engine.samplers import journal_storage
from rts.search.results.pipeline import run_search
from tests.search.fake_trial import FakeTrial
from tests.search.tiny import EARLY_SCREEN

ray = pytest.importorskip("ray")

RUN_SPECIFIC = {
    "trials": ["ray_trial_id", "wall_s", "node_id", "hostname"],
    "history": ["time_s"],
    "attacks": [],
}
"""Columns that say where and how fast a trial ran, not what it found."""

SEARCH = [
    *EARLY_SCREEN,  # TPE's batches and the rung barriers are what this file tests
    "search.pool=sDnk",
    "search.max_aux=2",
    "search.n_trials=6",
    "search.batch=3",
    "search.encoders=[resnet18]",
    "search.deterministic=true",
    "stage1.epochs=2",
    "stage1.grace_period=1",
    "stage1.reduction_factor=2",
    "stage2.top_k=2",
    "stage2.epochs=1",
]


def comparable(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The tables without the columns of :data:`RUN_SPECIFIC`."""
    return {
        name: df.drop(columns=[c for c in RUN_SPECIFIC[name] if c in df.columns])
        for name, df in tables.items()
    }


def study_content(journal) -> list[tuple]:
    study = optuna.load_study(study_name="stage1", storage=journal_storage(journal))
    return [
        (t.number, t.params, t.state.name, t.values, t.intermediate_values) for t in study.trials
    ]


@pytest.fixture(scope="module")
def two_runs(local_ray, tmp_path_factory) -> dict[int, tuple]:
    """The same deterministic search at concurrency 1 and 4: ``{concurrency: (outcome, lines)}``."""
    storage = tmp_path_factory.mktemp("runs")
    runs = {}
    for concurrency, cpus in ((1, 1), (4, 0.5)):
        cfg = load_config(
            None,
            [
                f"name=c{concurrency}",
                *SEARCH,
                f"resources.max_concurrent={concurrency}",
                f"resources.cpus_per_trial={cpus}",
            ],
        )
        lines: list[str] = []
        trial = FakeTrial(jitter_s=0.15, noise=0.05, fail_on="n")
        runs[concurrency] = (
            run_search(cfg, storage=storage, trial_fn=trial, echo=lines.append),
            lines,
        )
    return runs


def test_the_same_config_gives_the_same_tables_at_concurrency_1_and_4(two_runs):
    """TPE and the halving rule see the same history whatever order the trials report in."""
    (one, lines), (four, _) = two_runs[1], two_runs[4]
    a = comparable({"trials": one.trials, "history": one.history, "attacks": one.attacks})
    b = comparable({"trials": four.trials, "history": four.history, "attacks": four.attacks})
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)
    assert one.summary.recommended_aux == four.summary.recommended_aux
    assert one.summary.vuln == four.summary.vuln
    assert study_content(one.paths.journal) == study_content(four.paths.journal)

    # The run was worth comparing: pruning decided something, a failure was told, and every
    # stage-1 trial ran a distinct candidate.
    s1 = one.trials[one.trials["stage"] == 1]
    assert len(s1) == 6 and s1["aux"].is_unique
    assert {"pruned", "completed"} <= set(s1["status"])
    assert (s1["status"] == "failed").sum() == s1["aux"].str.contains("n").sum()
    assert list(s1["trial_id"]) == [f"s1-{i:04d}" for i in range(1, 7)]
    assert "Mode: deterministic" in (one.paths.root / "summary.md").read_text()
    assert any(line.startswith("stage 1 batch 2/2:") for line in lines)


def test_a_recorded_stage_is_rebuilt_from_its_records_without_training(two_runs):
    """Stage 1 rebuilt from its batch and rung records gives the same table and study, even
    from a journal that lost the last batch (as a URI's older remote journal would)."""
    first, _ = two_runs[4]
    before = study_content(first.paths.journal)
    cfg = load_config(first.paths.config)
    first.paths.stage(1, "trials").unlink()  # as if the driver died before the stage's tables
    batch1 = json.loads((first.paths.batches / "batch0001.json").read_text())
    journal = first.paths.journal
    journal.write_bytes(journal.read_bytes()[: batch1["journal_bytes"]])
    lines: list[str] = []
    # Every trial would fail if one ran.
    again = run_search(
        cfg, storage=first.paths.root.parent, trial_fn=FakeTrial(fail_on=""), echo=lines.append
    )
    assert "stage 1: resuming after batch 1 of 2" in lines
    assert not [line for line in lines if line.startswith("stage1 b")]
    pd.testing.assert_frame_equal(
        comparable({"trials": first.trials})["trials"],
        comparable({"trials": again.trials})["trials"],
    )
    assert study_content(journal) == before
