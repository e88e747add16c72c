"""Metrics against hand-computed values; first-order quantities exact on a linear model."""

from __future__ import annotations

import math

import pytest
import torch

from rts.attacks import fgsm, pgd
from rts.attacks.metrics import (
    adversarial_vulnerability,
    error_table,
    first_order_marginal,
    first_order_vulnerability,
    gradient_covariance,
    input_gradients,
    marginal_vulnerability,
    relative_vulnerability,
    theorem2_prediction,
    theorem4_bound,
    undefined_count,
)
from rts.attacks.objective import per_task_losses
from rts.tasks.losses import miou_error, mse_error
from tests.attacks.conftest import LinearModel, TinyMultiTask, make_images, make_labels

A_D = torch.tensor([[[1.0, -2.0, 0.0], [0.5, 0.0, 3.0]]], dtype=torch.float64)  # ‖·‖₁ 6.5
A_N = torch.tensor([[[0.0, 1.0, 1.0], [-1.0, 0.0, 0.0]]], dtype=torch.float64)  # ‖·‖₁ 3
# (A_D + A_N) / 2 = [[.5, -.5, .5], [-.25, 0, 1.5]]: ‖·‖₁ = 3.25, ‖·‖₂ = 1.75


def _linear(a_d=A_D, a_n=A_N, n=3):
    model = LinearModel({"d": a_d, "n": a_n})
    x = torch.full((n, 1, 2, 3), 0.5, dtype=torch.float64)
    # targets far below the prediction: L1 = pred - target, linear in x
    y = {"d": torch.full((n, 1, 1, 1), -100.0, dtype=torch.float64)}
    y["n"] = y["d"].clone()
    return model, x, y


def test_relative_vulnerability_hand_computed():
    clean = torch.tensor([1.0, 2.0, 0.0])
    adv = torch.tensor([2.0, 3.0, 5.0])
    per = relative_vulnerability(clean, adv, reduction="none")
    torch.testing.assert_close(per[:2], torch.tensor([1.0, 0.5], dtype=torch.float64))
    assert math.isnan(per[2])  # clean error 0: undefined, left out
    assert relative_vulnerability(clean, adv) == pytest.approx(0.75)
    assert undefined_count(clean) == 1
    assert relative_vulnerability(clean, adv, reduction="ratio-of-means") == pytest.approx(7 / 3)
    assert math.isnan(relative_vulnerability(torch.zeros(2), torch.ones(2)))


def test_adversarial_vulnerability_hand_computed():
    clean = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0, 4.0])}
    adv = {"a": torch.tensor([2.0, 2.0]), "b": torch.tensor([1.0, 4.0])}
    # joint (uniform): clean [2, 3], adv [1.5, 3] -> |Δ| = [0.5, 0]
    assert adversarial_vulnerability(clean, adv) == pytest.approx(0.25)
    assert adversarial_vulnerability(clean, adv, {"a": 1.0, "b": 0.0}) == pytest.approx(0.5)
    torch.testing.assert_close(
        adversarial_vulnerability(clean, adv, reduction="none"), torch.tensor([0.5, 0.0])
    )
    with pytest.raises(ValueError, match="different tasks"):
        adversarial_vulnerability(clean, {"a": adv["a"]})


def test_marginal_vulnerability():
    deltas = marginal_vulnerability(["s", "sd", "sdn"], [1.0, 1.5, 1.2])
    assert deltas == pytest.approx([0.5, -0.3])
    with pytest.raises(ValueError, match="must add exactly one task"):
        marginal_vulnerability(["s", "dn"], [1.0, 2.0])
    with pytest.raises(ValueError, match="2 task sets but 1"):
        marginal_vulnerability(["s", "sd"], [1.0])


def test_input_gradients_of_linear_model():
    model, x, y = _linear()
    grads = input_gradients(model, x, y, "dn")
    torch.testing.assert_close(grads["d"], A_D.expand(3, 1, 2, 3))
    torch.testing.assert_close(grads["n"], A_N.expand(3, 1, 2, 3))


@pytest.mark.parametrize(("norm", "expected"), [("linf", 0.1 * 3.25), ("l2", 0.1 * 1.75)])
def test_first_order_vulnerability_is_exact_on_a_linear_model(norm, expected):
    model, x, y = _linear()
    grads = input_gradients(model, x, y, "dn")
    assert first_order_vulnerability(grads, eps=0.1, norm=norm) == pytest.approx(expected)
    # Lemma 2 is exact here: the optimal one-step attack reaches it (no clamp is active)
    for attack in (fgsm, pgd):
        kw = {} if attack is fgsm else {"steps": 5, "random_start": False}
        x_adv = attack(model, x, y, "dn", eps=0.1, norm=norm, **kw)
        with torch.no_grad():
            clean = per_task_losses(model, x, y, "dn")
            adv = per_task_losses(model, x_adv, y, "dn")
        assert adversarial_vulnerability(clean, adv) == pytest.approx(expected, rel=1e-9)


