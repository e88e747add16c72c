"""Loss weighting schemes: static tables by hand, learned schemes' direction and fixed point."""

from __future__ import annotations

import io

import pytest
import torch

from rts.models import (
    WEIGHTINGS,
    GradNormWeighting,
    UncertaintyWeighting,
    WeightingSpec,
    make_weighting,
    static_weights,
)


def _losses(*values):
    return {k: torch.tensor(v) for k, v in zip("sdn", values, strict=False)}


def test_uniform_is_the_plain_mean_of_the_losses():
    w = make_weighting("uniform", "nsd")
    assert w.tasks == "sdn"
    assert w.weights() == pytest.approx({"s": 1 / 3, "d": 1 / 3, "n": 1 / 3})
    total = w(_losses(2.5, 0.25, 0.75))
    assert total.item() == pytest.approx((2.5 + 0.25 + 0.75) / 3)


def test_manual_weights_multiply_each_loss():
    w = make_weighting(WeightingSpec("manual", weights={"s": 1.0, "d": 0.1, "n": 0.0}), "sdn")
    assert w.active_tasks == "sd"
    assert w(_losses(2.0, 3.0, 100.0)).item() == pytest.approx(2.0 + 0.3)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"s": 1.0}, r"missing for task\(s\) 'dn'"),
        ({"s": 1.0, "d": -1.0, "n": 0.0}, "finite number >= 0"),
        ({"s": 0.0, "d": 0.0, "n": 0.0}, "all manual weights are 0"),
        ({"s": 1.0, "d": 1.0, "n": 1.0, "k": 1.0}, r"not in 'sdn'"),
        (None, "needs weights"),
    ],
)
def test_bad_manual_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        make_weighting(WeightingSpec("manual", weights=weights), "sdn")


@pytest.mark.parametrize(
    ("tasks", "main", "expected"),
    [
        # supplement App. B: main task 1; auxiliaries by the table
        ("sd", "s", {"s": 1.0, "d": 0.1}),
        ("sd", "d", {"s": 0.01, "d": 1.0}),
        ("dn", "d", {"d": 1.0, "n": 0.01}),
        ("dn", "n", {"d": 0.01, "n": 1.0}),
        ("sD", "s", {"s": 1.0, "D": 0.1}),
        ("dD", "d", {"d": 1.0, "D": 0.01}),
        ("nE", "n", {"n": 1.0, "E": 0.1}),
        ("sdDnE", "s", {"s": 1.0, "d": 0.1, "D": 0.1, "n": 0.1, "E": 0.1}),
        ("sdDnE", "D", {"s": 0.1, "d": 0.1, "D": 1.0, "n": 0.1, "E": 0.1}),
    ],
)
def test_optimal_weights_follow_the_supplement(tasks, main, expected):
    assert static_weights("optimal", tasks, main=main) == pytest.approx(expected)


def test_optimal_weights_refuse_what_the_paper_does_not_define():
    with pytest.raises(ValueError, match="cover auxiliaries s, d, n, D, E"):
        static_weights("optimal", "sk", main="s")
    with pytest.raises(ValueError, match="needs the main task"):
        static_weights("optimal", "sd")
    with pytest.raises(ValueError, match="exactly one main task"):
        static_weights("optimal", "sdn", main="sd")
    with pytest.raises(ValueError, match="not among the tasks"):
        static_weights("optimal", "sd", main="n")


def test_mtrobust_lambda():
    assert static_weights("mtrobust", "sdn", main="s", lam=0.1) == pytest.approx(
        {"s": 1.0, "d": 0.05, "n": 0.05}
    )
    assert static_weights("mtrobust", "sdn", main="sd", lam=0.3) == pytest.approx(
        {"s": 0.5, "d": 0.5, "n": 0.3}
    )


def test_unknown_scheme_lists_choices():
    with pytest.raises(ValueError, match="unknown weighting 'equal'; choose from gradnorm, manual"):
        make_weighting("equal", "sd")
    assert set(WEIGHTINGS) == {
        "uniform",
        "manual",
        "optimal",
        "mtrobust",
        "gradnorm",
        "uncertainty",
    }


