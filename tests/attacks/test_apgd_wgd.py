"""APGD's schedule invariants and WGD's weighting (hand-computed values and oracles)."""

from __future__ import annotations

import itertools

import pytest
import torch

from rts.attacks import apgd, pgd, wgd
from rts.attacks.apgd import apgd_trace, checkpoints
from rts.attacks.metrics import relative_vulnerability
from rts.attacks.objective import per_task_losses, weighted
from rts.attacks.wgd import attack_rate_weights
from rts.tasks.losses import l1_loss, mse_error
from tests.attacks.conftest import TinyMultiTask, make_images, make_labels


def test_checkpoints_hand_computed():
    # N=100: k0 = 22, shrink by 3 down to 6
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    # N=25: k0 = 5, shrink by 1 down to 1
    assert checkpoints(25) == [5, 9, 12, 14, *range(15, 26)]
    assert checkpoints(1) == [1]


def _trace(model, x, y, tasks, *, steps, norm="linf", eps=8 / 255, random_start=True, seed=0):
    return apgd_trace(
        model,
        x,
        y,
        tuple(tasks),
        None,
        weighted({k: 1 / len(tasks) for k in tasks}),
        eps=eps,
        steps=steps,
        step_size=2 * eps,
        norm=norm,
        rho=0.75,
        random_start=random_start,
        generator=torch.Generator().manual_seed(seed),
    )


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_best_loss_never_decreases_and_schedule_halves(norm):
    model = TinyMultiTask("sd")
    x, y = make_images(4), make_labels("sd", 4)
    steps = 25
    x_best, loss_best, best, eta = _trace(model, x, y, "sd", steps=steps, norm=norm, eps=0.1)
    assert len(best) == len(eta) == steps + 1
    for before, after in itertools.pairwise(best):
        assert (after >= before).all()  # more steps never lower the best loss
    marks = set(checkpoints(steps))
    for t in range(1, steps + 1):
        ratio = eta[t] / eta[t - 1]
        if t in marks:
            assert set(ratio.tolist()) <= {0.5, 1.0}
        else:
            assert (ratio == 1).all()
    assert (eta[-1] < eta[0]).any()  # the schedule did act on some sample
    with torch.no_grad():
        at_best = per_task_losses(model, x_best, y, "sd")
    torch.testing.assert_close((at_best["s"] + at_best["d"]) / 2, loss_best, rtol=1e-5, atol=1e-6)


def test_apgd_halves_every_checkpoint_when_stuck():
    """Constant loss (no input dependence): never an increase, so every checkpoint halves."""

    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.b = torch.nn.Parameter(torch.zeros(1, 1, 40, 24))

        def forward(self, x):
            return {"d": self.b.expand(x.shape[0], 1, 40, 24) + 0 * x[:, :1]}

    x, y = make_images(2), make_labels("d", 2)
    with pytest.warns(RuntimeWarning, match="input gradient is zero"):
        _, _, _, eta = _trace(Constant(), x, y, "d", steps=10, eps=0.1)
    marks = checkpoints(10)  # [2, 4, 5, 6, ..., 10]
    expected = 0.2
    for t in range(1, 11):
        if t in marks:
            expected /= 2
        torch.testing.assert_close(eta[t], torch.full((2,), expected))


def test_apgd_no_random_start_is_deterministic_without_generator():
    model = TinyMultiTask("d")
    x, y = make_images(2), make_labels("d", 2)
    a = apgd(model, x, y, "d", eps=0.05, steps=5, random_start=False)
    b = apgd(model, x, y, "d", eps=0.05, steps=5, random_start=False)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_attack_rate_weights_hand_computed():
    clean = {"a": torch.tensor([1.0]), "b": torch.tensor([2.0])}
    now = {"a": torch.tensor([2.0]), "b": torch.tensor([2.0])}
    # L~ = [2, 1], mean 1.5, r = [4/3, 2/3]; r^-1 = [3/4, 3/2], mean 9/8 -> rho = [2/3, 4/3]
    rho = attack_rate_weights(now, clean, gamma=1.0)
    torch.testing.assert_close(rho["a"], torch.tensor([2 / 3]))
    torch.testing.assert_close(rho["b"], torch.tensor([4 / 3]))
    # gamma = 2: r^-2 = [9/16, 9/4], mean 45/32 -> rho = [0.4, 1.6]
    rho = attack_rate_weights(now, clean, gamma=2.0)
    torch.testing.assert_close(rho["a"], torch.tensor([0.4]))
    torch.testing.assert_close(rho["b"], torch.tensor([1.6]))
    rho = attack_rate_weights(now, clean, gamma=0.0)
    torch.testing.assert_close(rho["a"], torch.tensor([1.0]))


