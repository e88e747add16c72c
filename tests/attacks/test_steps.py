"""Each attack owns its step rule: the paper's α = eps/4 for the fixed-step attacks (oracle:
torchattacks at the paper's settings), APGD's own 2·eps that no shared step size reaches, and
per-attack options."""

from __future__ import annotations

import copy

import pytest
import torch
import torchattacks

from rts.attacks import ATTACKS, mim, pgd, run_attack, wgd
from rts.attacks.evaluate import evaluate_robustness
from rts.attacks.registry import fixed_step_attacks, parse_option_items
from tests.attacks.conftest import TinyMultiTask, Wrapped, ce_per_sample, make_images, make_labels

LOSSES = {"y": ce_per_sample}
EPS = 8 / 255


def _digits(digits):
    net, x, y = digits
    net = copy.deepcopy(net).double()
    return net, Wrapped(net), x[:64].double(), y[:64]


def test_pgd_default_step_is_eps_over_4_and_matches_torchattacks_at_the_papers_settings(digits):
    """The paper: L-inf PGD, 25 steps, eps 8/255, α 2/255; our defaults give exactly that."""
    net, model, x, y = _digits(digits)
    ours = pgd(model, x, {"y": y}, "y", eps=EPS, steps=25, random_start=False, losses=LOSSES)
    theirs = torchattacks.PGD(net, eps=EPS, alpha=2 / 255, steps=25, random_start=False)(x, y)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-7)
    # the budget is used, so the step size really mattered (Madry's 2.5·eps/25 ≠ 2/255 differs)
    assert ((ours - x).abs().amax(dim=(1, 2, 3)) > EPS * 0.99).float().mean() > 0.5
    madry = pgd(
        model, x, {"y": y}, "y", eps=EPS, steps=25, step_size=2.5 * EPS / 25,
        random_start=False, losses=LOSSES,
    )  # fmt: skip
    assert not torch.allclose(ours, madry)


@pytest.mark.parametrize("eps", [4 / 255, 8 / 255, 0.1])
@pytest.mark.parametrize("name", ["pgd", "mim", "wgd"])
def test_fixed_step_default_is_eps_over_4(name, eps):
    model = TinyMultiTask("sd").double()
    x, y = make_images(2, dtype=torch.float64), make_labels("sd", 2, dtype=torch.float64)
    fn = {"pgd": pgd, "mim": mim, "wgd": wgd}[name]
    kw = {"eps": eps, "steps": 4, "random_start": False}
    torch.testing.assert_close(
        fn(model, x, y, "sd", **kw), fn(model, x, y, "sd", step_size=eps / 4, **kw), rtol=0, atol=0
    )


def test_mim_default_matches_torchattacks_mifgsm_defaults(digits):
    """torchattacks' MIFGSM defaults (eps 8/255, alpha 2/255, decay 1) = ours at eps 8/255."""
    net, model, x, y = _digits(digits)
    ours = mim(model, x, {"y": y}, "y", eps=EPS, steps=10, losses=LOSSES)
    theirs = torchattacks.MIFGSM(net, eps=EPS, alpha=2 / 255, steps=10, decay=1.0)(x, y)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-7)


def test_registry_says_which_attacks_take_the_shared_step():
    assert fixed_step_attacks() == tuple(n for n in ATTACKS if n in ("pgd", "mim", "wgd"))
    assert not ATTACKS["apgd"].fixed_step and not ATTACKS["fgsm"].fixed_step
    for name, spec in ATTACKS.items():
        assert spec.step_rule, name  # every attack documents its default step
        assert ("step_size" in spec.options) == spec.iterative


