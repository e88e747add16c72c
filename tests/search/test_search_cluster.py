"""A search joins an existing Ray cluster (``address``) and runs trials on every node."""

from __future__ import annotations

import pytest

from rts.search.config.convert import load_config
from rts.search.results.pipeline import run_search
from tests.search.fake_trial import FakeTrial
from tests.search.tiny import EARLY_SCREEN

ray = pytest.importorskip("ray")


@pytest.mark.slow
def test_two_node_cluster_places_trials_on_both_nodes(tmp_path, two_node_cluster):
    cluster, worker = two_node_cluster
    node_ids = {cluster.head_node.node_id, worker.node_id}
    cfg = load_config(
        None,
        [
            "name=cluster",
            *EARLY_SCREEN,  # the grid's 4 candidates, screened
            "search.pool=sDk",
            "search.max_aux=1",
            "search.sampler=grid",
            "search.encoders=[resnet18]",
            "stage1.epochs=2",
            "stage1.scheduler=fifo",
            "stage2.top_k=1",
            "stage2.epochs=1",
        ],
    )
    out = run_search(
        cfg, storage=tmp_path, address=cluster.address, trial_fn=FakeTrial(sleep_s=2.0)
    )
    assert not ray.is_initialized()  # the search disconnected from the cluster it joined
    trials = out.trials
    assert (trials["status"] == "completed").all()
    s1 = trials[trials["stage"] == 1]
    # Two 1-CPU nodes and 1-CPU trials long enough to overlap: both nodes ran stage-1 trials.
    assert set(s1["node_id"]) == node_ids
    assert len(s1) == 4 and out.summary.recommended_aux == "s"