def test_attack_rate_weights_guard_undefined_task():
    clean = {"a": torch.tensor([0.0, 1.0]), "b": torch.tensor([2.0, 1.0])}
    now = {"a": torch.tensor([5.0, 1.0]), "b": torch.tensor([3.0, 1.0])}
    rho = attack_rate_weights(now, clean, gamma=1.0)
    torch.testing.assert_close(rho["a"], torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(rho["b"], torch.tensor([1.0, 1.0]))


def test_wgd_survives_a_task_without_valid_pixels():
    model = TinyMultiTask("dn")
    x, y = make_images(2), make_labels("dn", 2)
    y["d"][0] = float("nan")  # sample 0 has no valid depth pixel: clean loss 0
    x_adv = wgd(model, x, y, "dn", eps=0.05, steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x_adv).all()
    assert (x_adv[0] != x[0]).any()  # still attacked through n


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_single_task_wgd_moves_as_pgd(norm):
    model = TinyMultiTask("d").double()
    x = make_images(3, dtype=torch.float64)
    y = make_labels("d", 3, dtype=torch.float64)
    kw = {"eps": 0.05, "steps": 5, "norm": norm}
    a = wgd(model, x, y, "d", generator=torch.Generator().manual_seed(3), **kw)
    b = pgd(model, x, y, "d", generator=torch.Generator().manual_seed(3), **kw)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_wgd_gamma_zero_is_relative_weight():
    """γ = 0 is the published RELATIVE_WEIGHT: PGD on Σ_i L_i / L_i(0) (clean reference)."""
    model = TinyMultiTask("sd").double()
    x = make_images(3, dtype=torch.float64)
    y = make_labels("sd", 3, dtype=torch.float64)
    with torch.no_grad():
        clean = per_task_losses(model, x, y, "sd")
    from rts.tasks.losses import cross_entropy_loss

    rel = {
        "s": lambda p, t: cross_entropy_loss(p, t) / clean["s"],
        "d": lambda p, t: l1_loss(p, t) / clean["d"],
    }
    kw = {"eps": 0.05, "steps": 4, "random_start": False}
    a = wgd(model, x, y, "sd", gamma=0.0, balance="loss", **kw)
    b = pgd(model, x, y, "sd", losses=rel, **kw)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    c = wgd(model, x, y, "sd", gamma=1.0, balance="loss", **kw)
    assert not torch.allclose(a, c)  # γ matters


READINGS = [
    {},  # the default: balance=gradient, gamma=1
    {"gamma": 1.0, "balance": "loss"},
    {"gamma": 0.0, "balance": "loss"},
    {"gamma": -1.0, "balance": "loss"},
    {"gamma": 4.0, "balance": "loss"},
    {"select": "cyclic"},
    {"balance": "gradient", "gamma": 0.0},
    {"balance": "gradient", "gamma": -1.0},
]
"""The WGD readings (options) the tests run: every one must behave as an attack."""


def _down_scaled_toy():
    model = TinyMultiTask("dn", seed=1)
    x, y = make_images(8, seed=1), make_labels("dn", 8, seed=1)
    return model, x, y, {"n": lambda p, t: 0.01 * l1_loss(p, t)}


@pytest.mark.parametrize(
    "reading", READINGS, ids=lambda r: ",".join(f"{k}={v}" for k, v in r.items()) or "default"
)
def test_every_wgd_reading_attacks_a_down_scaled_task_harder_than_pgd(reading):
    """With n's loss scaled by 0.01, PGD barely attacks n; every WGD reading moves it more."""
    model, x, y, losses = _down_scaled_toy()
    kw = {"eps": 4 / 255, "steps": 10, "losses": losses}
    x_p = pgd(model, x, y, "dn", generator=torch.Generator().manual_seed(0), **kw)
    x_w = wgd(model, x, y, "dn", generator=torch.Generator().manual_seed(0), **kw, **reading)
    assert ((x_w - x).abs().amax() <= 4 / 255 + 1e-7) and x_w.min() >= 0 and x_w.max() <= 1
    with torch.no_grad():
        clean = mse_error(model(x)["n"], y["n"])
        v_p = relative_vulnerability(clean, mse_error(model(x_p)["n"], y["n"]))
        v_w = relative_vulnerability(clean, mse_error(model(x_w)["n"], y["n"]))
    assert v_w > v_p
    assert v_w > 0


def test_attack_rate_weights_negative_gamma_is_proportional_to_r():
    """γ = -1 (the paper's wording): ρ_i ∝ r_i, normalised to mean 1."""
    clean = {"a": torch.tensor([1.0]), "b": torch.tensor([2.0])}
    now = {"a": torch.tensor([2.0]), "b": torch.tensor([2.0])}
    # r = [4/3, 2/3], mean 1 -> rho = r
    rho = attack_rate_weights(now, clean, gamma=-1.0)
    torch.testing.assert_close(rho["a"], torch.tensor([4 / 3]))
    torch.testing.assert_close(rho["b"], torch.tensor([2 / 3]))


def _relative_losses(model, x, y, keys):
    with torch.no_grad():
        clean = per_task_losses(model, x, y, keys)
    from rts.tasks.losses import cross_entropy_loss

    base = {"s": cross_entropy_loss, "d": l1_loss}
    return {k: (lambda p, t, k=k: base[k](p, t) / clean[k]) for k in keys}


def test_wgd_cyclic_attacks_one_task_per_step_by_hand():
    """select=cyclic: step t is a PGD step on task t mod M's relative loss alone."""
    model = TinyMultiTask("sd").double()
    x = make_images(3, dtype=torch.float64)
    y = make_labels("sd", 3, dtype=torch.float64)
    eps, alpha, steps = 0.05, 0.02, 5
    rel = _relative_losses(model, x, y, "sd")
    x_hand = x.clone()
    for t in range(steps):
        k = "sd"[t % 2]
        xa = x_hand.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(rel[k](model(xa)[k], y[k]).sum(), xa)
        x_hand = (x + (x_hand + alpha * g.sign() - x).clamp(-eps, eps)).clamp(0, 1).detach()
    ours = wgd(
        model,
        x,
        y,
        "sd",
        eps=eps,
        steps=steps,
        step_size=alpha,
        random_start=False,
        select="cyclic",
    )
    torch.testing.assert_close(ours, x_hand, rtol=0, atol=1e-12)
    assert [c for c in model.calls[-steps:]] == ["s", "d", "s", "d", "s"]  # one head per step


def test_wgd_gradient_balance_one_step_by_hand():
    """balance=gradient: x + α·sign(Σ_i w_i ∇L_i / ‖∇L_i‖₁) (γ = 0: ρ = 1), per sample."""
    model = TinyMultiTask("sd").double()
    x = make_images(3, dtype=torch.float64)
    y = make_labels("sd", 3, dtype=torch.float64)
    eps, alpha = 0.05, 0.02
    xa = x.clone().requires_grad_(True)
    from rts.tasks.losses import cross_entropy_loss

    grads = {}
    for k, loss in (("s", cross_entropy_loss), ("d", l1_loss)):
        (g,) = torch.autograd.grad(loss(model(xa)[k], y[k]).sum(), xa)
        grads[k] = g / g.flatten(1).abs().sum(1).view(-1, 1, 1, 1)
    w = {"s": 0.3, "d": 0.7}
    direction = w["s"] * grads["s"] + w["d"] * grads["d"]
    expected = (x + (alpha * direction.sign()).clamp(-eps, eps)).clamp(0, 1)
    ours = wgd(
        model,
        x,
        y,
        "sd",
        w,
        eps=eps,
        steps=1,
        step_size=alpha,
        random_start=False,
        gamma=0.0,
        balance="gradient",
    )
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-12)
    plain = wgd(
        model,
        x,
        y,
        "sd",
        w,
        eps=eps,
        steps=1,
        step_size=alpha,
        random_start=False,
        gamma=0.0,
        balance="loss",
    )
    assert not torch.equal(ours, plain)  # the balance changes the step


