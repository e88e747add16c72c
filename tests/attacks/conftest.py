"""Small models for the attack tests: a conv multi-task net, a linear model, a digits classifier."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rts.tasks.registry import SEG_IGNORE, get_task

H, W = 40, 24
"""Non-square test images, so an H/W swap shows up."""


class TinyMultiTask(nn.Module):
    """A two-layer conv encoder with a 1×1 conv head per task (registry channel counts).

    ``calls`` records the task set of every forward, so tests can check which heads ran.
    ``fail_after`` makes the n-th forward raise (to test exception safety).
    """

    def __init__(self, tasks: str, *, width: int = 6, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.tasks = tasks
        self.enc1 = nn.Conv2d(3, width, 3, padding=1)
        self.enc2 = nn.Conv2d(width, width, 3, padding=1)
        self.heads = nn.ModuleDict({k: nn.Conv2d(width, get_task(k).channels, 1) for k in tasks})
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        self.calls: list[str] = []
        self.fail_after: int | None = None

    def forward(self, x, tasks=None):
        keys = self.tasks if tasks is None else tasks
        self.calls.append(keys)
        if self.fail_after is not None and len(self.calls) > self.fail_after:
            raise RuntimeError("injected failure")
        h = torch.tanh(self.enc2(torch.tanh(self.enc1(x * 2 - 1))))
        return {k: self.heads[k](h) for k in keys}


def make_labels(tasks: str, n: int, *, seed: int = 0, dtype=torch.float32) -> dict:
    """Random labels for ``tasks``: seg ids with some 255, dense values with some NaN."""
    gen = torch.Generator().manual_seed(seed)
    y = {}
    for k in tasks:
        spec = get_task(k)
        if spec.is_segmentation:
            seg = torch.randint(0, spec.channels, (n, H, W), generator=gen)
            seg[torch.rand(n, H, W, generator=gen) < 0.1] = SEG_IGNORE
            y[k] = seg
        else:
            dense = torch.randn(n, spec.channels, H, W, generator=gen, dtype=dtype)
            dense[torch.rand(n, 1, H, W, generator=gen).expand_as(dense) < 0.1] = float("nan")
            y[k] = dense
    return y


def make_images(n: int, *, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Images in [0, 1], some pixels exactly 0 or 1 (so the clamp matters)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, H, W, generator=gen, dtype=dtype) * 1.2 - 0.1
    return x.clamp(0, 1)


class LinearModel(nn.Module):
    """``pred_i = ⟨a_i, x⟩ + b_i`` as a ``[N, 1, 1, 1]`` map per task: exact first-order model.

    With targets far below the prediction the L1 loss is ``⟨a_i, x⟩ + b_i - t``, linear in x,
    so its input gradient is ``a_i`` for every example.
    """

    def __init__(self, directions: dict[str, torch.Tensor], bias: float = 0.0) -> None:
        super().__init__()
        self.tasks = "".join(directions)
        self.a = nn.ParameterDict({k: nn.Parameter(v.clone()) for k, v in directions.items()})
        self.bias = bias

    def forward(self, x, tasks=None):
        keys = self.tasks if tasks is None else tasks
        flat = x.flatten(1)
        return {k: (flat @ self.a[k].flatten() + self.bias).view(-1, 1, 1, 1) for k in keys}


class Wrapped(nn.Module):
    """A classifier returning logits, wrapped as ``{"y": logits}``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return {"y": self.net(x)}


def ce_per_sample(pred, target):
    """Per-sample cross-entropy of logits (torchattacks' loss, before its batch mean)."""
    return F.cross_entropy(pred, target, reduction="none")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids oversubscription on the shared 2-core CI machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits():
    """A tiny MLP trained on scikit-learn's digits (8x8 in [0, 1] as 1x8x8), its test split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=gen)
    train, test = perm[:1400], perm[1400:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(300):
            opt.zero_grad()
            F.cross_entropy(net(x[train]), y[train]).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, x[test], y[test]
