"""Skill against a trivial predictor, on crafted labels with hand-computed answers."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from rts.attacks.skill import (
    TrivialPredictor,
    fit_trivial,
    prediction_spread,
    skill,
    skill_flag,
    skills,
    trivial_errors,
)
from rts.tasks.losses import task_errors
from rts.tasks.registry import SEG_CLASSES, SEG_IGNORE


def batches(y: dict[str, torch.Tensor], size: int = 2):
    n = next(iter(y.values())).shape[0]
    for i in range(0, n, size):
        yield torch.zeros(min(size, n - i), 3, 4, 6), {k: v[i : i + size] for k, v in y.items()}


def dense(n: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, 6, generator=g)


def test_fit_trivial_is_the_per_pixel_mean_skipping_nan():
    d = dense()
    d[0, 0, 0, 0] = math.nan
    trivial = fit_trivial(batches({"d": d}), "d")
    assert torch.allclose(trivial.maps["d"], d.nanmean(dim=0).float(), atol=1e-6)


def test_fit_trivial_segmentation_is_the_per_pixel_majority_class():
    s = torch.full((3, 4, 6), 7, dtype=torch.long)
    s[0] = 2  # 2 votes for 7, 1 for 2 everywhere
    s[1, 0, 0] = SEG_IGNORE  # pixel (0, 0): one vote each for 2 and 7 -> the lower id
    s[:, 1, 1] = SEG_IGNORE  # never labelled: the overall majority (7)
    maps = fit_trivial(batches({"s": s}), "s").maps["s"]
    assert maps[2, 3] == 7 and maps[1, 1] == 7 and maps[0, 0] == 2


def test_trivial_predictor_scores_zero_perfect_one_constant_worse_below_zero():
    train, val = dense(8, seed=1), dense(6, seed=2)
    trivial = fit_trivial(batches({"d": train}), "d")
    base = trivial_errors(trivial, batches({"d": val}), "d")["d"]
    trivial_pred = trivial.predict(6, "d")
    own = float(task_errors(trivial_pred, {"d": val}, "d")["d"].mean())
    assert skill(own, base) == pytest.approx(0.0, abs=1e-6)
    assert skill(0.0, base) == 1.0
    far = float(task_errors({"d": torch.full_like(val, 5.0)}, {"d": val}, "d")["d"].mean())
    assert skill(far, base) < 0
    assert skills({"d": 0.0, "x": 1.0}, {"d": base}) == {"d": 1.0}


def test_trivial_segmentation_output_reproduces_the_majority_map():
    s = torch.randint(0, SEG_CLASSES, (4, 4, 6))
    trivial = TrivialPredictor({"s": s[0]})
    logits = trivial.predict(3, "s")["s"]
    assert logits.shape == (3, SEG_CLASSES, 4, 6)
    assert torch.equal(logits.argmax(dim=1), s[0].expand(3, -1, -1))
    assert float(task_errors({"s": logits}, {"s": s[0].expand(3, -1, -1)}, "s")["s"].max()) == 0


def test_skill_is_nan_when_the_trivial_error_is_zero():
    assert math.isnan(skill(0.1, 0.0)) and math.isnan(skill(math.nan, 1.0))


def test_prediction_spread_tells_a_constant_model_from_one_that_follows_the_image():
    label = dense(6, seed=3)
    assert prediction_spread(label, label) == pytest.approx(1.0)
    assert prediction_spread(label.mean(dim=0, keepdim=True).expand(6, -1, -1, -1), label) == 0
    assert prediction_spread(0.5 * label, label) == pytest.approx(0.5)


def test_skill_flag_is_one_plain_line_with_the_word_skill():
    assert skill_flag("d+Dn", "d", 0.6, spread=0.8) == ""
    low = skill_flag("d+Dn", "d", -4.1)
    assert "skill -4.10" in low and "says nothing" in low and "\n" not in low
    flat = skill_flag("d+Dn", "d", 0.2, spread=0.01)
    assert "skill" in flat and "ignores the image" in flat
    assert "skill" in skill_flag("d", "d", math.nan)


def test_a_model_trained_a_few_steps_at_a_tiny_learning_rate_is_flagged():
    """Real training: outputs start far from the labels, so the trivial mean beats the model."""
    from rts.models import SCHEDULES, WeightingSpec, build_model, evaluate, train
    from tests.models.conftest import TinyTaskData

    data = TinyTaskData.random("d", n=8, size=(40, 24))
    data.y["d"] = data.y["d"] * 0.1 + 0.5  # labels around 0.5; an untrained head is far off
    model = build_model("resnet18", "d", decoder_width=8, seed=0)
    schedule = dataclasses.replace(SCHEDULES["code"], lr=1e-9)
    train(
        model,
        data,
        data,
        WeightingSpec("uniform"),
        schedule,
        torch.device("cpu"),
        epochs=1,
        batch_size=4,
        seed=0,
        progress=False,
    )
    _, errors = evaluate(model, data, batch_size=4)
    trivial = trivial_errors(fit_trivial(data.batches(4), "d"), data.batches(4), "d")
    value = skill(errors["d"], trivial["d"])
    assert value <= 0
    assert "skill" in skill_flag("d", "d", value)


def test_format_skill_flags_unlearned_tasks():
    from rts.attacks.skill import format_skill

    text = format_skill({"s": 0.42, "d": -0.01})
    assert text.startswith("skill (1 - error / error of the training mean): s 0.42, d -0.01")
    assert "task(s) d not learned" in text
    assert "not learned" not in format_skill({"d": 0.5})


def test_skill_against_a_trivial_error_within_rounding_of_zero_is_unknown():
    assert math.isnan(skill(0.1, 1e-12)) and math.isnan(skill(0.1, math.inf))
    assert skill(0.1, 0.2) == pytest.approx(0.5)


def test_an_infinite_label_is_rejected_when_the_trivial_predictor_is_fitted():
    y = torch.zeros(2, 1, 3, 4)
    y[0, 0, 1, 1] = math.inf
    with pytest.raises(ValueError, match="infinite"):
        fit_trivial([(torch.zeros(2, 3, 3, 4), {"d": y})], "d")
