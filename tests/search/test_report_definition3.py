"""The report's Definition 3 (one model, attacked sets enabled one by one) vs the retrained
chains ("effect of adding task t"), read from what ``rts attack --chain`` wrote."""

from __future__ import annotations

import pandas as pd
import torch

from rts.attacks.chain import CHAIN_FILE, vulnerability_chain
from rts.search.analysis.paper import chain_candidate, definition3_chains
from rts.search.analysis.rundata import make_run_data
from rts.search.engine.paths import RunPaths
from rts.search.report.html import write_report
from tests.attacks.conftest import TinyMultiTask, make_images, make_labels
from tests.search.test_analysis import fake_frames


def _chain_table() -> pd.DataFrame:
    model = TinyMultiTask("sdn", seed=3)
    data = (make_images(4, seed=3), make_labels("sdn", 4, seed=3))
    with torch.random.fork_rng(devices=[]):
        return vulnerability_chain(
            model, data, "d,dn,sdn", "pgd", eps=8 / 255, steps=2, n_resamples=99
        )


def test_report_shows_definition3_from_chain_files_and_renames_the_retrained_chains(tmp_path):
    trials, attacks, history = fake_frames()
    root = tmp_path / "run"
    folder = RunPaths(root).checkpoints / "s2-0003"
    folder.mkdir(parents=True)
    table = _chain_table()
    table.to_parquet(folder / CHAIN_FILE)
    run = make_run_data(trials, attacks, history, path=root)
    found = definition3_chains(run)
    assert [label for label, _ in found] == ["s2-0003"]
    pd.testing.assert_frame_equal(found[0][1], table)
    html = write_report(run, tmp_path / "out", n_resamples=9)["html"].read_text(encoding="utf-8")
    assert "Marginal adversarial vulnerability (Definition 3)" in html
    assert "s2-0003: chain under each attack" in html
    assert "Effect of adding a task on the main task&#x27;s relative vulnerability" in html
    assert "not the paper&#x27;s marginal vulnerability (Definition 3" in html


def test_report_without_a_chain_says_how_to_measure_one(tmp_path):
    trials, attacks, history = fake_frames()
    trials = trials.copy()
    trials["checkpoint"] = [f"checkpoints/{t}" for t in trials["trial_id"]]
    run = make_run_data(trials, attacks, history, path=tmp_path / "run")
    ckpt, tasks = chain_candidate(run)
    assert len(tasks) == trials[trials["stage"] == 2]["tasks"].str.len().max()
    html = write_report(run, tmp_path / "out", n_resamples=9)["html"].read_text(encoding="utf-8")
    assert f"Not measured yet; on the model with tasks {tasks}: rts attack " in html
    assert f"{tmp_path / 'run' / ckpt} --chain d," in html
