"""A trial's reported epochs survive Ray losing its buffered result files (``kill -9``)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from rts.search.config.convert import load_config
from rts.search.engine.rows import ROWS_FILE, reported_rows, write_rows
from rts.search.results.pipeline import run_search
from tests.search.fake_trial import FakeTrial

tune = pytest.importorskip("ray.tune")

ROWS = [{"epoch": e, "vuln": 1.0 / e, "clean_error": 0.5} for e in (1, 2, 3)]


def result(tmp_path: Path, df: pd.DataFrame | None, saved: list[dict] | None, last: dict):
    """A Ray ``Result``'s fields: Ray's table, a real checkpoint holding ``saved``, the last
    result of the experiment snapshot."""
    checkpoint = None
    if saved is not None:
        folder = tmp_path / "checkpoint_000002"
        folder.mkdir(parents=True)
        write_rows(folder, saved)
        checkpoint = tune.Checkpoint.from_directory(str(folder))
    return SimpleNamespace(metrics_dataframe=df, checkpoint=checkpoint, metrics=last, path="t")


def test_a_complete_table_is_returned_as_it_is(tmp_path):
    df = pd.DataFrame(ROWS)
    assert reported_rows(result(tmp_path, df, ROWS, ROWS[-1])) is df


def test_epochs_ray_lost_are_taken_from_the_checkpoint(tmp_path):
    cut = pd.DataFrame(ROWS[:1])  # Ray flushed epoch 1 only
    out = reported_rows(result(tmp_path, cut, ROWS, ROWS[-1]))
    assert list(out["epoch"]) == [1, 2, 3]
    assert list(out["vuln"]) == pytest.approx([1.0, 0.5, 1 / 3])
    empty = reported_rows(result(tmp_path / "b", pd.DataFrame(), ROWS, ROWS[-1]))
    assert list(empty["epoch"]) == [1, 2, 3]


def test_without_a_checkpoint_the_snapshots_last_result_is_kept(tmp_path):
    out = reported_rows(result(tmp_path, None, None, {**ROWS[-1], "attack_rows": "[]"}))
    assert list(out["epoch"]) == [3] and out["attack_rows"].tolist() == ["[]"]


def test_a_rung_only_wants_its_own_epochs(tmp_path):
    rung = pd.DataFrame(ROWS[2:])  # a deterministic rung from epoch 3 to 3
    assert reported_rows(result(tmp_path, rung, ROWS, ROWS[-1]), first_epoch=3) is rung
    lost = reported_rows(result(tmp_path / "b", None, ROWS, ROWS[-1]), first_epoch=2)
    assert list(lost["epoch"]) == [2, 3]


def test_a_failed_trial_is_left_to_the_failure_rows(tmp_path):
    df = pd.DataFrame(ROWS[:1])
    assert reported_rows(result(tmp_path, df, ROWS, {"rts_failure": "boom"})) is df


def test_every_checkpoint_of_a_search_holds_the_rows_reported_up_to_it(local_ray, tmp_path):
    cfg = load_config(
        None,
        [
            "name=rows",
            "search.pool=s",
            "search.max_aux=1",
            "search.sampler=grid",
            "search.n_trials=2",
            "search.encoders=[resnet18]",
            "stage1.epochs=3",
            "stage1.scheduler=fifo",
            "stage2.top_k=1",
            "stage2.epochs=2",
        ],
    )
    out = run_search(cfg, storage=tmp_path, trial_fn=FakeTrial())
    files = sorted(out.paths.root.glob(f"checkpoints/*/{ROWS_FILE}"))  # the exported finals
    assert [f.parent.name for f in files] == ["s2-0001", "s2-0002"]
    history = out.history.set_index(["trial_id", "epoch"])
    for path in files:
        rows = json.loads(path.read_text())
        assert [r["epoch"] for r in rows] == [1, 2]  # every epoch the trial reported
        for r in rows:
            assert r["clean_error"] == pytest.approx(
                history.loc[(path.parent.name, r["epoch"]), "clean_error"]
            )
