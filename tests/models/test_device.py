"""resolve_device: auto, cpu, cuda[:i] and one-line errors."""

from __future__ import annotations

import pytest
import torch

from rts.models import resolve_device


def test_auto_and_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(" AUTO ").type == expected


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:x", "cuda:-1", ""])
def test_unknown_names_are_refused(name):
    with pytest.raises(ValueError, match="auto"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="machine has CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda:0")


@pytest.mark.needs_cuda
def test_cuda_index():
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="no device 'cuda:99'"):
        resolve_device("cuda:99")
