"""Skill against the trivial predictor fitted on the training labels (hand-computed values)."""

from __future__ import annotations

import math

import pytest
import torch

from rts.attacks.skill import format_skill, skill, training_means, trivial_errors
from rts.tasks.registry import SEG_IGNORE


def test_training_means_hand_computed():
    d1 = torch.tensor([[[[1.0, float("nan")], [3.0, 5.0]]]])  # valid mean 3
    d2 = torch.tensor([[[[7.0, 7.0], [float("nan"), float("nan")]]]])  # 7, 7
    s1 = torch.tensor([[[2, 2], [1, SEG_IGNORE]]])
    s2 = torch.tensor([[[2, 0], [SEG_IGNORE, SEG_IGNORE]]])
    x = torch.zeros(1, 3, 2, 2)
    means = training_means([(x, {"d": d1, "s": s1}), (x, {"d": d2, "s": s2})], "ds")
    assert means["d"].shape == (1, 1, 1)
    assert float(means["d"]) == pytest.approx((1 + 3 + 5 + 7 + 7) / 5)
    freq = torch.tensor([1, 1, 3] + [0] * 15, dtype=torch.float64) / 5
    assert int(means["s"].argmax()) == 2  # the most frequent class
    torch.testing.assert_close(means["s"].flatten()[:3], freq[:3].log().float())


def test_trivial_errors_and_skill():
    means = {"d": torch.full((1, 1, 1), 2.0)}
    y = torch.tensor([[[[1.0, 3.0], [2.0, float("nan")]]]])  # MSE of 2: (1 + 1 + 0) / 3
    err = trivial_errors(means, [(torch.zeros(1, 3, 2, 2), {"d": y})], "d")
    torch.testing.assert_close(err["d"], torch.tensor([2 / 3]))
    assert skill(torch.tensor([0.0]), err["d"]) == 1.0  # perfect
    assert skill(err["d"], err["d"]) == 0.0  # no better than the mean
    assert skill(torch.tensor([4 / 3]), err["d"]) == pytest.approx(-1.0)
    assert math.isnan(skill(torch.tensor([1.0]), torch.tensor([0.0])))


def test_format_skill_flags_unlearned_tasks():
    text = format_skill({"s": 0.42, "d": 0.01})
    assert text.startswith("skill (1 - error / error of the training mean): s 0.42, d 0.01")
    assert "task(s) d not learned" in text
    assert "not learned" not in format_skill({"d": 0.5})
