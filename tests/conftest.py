"""Shared fixtures: RNG state restored around every test, a CPU/CUDA device parametrization."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_rng():
    """Tests may seed globally; give the next test back the RNG state it would have had."""
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()
    py_state = random.getstate()
    yield
    torch.set_rng_state(torch_state)
    np.random.set_state(np_state)
    random.setstate(py_state)


def pytest_collection_modifyitems(config, items):
    """Skip ``needs_cuda`` tests on machines without a GPU (CI has none)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(skip)


def cpu_and_cuda():
    """Parametrize over ``cpu`` and, marked ``needs_cuda``, ``cuda`` (torchvision's helper)."""
    return ("cpu", pytest.param("cuda", marks=pytest.mark.needs_cuda))
