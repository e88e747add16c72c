"""A search survives the loss of a worker node: the trial that ran there is retried from its last
checkpoint on the node left, and the tables equal those of a run without the loss; a trial that
fails by itself is still recorded ``failed`` once, never retried."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from rts.search.config.convert import load_config
from rts.search.results.pipeline import run_search
from tests.search.fake_trial import FakeTrial
from tests.search.tiny import EARLY_SCREEN

ray = pytest.importorskip("ray")

COMPARED = ["stage", "aux", "status", "epochs", "failure", "vuln", "clean_error", "skill"]
"""Columns that must not depend on where or how often a trial ran."""


def events(path: Path) -> list[dict[str, Any]]:
    """The fake trials' event log."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def remove_when_running(cluster: Any, node: Any, log_path: Path, seen: dict, timeout_s: float):
    """Remove ``node`` once a stage-1 trial on it reported epoch 1 (and its checkpoint had time
    to be registered); what it removed goes into ``seen``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for e in events(log_path):
            if e["event"] == "epoch" and e["stage"] == 1 and e["node"] == node.node_id:
                time.sleep(0.5)  # the epoch's checkpoint is written and reaches the driver
                cluster.remove_node(node, allow_graceful=False)
                seen.update(e)
                return
        time.sleep(0.1)


def comparable(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[COMPARED].sort_values(["stage", "aux"]).reset_index(drop=True)


def history_by_candidate(out: Any) -> pd.DataFrame:
    names = out.trials.set_index("trial_id")["aux"]
    h = out.history.assign(aux=out.history["trial_id"].map(names))
    cols = ["stage", "aux", "epoch", "vuln", "clean_error"]
    return h[cols].sort_values(["stage", "aux", "epoch"]).reset_index(drop=True)


@pytest.mark.slow
def test_search_survives_the_loss_of_a_worker_node(tmp_path, two_node_cluster):
    cluster, worker = two_node_cluster
    head_id = cluster.head_node.node_id
    cfg = load_config(
        None,
        [
            "name=lost",
            "search.pool=sDk",
            *EARLY_SCREEN,
            "search.max_aux=1",
            "search.sampler=grid",
            "search.encoders=[resnet18]",
            "stage1.epochs=3",
            "stage1.scheduler=fifo",
            "stage2.top_k=2",
            "stage2.epochs=1",
            "resources.max_retries=3",
        ],
    )
    log_path = tmp_path / "events.jsonl"
    trial = FakeTrial(sleep_s=1.5, fail_on="k", log_path=str(log_path))
    seen: dict[str, Any] = {}
    killer = threading.Thread(
        target=remove_when_running, args=(cluster, worker, log_path, seen, 120.0)
    )
    killer.start()
    lost = run_search(cfg, storage=tmp_path / "runs", address=cluster.address, trial_fn=trial)
    killer.join()
    assert seen, "no stage-1 trial reported an epoch on the worker node"

    # The trial on the lost node started again on the head, from the checkpoint of the epoch it
    # had reported (not from scratch), and finished.
    log = events(log_path)
    starts = [e for e in log if e["event"] == "start" and e["trial_id"] == seen["trial_id"]]
    assert [e["node"] for e in starts] == [worker.node_id, head_id]
    assert starts[-1]["epoch"] == seen["epoch"]
    s1 = lost.trials[lost.trials["stage"] == 1].set_index("aux")
    assert s1.loc[seen["aux"], "status"] == "completed"
    assert s1.loc[seen["aux"], "node_id"] == head_id
    # ... and the summary says so, by our trial id (not Ray's).
    lost_id = s1.loc[seen["aux"], "trial_id"]
    assert lost.summary.retries == {lost_id: 1}
    text = (lost.paths.summary_md).read_text()
    assert f"Retried after losing their node or worker: 1 trial(s), 1 retry ({lost_id} ×1)" in text

    # A trial fault is not an infrastructure fault: recorded failed, started once.
    assert s1.loc["k", "status"] == "failed"
    assert s1.loc["k", "failure"] == "RuntimeError: injected fault: auxiliary task 'k'"
    k_starts = [e for e in log if e["event"] == "start" and e["aux"] == "k" and e["stage"] == 1]
    assert len(k_starts) == 1

    # The same tables as a run that lost nothing.
    reference = run_search(
        cfg, storage=tmp_path / "reference", num_cpus=2, trial_fn=FakeTrial(fail_on="k")
    )
    pd.testing.assert_frame_equal(comparable(lost.trials), comparable(reference.trials))
    pd.testing.assert_frame_equal(history_by_candidate(lost), history_by_candidate(reference))
    assert lost.summary.recommended_aux == reference.summary.recommended_aux == "s"
    assert reference.summary.retries == {}
