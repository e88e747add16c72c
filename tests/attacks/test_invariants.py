"""Invariants of every attack on a multi-task model: budget, domain, batch = per sample, weights."""

from __future__ import annotations

import copy

import pytest
import torch

from rts.attacks import ATTACKS, run_attack
from rts.attacks.objective import per_task_losses
from tests.attacks.conftest import TinyMultiTask, make_images, make_labels

TASKS = "sdn"
ALL = sorted(ATTACKS)
CASES = [(a, n) for a in ALL for n in ATTACKS[a].norms]
EPS = {"linf": 8 / 255, "l2": 0.5, "l2-batch": 0.5}


def _norms(delta, norm):
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def _attack(name, model, x, y, tasks=TASKS, weights=None, **kw):
    kw.setdefault("eps", EPS[kw.get("norm", "linf")])
    kw.setdefault("steps", 3)
    return run_attack(name, model, x, y, tasks, weights, **kw)


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_budget_domain_and_no_mutation(name, norm):
    model = TinyMultiTask(TASKS)
    x = make_images(4)
    y = make_labels(TASKS, 4)
    x_copy, y_copy = x.clone(), {k: v.clone() for k, v in y.items()}
    gen = torch.Generator().manual_seed(0)
    x_adv = _attack(name, model, x, y, norm=norm, generator=gen)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    eps = EPS[norm]
    assert (_norms(x_adv - x, norm) <= eps * (1 + 1e-5)).all()
    assert (x_adv != x).any()
    torch.testing.assert_close(x, x_copy)
    assert y.keys() == y_copy.keys()
    for k in y:
        torch.testing.assert_close(y[k], y_copy[k], equal_nan=True)


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_attack_raises_the_attacked_loss(name, norm):
    model = TinyMultiTask(TASKS)
    x = make_images(4)
    y = make_labels(TASKS, 4)
    gen = torch.Generator().manual_seed(0)
    x_adv = _attack(name, model, x, y, tasks="d", norm=norm, generator=gen, steps=5)
    with torch.no_grad():
        before = per_task_losses(model, x, y, "d")["d"]
        after = per_task_losses(model, x_adv, y, "d")["d"]
    assert after.mean() > before.mean()


@pytest.mark.parametrize(("name", "norm"), [c for c in CASES if c[1] != "l2-batch"])
def test_batch_equals_per_sample(name, norm):
    model = TinyMultiTask(TASKS).double()
    x = make_images(3, dtype=torch.float64)
    y = make_labels(TASKS, 3, dtype=torch.float64)
    kw = (
        {"norm": norm}
        if ATTACKS[name].iterative is False
        else {"norm": norm, "random_start": False}
    )
    batch = _attack(name, model, x, y, **kw)
    for i in range(3):
        one = _attack(name, model, x[i : i + 1], {k: v[i : i + 1] for k, v in y.items()}, **kw)
        torch.testing.assert_close(batch[i : i + 1], one, rtol=0, atol=1e-12)


def test_l2_batch_is_the_published_whole_batch_sphere():
    """The compat norm puts the whole batch's δ on one sphere (per sample ~ eps/sqrt(N))."""
    model = TinyMultiTask(TASKS).double()
    x = make_images(4, dtype=torch.float64) * 0.5 + 0.25  # no clamp active
    y = make_labels(TASKS, 4, dtype=torch.float64)
    x_adv = _attack("pgd", model, x, y, norm="l2-batch", eps=0.5, random_start=False, steps=1)
    # one step from x: δ = eps·g/N, then rescaled onto the batch sphere: δ = eps · g / ‖g‖_batch
    xg = x.clone().requires_grad_(True)
    losses = per_task_losses(model, xg, y, TASKS)
    total = sum(v for v in losses.values()) / len(losses)
    (g,) = torch.autograd.grad(total.sum(), xg)
    torch.testing.assert_close(x_adv, x + 0.5 * g / g.norm())
    torch.testing.assert_close((x_adv - x).norm(), torch.tensor(0.5, dtype=torch.float64))


