"""Resolve a user's device string once, at the edge (CLI, trial); library code follows the data."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → the first CUDA device if there is one, else CPU; ``"cpu"``, ``"cuda[:i]"``.

    Raises ``ValueError`` for an unknown name or a CUDA device this machine does not have.
    """
    if isinstance(name, torch.device):
        name = str(name)
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        index_text = text.partition(":")[2]
        if index_text and not index_text.isdigit():
            raise ValueError(f"bad device {name!r}; use auto, cpu, cuda or cuda:<index>")
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available; use cpu")
        index = int(index_text) if index_text else torch.cuda.current_device()
        count = torch.cuda.device_count()
        if index >= count:
            raise ValueError(f"no device {name!r}; this machine has cuda:0..cuda:{count - 1}")
        return torch.device("cuda", index)
    raise ValueError(f"unknown device {name!r}; choose from auto, cpu, cuda, cuda:<index>")
