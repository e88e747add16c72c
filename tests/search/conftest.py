"""Fixtures of the search tests: a real local Ray, one per test module."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(scope="module")
def local_ray():
    """``ray.init(address="local", num_cpus=2)`` with the project's Ray env; shut down after."""
    ray = pytest.importorskip("ray")
    from rts.search.engine.stages import RAY_ENV_DEFAULTS

    with pytest.MonkeyPatch.context() as mp:
        for key, value in RAY_ENV_DEFAULTS.items():
            mp.setenv(key, value)
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