@pytest.mark.parametrize("name", ALL)
def test_zero_weight_task_is_not_attacked(name):
    model = TinyMultiTask(TASKS).double()
    x = make_images(2, dtype=torch.float64)
    y = make_labels(TASKS, 2, dtype=torch.float64)
    kw = {} if not ATTACKS[name].iterative else {"random_start": False}
    model.calls.clear()
    with_zero = _attack(name, model, x, y, tasks="sd", weights={"s": 1.0, "d": 0.0}, **kw)
    assert all(c == "s" for c in model.calls), model.calls  # the d head never ran
    only_s = _attack(name, model, x, y, tasks="s", **kw)
    torch.testing.assert_close(with_zero, only_s, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_weights_sequence_equals_mapping(name):
    model = TinyMultiTask(TASKS).double()
    x = make_images(2, dtype=torch.float64)
    y = make_labels(TASKS, 2, dtype=torch.float64)
    kw = {} if not ATTACKS[name].iterative else {"random_start": False}
    a = _attack(name, model, x, y, tasks="sd", weights=[0.3, 0.7], **kw)
    b = _attack(name, model, x, y, tasks="sd", weights={"s": 0.3, "d": 0.7}, **kw)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", ALL)
def test_mode_restored_even_on_error(name):
    model = TinyMultiTask(TASKS)
    model.train()
    model.heads["s"].eval()  # a mixed state must come back exactly
    x, y = make_images(2), make_labels(TASKS, 2)
    model.fail_after = 0 if name == "fgsm" else 1  # fail mid-attack where there is a middle
    with pytest.raises(RuntimeError, match="injected"):
        _attack(name, model, x, y, steps=3, **({"random_start": False} if name != "fgsm" else {}))
    assert model.training and model.enc1.training and not model.heads["s"].training
    model.fail_after = None
    model.calls.clear()
    _attack(name, model, x, y)
    assert model.training and not model.heads["s"].training


def test_attacks_run_in_eval_mode():
    """Dropout would make the attack random: it must be off during the attack."""
    model = TinyMultiTask("d").double()
    model.enc1 = torch.nn.Sequential(model.enc1, torch.nn.Dropout(0.5))
    model.train()
    x = make_images(2, dtype=torch.float64)
    y = make_labels("d", 2, dtype=torch.float64)
    a = _attack("pgd", model, x, y, tasks="d", random_start=False)
    b = _attack("pgd", model, x, y, tasks="d", random_start=False)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert model.training


@pytest.mark.parametrize("name", [a for a in ALL if ATTACKS[a].iterative])
def test_generator_determinism(name):
    model = TinyMultiTask(TASKS)
    x, y = make_images(2), make_labels(TASKS, 2)

    def run(seed):
        return _attack(
            name, model, x, y, random_start=True, generator=torch.Generator().manual_seed(seed)
        )

    torch.testing.assert_close(run(0), run(0), rtol=0, atol=0)
    assert not torch.equal(run(0), run(1))


def test_global_rng_untouched():
    model = TinyMultiTask(TASKS)
    x, y = make_images(2), make_labels(TASKS, 2)
    state = torch.get_rng_state()
    for name in ALL:
        _attack(name, model, x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(state, torch.get_rng_state())


def test_model_heads_subset_forwarded():
    model = TinyMultiTask(TASKS)
    x, y = make_images(2), make_labels(TASKS, 2)
    model.calls.clear()
    _attack("pgd", model, x, y, tasks="dn", steps=2)
    assert model.calls == ["dn", "dn"]


def test_model_without_tasks_argument():
    """A plain ``forward(x)`` model that returns every head is attacked too."""

    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = TinyMultiTask(TASKS)

        def forward(self, x):
            return self.inner(x)

    model = Plain()
    x, y = make_images(2), make_labels(TASKS, 2)
    x_adv = _attack("pgd", model, x, y, tasks="d")
    assert (x_adv != x).any()
    assert model.inner.calls[-1] == TASKS


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": 0}, "eps must be > 0"),
        ({"eps": -0.1}, "eps must be > 0"),
        ({"eps": 2.0}, r"eps must be in \(0, 1\]"),
        ({"eps": float("nan")}, "eps must be > 0"),
        ({"norm": "l3"}, "unknown norm 'l3'"),
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"steps": 2.5}, "steps must be an integer >= 1"),
        ({"step_size": -1.0}, "step_size must be > 0"),
        ({"tasks": "sz"}, "unknown task 'z'"),
        ({"tasks": "ss"}, "appears twice"),
        ({"tasks": "k"}, "no label for attacked task"),
        ({"weights": {"s": 0.0, "d": 0.0}}, "all attack weights are 0"),
        ({"weights": {"s": -1.0}}, "must be finite and >= 0"),
        ({"weights": {"q": 1.0}}, "not attacked"),
        ({"weights": [1.0]}, "got 1 weights for 3 attacked tasks"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    model = TinyMultiTask(TASKS)
    x, y = make_images(1), make_labels(TASKS, 1)
    kwargs = dict(kwargs)
    tasks = kwargs.pop("tasks", TASKS)
    weights = kwargs.pop("weights", None)
    kwargs.setdefault("eps", 0.1)
    with pytest.raises(ValueError, match=match):
        run_attack("pgd", model, x, y, tasks, weights, steps=kwargs.pop("steps", 2), **kwargs)


def test_l2_batch_only_in_pgd_and_wgd():
    model = TinyMultiTask(TASKS)
    x, y = make_images(1), make_labels(TASKS, 1)
    with pytest.raises(ValueError, match=r"for attack 'apgd'; choose from linf, l2$"):
        run_attack("apgd", model, x, y, TASKS, eps=0.1, steps=2, norm="l2-batch")
    from rts.attacks import mim

    with pytest.raises(ValueError, match="exists only in pgd and wgd"):
        mim(model, x, y, TASKS, eps=0.1, steps=2, norm="l2-batch")


def test_inputs_outside_unit_range_rejected():
    model = TinyMultiTask(TASKS)
    x, y = make_images(1), make_labels(TASKS, 1)
    with pytest.raises(ValueError, match=r"x must be in \[0, 1\]"):
        run_attack("fgsm", model, x * 2 - 1, y, TASKS, eps=0.1)


def test_model_must_return_dict():
    net = torch.nn.Conv2d(3, 1, 1)
    x = make_images(1)
    with pytest.raises(ValueError, match="must return a dict"):
        run_attack("fgsm", net, x, {"d": torch.zeros(1, 1, 40, 24)}, "d", eps=0.1)


def test_no_parameter_gradients_accumulate():
    model = TinyMultiTask(TASKS)
    x, y = make_images(2), make_labels(TASKS, 2)
    for name in ALL:
        _attack(name, model, x, y)
    assert all(p.grad is None for p in model.parameters())


def test_float64_kept():
    model = copy.deepcopy(TinyMultiTask(TASKS)).double()
    x = make_images(2, dtype=torch.float64)
    y = make_labels(TASKS, 2, dtype=torch.float64)
    for name in ALL:
        assert _attack(name, model, x, y).dtype == torch.float64


def test_nan_loss_of_one_sample_warns_and_stays_in_domain():
    from rts.tasks.losses import l1_loss

    model = TinyMultiTask("d").double()
    x = make_images(2, dtype=torch.float64)
    y = make_labels("d", 2, dtype=torch.float64)
    poison = torch.tensor([float("nan"), 1.0], dtype=torch.float64)
    alone = _attack("pgd", model, x[1:], {"d": y["d"][1:]}, tasks="d", random_start=False)
    with pytest.warns(RuntimeWarning, match="not finite"):
        x_adv = _attack(
            "pgd",
            model,
            x,
            y,
            tasks="d",
            random_start=False,
            losses={"d": lambda p, t: l1_loss(p, t) * poison},
        )
    assert torch.isfinite(x_adv).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    torch.testing.assert_close(x_adv[0], x[0])  # no usable gradient: sample 0 stays put
    torch.testing.assert_close(x_adv[1:], alone)  # the other sample is attacked as usual
