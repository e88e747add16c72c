"""Fixtures of the search tests: a real local Ray, one per test module."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(scope="module")
def local_ray():
    """``ray.init(address="local", num_cpus=2)`` with the project's Ray env; shut down after."""
    ray = pytest.importorskip("ray")
    from rts.search.engine.session import RAY_ENV_DEFAULTS, ensure_token

    with pytest.MonkeyPatch.context() as mp:
        for key, value in RAY_ENV_DEFAULTS.items():  # token auth on, as for a search
            mp.setenv(key, value)
        ensure_token()
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
        try:
            yield
        finally:
            ray.shutdown()


@pytest.fixture
def two_node_cluster(monkeypatch):
    """A local Ray cluster of a 1-CPU head and a 1-CPU worker node: ``(cluster, worker)``.

    Searches join it by explicit address: it advertises itself in
    ``/tmp/ray/ray_current_cluster``, where a plain ``ray.init()`` would join it.
    """
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from rts.search.engine.session import RAY_ENV_DEFAULTS, ensure_token

    for key, value in RAY_ENV_DEFAULTS.items():  # token auth on, as for a search
        monkeypatch.setenv(key, value)
    ensure_token()
    assert not ray.is_initialized()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    ray._common.utils.reset_ray_address()
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster, worker
    finally:
        cluster.shutdown()
        ray._common.utils.reset_ray_address()
