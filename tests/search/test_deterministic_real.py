"""Deterministic searches with the real trial (training, attacks) on tiny models.

A deterministic search stops trials at rung barriers and continues them from checkpoints; a kill
restores them from other checkpoints. The same tables therefore need a real trial to report the
same numbers, to the last bit, whether it ran straight through or was resumed, and whichever
process, order or concurrency it ran in: torch on CPU with fixed seeds and thread count.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from rts.search.config.convert import load_config, resolve
from rts.search.engine.space import Space
from rts.search.engine.trial import TrialSession, build_spec, run_trial
from rts.search.results.pipeline import run_search
from tests.search.test_search_deterministic import comparable
from tests.search.tiny import EARLY_SCREEN

TINY = [
    "data.size=32",
    "data.n=24",
    "search.pool=sD",
    "search.encoders=[resnet18]",
    "stage1.decoder_width=8",
    "stage1.batch_size=8",
    "stage2.decoder_width=8",
    "stage2.batch_size=8",
    "attack.images=4",
    "attack.cheap_steps=2",
    "attack.steps=2",
]


class Stop(Exception):
    """Raised by the test's report to stop a trial (as Ray stops one at a rung)."""


def run_epochs(spec, resume_dir: Path | None, stop_after: int | None, keep: Path) -> list[dict]:
    """Run the real trial; returns its reports; saves the state of epoch ``stop_after``."""
    reports: list[dict] = []

    def report(metrics, write_checkpoint=None):
        reports.append(dict(metrics))
        if write_checkpoint is not None and metrics["epoch"] == stop_after:
            keep.mkdir(parents=True, exist_ok=True)
            write_checkpoint(keep)
            raise Stop

    with contextlib.suppress(Stop):
        run_trial(spec, TrialSession("t", report, resume_dir))
    return reports


@pytest.mark.slow
def test_a_resumed_real_trial_reports_what_an_uninterrupted_one_does(tmp_path):
    cfg = resolve(load_config(None, [*TINY, "stage1.epochs=2"]))
    cand = Space.from_config(cfg).candidate("sD", "uniform", "resnet18")
    spec = build_spec(cfg, cand, 1)
    straight = run_epochs(spec, None, None, tmp_path / "unused")
    first = run_epochs(spec, None, 1, tmp_path / "epoch1")
    rest = run_epochs(spec, tmp_path / "epoch1", None, tmp_path / "unused")
    assert [r["epoch"] for r in straight] == [0, 1, 2]
    assert first + rest == straight  # bit for bit: no float tolerance
    # The trial's seed comes from the config, not from when or where the trial was created.
    other = build_spec(dataclasses.replace(cfg), cand, 1)
    assert other == spec and spec.seed == cfg.trial_seed


@pytest.mark.slow
def test_deterministic_search_on_real_trials_gives_the_same_tables(local_ray, tmp_path):
    tables = []
    for concurrency in (1, 2):
        cfg = load_config(
            None,
            [
                f"name=real{concurrency}",
                *TINY,
                *EARLY_SCREEN,  # rung barriers prune the sampler's proposals
                "search.n_trials=3",
                "search.batch=3",
                "search.deterministic=true",
                "stage1.epochs=2",
                "stage2.top_k=1",
                "stage2.epochs=1",
                f"resources.max_concurrent={concurrency}",
            ],
        )
        out = run_search(cfg, storage=tmp_path)
        assert (out.trials["status"] != "failed").all(), out.trials["failure"].tolist()
        tables.append(
            comparable({"trials": out.trials, "history": out.history, "attacks": out.attacks})
        )
    assert (tables[0]["trials"]["status"] == "pruned").any()  # a rung barrier decided
    for name in tables[0]:
        pd.testing.assert_frame_equal(tables[0][name], tables[1][name], check_exact=True, obj=name)
