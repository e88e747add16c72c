"""The task registry and the shared per-sample losses/errors, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from rts.tasks.losses import (
    cross_entropy_loss,
    l1_loss,
    miou_error,
    mse_error,
    task_errors,
    task_losses,
    weighted_sum,
)
from rts.tasks.registry import SEG_IGNORE, TASK_KEYS, TASKS, canonical_tasks, get_task, parse_tasks

CHANNELS = {"s": 18, "d": 1, "D": 1, "n": 3, "k": 1, "K": 1, "e": 1, "E": 1, "p": 2, "r": 1, "A": 3}


def test_eleven_tasks_in_paper_order():
    assert TASK_KEYS == "sdDnkKeEprA"
    assert len(TASKS) == 11


@pytest.mark.parametrize("key", list(CHANNELS))
def test_spec_channels_loss_error(key):
    spec = get_task(key)
    assert spec.channels == CHANNELS[key]
    assert spec.loss == ("ce" if key == "s" else "l1")
    assert spec.error == ("1-miou" if key == "s" else "mse")
    with pytest.raises(AttributeError):
        spec.channels = 5  # frozen


def test_unknown_key_lists_choices():
    with pytest.raises(ValueError, match=r"unknown task 'x'; choose from s, d, D"):
        get_task("x")


def test_parse_tasks_forms():
    assert parse_tasks("sdn") == "sdn"
    assert parse_tasks("s,d") == "sd"
    assert parse_tasks(["n", "s"]) == "ns"
    assert canonical_tasks("ns") == "sn"
    for bad in ("", "sx", "ss"):
        with pytest.raises(ValueError):
            parse_tasks(bad)


@pytest.mark.parametrize("key", [k for k in CHANNELS if k != "s"])
def test_dense_loss_and_error_by_hand(key):
    c = CHANNELS[key]
    pred = torch.zeros(2, c, 2, 2)
    target = torch.ones(2, c, 2, 2) * 2.0
    target[0, :, 0, 0] = float("nan")  # invalid pixel: excluded
    target[1] = 0.5
    losses = task_losses({key: pred}, {key: target}, key)[key]
    errors = task_errors({key: pred}, {key: target}, key)[key]
    assert losses.shape == (2,)
    assert losses.tolist() == pytest.approx([2.0, 0.5])
    assert errors.tolist() == pytest.approx([4.0, 0.25])


def test_segmentation_loss_and_error_by_hand():
    # Two pixels, 18 classes; pixel 0 label 0, pixel 1 label 1; logits favour class 0 everywhere.
    pred = torch.zeros(1, 18, 1, 2)
    pred[0, 0] = math.log(3.0)  # p(class 0) = 3 / (3 + 17) = 0.15
    target = torch.tensor([[[0, 1]]])
    loss = cross_entropy_loss(pred, target)
    expected = (-math.log(3 / 20) - math.log(1 / 20)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # argmax = class 0 on both pixels: IoU(class 0) = 1/2, IoU(class 1) = 0 → mIoU 1/4.
    assert miou_error(pred, target).item() == pytest.approx(0.75)
    ignored = torch.tensor([[[0, SEG_IGNORE]]])
    assert miou_error(pred, ignored).item() == pytest.approx(0.0)
    assert cross_entropy_loss(pred, ignored).item() == pytest.approx(-math.log(3 / 20), rel=1e-6)


def test_all_invalid_example_has_zero_loss():
    pred = torch.randn(1, 1, 3, 3)
    target = torch.full((1, 1, 3, 3), float("nan"))
    assert l1_loss(pred, target).item() == 0.0
    assert mse_error(pred, target).item() == 0.0


def test_weighted_sum_uniform_manual_and_zero():
    losses = {"s": torch.tensor([1.0, 2.0]), "d": torch.tensor([3.0, 6.0])}
    assert weighted_sum(losses).tolist() == pytest.approx([2.0, 4.0])
    assert weighted_sum(losses, {"s": 1.0, "d": 0.1}).tolist() == pytest.approx([1.3, 2.6])
    assert weighted_sum(losses, {"s": 0.0, "d": 1.0}).tolist() == pytest.approx([3.0, 6.0])


def test_custom_loss_for_non_registry_key():
    pred = {"y": torch.tensor([[2.0, 0.0]])}
    y = {"y": torch.tensor([0])}
    ce = torch.nn.functional.cross_entropy
    out = task_losses(pred, y, ["y"], losses={"y": lambda p, t: ce(p, t, reduction="none")})
    assert out["y"].item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1)), rel=1e-6)