def test_apgd_ignores_a_shared_step_size_but_takes_its_own():
    model = TinyMultiTask("sd")
    x, y = make_images(3), make_labels("sd", 3)

    def run(**kw):
        gen = torch.Generator().manual_seed(0)
        return run_attack("apgd", model, x, y, "sd", eps=EPS, steps=6, generator=gen, **kw)

    plain = run()
    torch.testing.assert_close(run(step_size=1 / 255), plain, rtol=0, atol=0)
    torch.testing.assert_close(run(step_size=2 * EPS), plain, rtol=0, atol=0)
    torch.testing.assert_close(run(options={"step_size": 2 * EPS}), plain, rtol=0, atol=0)
    # its own option does reach it (so the equalities above could fail)
    assert not torch.equal(run(options={"step_size": EPS / 8}), plain)


def test_ensemble_apgd_rows_do_not_depend_on_the_shared_step():
    model = TinyMultiTask("sd")
    x, y = make_images(4), make_labels("sd", 4)
    kw = {"attacks": "pgd,apgd", "tasks": "sd", "eps": EPS, "steps": 4, "batch_size": 2}
    a = evaluate_robustness(model, (x, y), **kw)
    b = evaluate_robustness(model, (x, y), step_size=1 / 255, **kw)
    cols = ["adv_loss", "adv_error", "adv_vulnerability"]
    ap, bp = a[a["attack"] == "apgd"], b[b["attack"] == "apgd"]
    assert ap[cols].to_numpy().tolist() == bp[cols].to_numpy().tolist()
    pa, pb = a[a["attack"] == "pgd"], b[b["attack"] == "pgd"]
    assert pa[cols].to_numpy().tolist() != pb[cols].to_numpy().tolist()  # PGD takes it


def test_a_per_attack_option_wins_over_the_shared_step():
    model = TinyMultiTask("sd").double()
    x, y = make_images(2, dtype=torch.float64), make_labels("sd", 2, dtype=torch.float64)
    kw = {"eps": EPS, "steps": 3, "random_start": False}
    ours = run_attack(
        "pgd", model, x, y, "sd", step_size=4 / 255, options={"step_size": "1/255"}, **kw
    )
    torch.testing.assert_close(
        ours, pgd(model, x, y, "sd", step_size=1 / 255, **kw), rtol=0, atol=0
    )
    assert not torch.equal(ours, pgd(model, x, y, "sd", step_size=4 / 255, **kw))
    # random_start as a per-attack option, too
    a = run_attack("pgd", model, x, y, "sd", eps=EPS, steps=3, options={"random_start": False})
    torch.testing.assert_close(a, pgd(model, x, y, "sd", **kw), rtol=0, atol=0)


def test_parse_option_items():
    out = parse_option_items(
        ["pgd.step_size=1/255", "wgd.gamma=-1", "wgd.select=cyclic", "apgd.random_start=false"]
    )
    assert out == {
        "pgd": {"step_size": pytest.approx(1 / 255)},
        "wgd": {"gamma": -1.0, "select": "cyclic"},
        "apgd": {"random_start": False},
    }


@pytest.mark.parametrize(
    ("items", "match"),
    [
        (["pgd.step_size"], "ATTACK.OPTION=VALUE"),
        (["step_size=1"], "ATTACK.OPTION=VALUE"),
        (["cw.c=1"], "unknown attack 'cw'"),
        (["wgd.gama=1"], "unknown option 'gama' for attack 'wgd'; it takes step_size"),
        (["fgsm.step_size=1"], "unknown option 'step_size' for attack 'fgsm'; it takes none"),
        (["pgd.step_size=0"], "pgd.step_size must be > 0"),
        (["pgd.step_size=a/b"], "pgd.step_size must be a number or a fraction"),
        (["apgd.rho=2"], "apgd.rho must be in [0, 1]"),
        (["mim.decay=-1"], "mim.decay must be >= 0"),
        (["wgd.select=some"], "unknown wgd.select 'some'; choose from all, cyclic"),
        (["pgd.random_start=maybe"], "pgd.random_start must be true or false"),
        (["wgd.gamma=1", "wgd.gamma=2"], "option wgd.gamma is given twice"),
    ],
)
def test_parse_option_items_rejects(items, match):
    with pytest.raises(ValueError, match=match.replace("[", r"\[").replace("]", r"\]")):
        parse_option_items(items)