@pytest.mark.parametrize(
    "reading", READINGS[1:], ids=lambda r: ",".join(f"{k}={v}" for k, v in r.items()) or "default"
)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_every_wgd_reading_batch_equals_per_sample_and_one_task_is_pgd(reading, norm):
    model = TinyMultiTask("sdn").double()
    x = make_images(3, dtype=torch.float64)
    y = make_labels("sdn", 3, dtype=torch.float64)
    kw = {"eps": 0.05 if norm == "linf" else 0.5, "steps": 3, "norm": norm, "random_start": False}
    batch = wgd(model, x, y, "sdn", **kw, **reading)
    for i in range(3):
        one = wgd(
            model, x[i : i + 1], {k: v[i : i + 1] for k, v in y.items()}, "sdn", **kw, **reading
        )
        torch.testing.assert_close(batch[i : i + 1], one, rtol=0, atol=1e-12)
    a = wgd(model, x, y, "d", **kw, **reading)
    b = pgd(model, x, y, "d", **kw)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("option", "match"),
    [
        ({"gamma": float("inf")}, "gamma must be a finite number"),
        ({"gamma": "abc"}, "gamma must be a number"),
        ({"select": "random"}, "unknown select 'random'; choose from all, cyclic"),
        ({"balance": "grad"}, "unknown balance 'grad'; choose from loss, gradient"),
    ],
)
def test_wgd_rejects_bad_readings(option, match):
    model = TinyMultiTask("d")
    x, y = make_images(1), make_labels("d", 1)
    with pytest.raises(ValueError, match=match):
        wgd(model, x, y, "d", eps=0.1, steps=1, **option)