def test_theorem2_hand_computed():
    model, x, y = _linear()
    grads = input_gradients(model, x, y, "dn")
    c = gradient_covariance(grads)
    torch.testing.assert_close(c, torch.tensor([[14.25, -2.5], [-2.5, 3.0]], dtype=torch.float64))
    out = theorem2_prediction(grads, eps=0.1)
    # M = 2: sqrt((1 + (2/2) · C_nd / C_nn) / 2)
    assert out["factor"] == pytest.approx(math.sqrt((1 - 2.5 / 3) / 2))
    assert out["K"] == pytest.approx(0.1 * math.sqrt((14.25 + 3) / 2))
    assert out["prediction"] == pytest.approx(out["K"] * out["factor"])
    # centred: every example has the same gradient, so nothing is left
    assert gradient_covariance(grads, centered=True).abs().max() == 0


def test_theorem2_limits():
    # identical task gradients: factor 1, prediction = the exact first-order L2 vulnerability
    model, x, y = _linear(a_n=A_D)
    grads = input_gradients(model, x, y, "dn")
    out = theorem2_prediction(grads, eps=0.1)
    assert out["factor"] == pytest.approx(1.0)
    exact = first_order_vulnerability(grads, eps=0.1, norm="l2")
    assert out["prediction"] == pytest.approx(exact)
    # orthogonal gradients of equal norm: factor 1/sqrt(M), again equal to the exact value
    a = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], dtype=torch.float64)
    b = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]], dtype=torch.float64)
    model, x, y = _linear(a, b)
    grads = input_gradients(model, x, y, "dn")
    out = theorem2_prediction(grads, eps=0.1)
    assert out["factor"] == pytest.approx(1 / math.sqrt(2))
    assert out["prediction"] == pytest.approx(first_order_vulnerability(grads, eps=0.1, norm="l2"))


def test_theorem4_bound_and_lemma5_hand_computed():
    model, x, y = _linear()
    grads = input_gradients(model, x, y, "dn")  # d is T_N, n is the new task
    # uniform: eps · (E‖r_n‖₁ + max E‖r_d‖₁) = 0.1 · (3 + 6.5)
    assert theorem4_bound(grads, eps=0.1, norm="linf") == pytest.approx(0.95)
    # Lemma 5: eps · (‖(a_d + a_n)/2‖₁ - ‖a_d‖₁) = 0.1 · (3.25 - 6.5)
    marginal = first_order_marginal(grads, eps=0.1, norm="linf")
    assert marginal == pytest.approx(-0.325)
    assert marginal <= theorem4_bound(grads, eps=0.1, norm="linf")
    # explicit weights: (N+1)·w_new·‖r_n‖ + N·w_d·‖r_d‖ = 2·0.25·3 + 1·2·6.5
    bound = theorem4_bound(
        grads, eps=0.1, norm="linf", weights_n={"d": 2.0}, weights_n1={"d": 0.75, "n": 0.25}
    )
    assert bound == pytest.approx(0.1 * (1.5 + 13.0))
    with pytest.raises(ValueError, match="at least two tasks"):
        theorem4_bound({"d": grads["d"]}, eps=0.1, norm="linf")


def test_error_table_matches_manual_errors():
    model = TinyMultiTask("sd")
    x, y = make_images(3), make_labels("sd", 3)
    x_adv = pgd(model, x, y, "sd", eps=8 / 255, steps=2, random_start=False)
    table = error_table(model, x, x_adv, y, "sd")
    assert list(table["task"]) == ["s", "d"]
    with torch.no_grad():
        pc, pa = model(x), model(x_adv)
    row = table.set_index("task")
    assert row.loc["d", "clean_error"] == pytest.approx(float(mse_error(pc["d"], y["d"]).mean()))
    assert row.loc["d", "adv_error"] == pytest.approx(float(mse_error(pa["d"], y["d"]).mean()))
    assert row.loc["s", "clean_error"] == pytest.approx(float(miou_error(pc["s"], y["s"]).mean()))
    v = relative_vulnerability(mse_error(pc["d"], y["d"]), mse_error(pa["d"], y["d"]))
    assert row.loc["d", "relative_vulnerability"] == pytest.approx(v)
    assert (row["adv_loss"] > row["clean_loss"]).all()
