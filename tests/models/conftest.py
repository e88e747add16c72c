"""A tiny in-memory dataset with the ``TaskDataset.batches`` interface, for training tests."""

from __future__ import annotations

import pytest
import torch

from rts.tasks.registry import SEG_CLASSES, SEG_IGNORE, get_task


class TinyTaskData:
    """Random images and labels (or given tensors) served like ``tasks.data.TaskDataset``."""

    def __init__(self, x: torch.Tensor, y: dict[str, torch.Tensor]) -> None:
        self.x, self.y, self.tasks = x, y, "".join(y)

    @classmethod
    def random(cls, tasks: str, n: int = 6, size=(40, 24), seed: int = 0) -> TinyTaskData:
        g = torch.Generator().manual_seed(seed)
        h, w = size
        x = torch.rand(n, 3, h, w, generator=g)
        y = {}
        for k in tasks:
            spec = get_task(k)
            if spec.is_segmentation:
                lab = torch.randint(0, SEG_CLASSES, (n, h, w), generator=g)
                lab[:, 0, :] = SEG_IGNORE
                y[k] = lab
            else:
                lab = torch.rand(n, spec.channels, h, w, generator=g) * 2 - 1
                lab[:, :, -1, :] = float("nan")
                y[k] = lab
        return cls(x, y)

    def __len__(self) -> int:
        return self.x.shape[0]

    def batches(self, batch_size, *, shuffle=False, generator=None, flip=False, drop_last=False):
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        flips = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=bool)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            x = self.x[idx].clone()
            y = {k: v[idx].clone() for k, v in self.y.items()}
            f = flips[idx]
            if f.any():
                x[f] = x[f].flip(-1)
                for k, v in y.items():
                    v[f] = v[f].flip(-1)
                    ch = get_task(k).flip_negate_channel
                    if ch is not None:
                        v[f, ch] = -v[f, ch]
            yield x, y


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from threads, and spinning threads suffer on a busy CI box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_data():
    """``factory(tasks, n=6, size=(40, 24), seed=0) -> TinyTaskData``."""
    return TinyTaskData.random