class _Toy(torch.nn.Module):
    """Two tasks on one shared layer; the second task's loss is 100x the first's."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.shared = torch.nn.Linear(4, 8)
        self.head = torch.nn.Linear(8, 1)
        self.x = torch.randn(32, 4, generator=g)
        self.y = torch.randn(32, 1, generator=g)

    def losses(self):
        base = (self.head(torch.relu(self.shared(self.x))) - self.y).abs().mean()
        return {"s": base, "d": 100.0 * base}


def test_gradnorm_raises_the_weight_of_the_task_with_the_smaller_gradient():
    """Documented direction: equal starting weights; the 100x task's weighted gradient norm is
    above the mean, so its weight falls and the small task's rises."""
    toy = _Toy()
    w = make_weighting(WeightingSpec("gradnorm", lr=0.01), "sd")
    assert isinstance(w, GradNormWeighting)
    opt = torch.optim.SGD(toy.parameters(), lr=1e-4)
    history = [w.weights()["s"]]
    for _ in range(10):
        total = w(toy.losses(), [toy.shared.weight])
        opt.zero_grad()
        total.backward()
        opt.step()
        w.step()
        history.append(w.weights()["s"])
    assert history == sorted(history) and history[-1] > history[0] == 0.5
    weights = w.weights()
    assert weights["s"] + weights["d"] == pytest.approx(1.0)
    assert weights["d"] < 0.5 < weights["s"]


def test_gradnorm_fixed_point_balances_gradient_norms():
    """With equal training rates, G_i = w_i·||∇L_i|| equalise: w ∝ 1/100 : 1 → (100, 1)/101."""
    toy = _Toy()
    w = make_weighting(WeightingSpec("gradnorm", lr=0.02), "sd")
    for _ in range(100):
        w(toy.losses(), [toy.shared.weight])
        w.step()
    assert w.weights()["s"] == pytest.approx(100 / 101, abs=0.01)


def test_uncertainty_weights_converge_to_inverse_losses():
    """Kendall et al.: the optimum of ½e^{-s}L + ½s is e^s = L, i.e. weight 1/(2L)."""
    w = make_weighting(WeightingSpec("uncertainty", lr=0.05), "sd")
    assert isinstance(w, UncertaintyWeighting)
    assert w.weights() == pytest.approx({"s": 0.5, "d": 0.5})
    losses = {"s": torch.tensor(0.05), "d": torch.tensor(5.0)}
    first = None
    for i in range(1500):
        w(losses).backward()
        w.step()
        if i == 0:
            first = w.weights()
    assert first["s"] > 0.5 > first["d"]  # the documented direction from the first step
    assert w.weights()["s"] == pytest.approx(1 / (2 * 0.05), rel=0.05)
    assert w.weights()["d"] == pytest.approx(1 / (2 * 5.0), rel=0.05)


def test_learned_weighting_state_round_trips_with_weights_only():
    toy = _Toy()
    w = make_weighting(WeightingSpec("gradnorm", lr=0.01), "sd")
    for _ in range(3):
        w(toy.losses(), [toy.shared.weight])
        w.step()
    buffer = io.BytesIO()
    torch.save(w.state_dict(), buffer)
    buffer.seek(0)
    fresh = make_weighting(WeightingSpec("gradnorm", lr=0.01), "sd")
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.weights() == w.weights()
    assert torch.equal(fresh.initial_losses, w.initial_losses)
    for a, b in zip(
        fresh.optimizer.state_dict()["state"].values(),
        w.optimizer.state_dict()["state"].values(),
        strict=True,
    ):
        assert torch.equal(a["exp_avg"], b["exp_avg"])


def test_gradnorm_needs_the_shared_layer():
    toy = _Toy()
    w = make_weighting("gradnorm", "sd")
    with pytest.raises(ValueError, match="shared"):
        w(toy.losses())
