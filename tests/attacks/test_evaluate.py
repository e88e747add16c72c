"""Ensemble evaluation table and the registry helpers."""

from __future__ import annotations

import pytest
import torch

from rts.attacks import ATTACKS, get_attack, parse_attacks, parse_eps, pgd, register_attack
from rts.attacks.evaluate import COLUMNS, WORST, evaluate_robustness, parse_task_sets
from rts.attacks.metrics import relative_vulnerability
from rts.tasks.losses import mse_error
from tests.attacks.conftest import (
    TinyMultiTask,
    Wrapped,
    ce_per_sample,
    make_images,
    make_labels,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [("8/255", 8 / 255), (" 0.03 ", 0.03), ("1e-2", 0.01), ("1", 1.0), (0.5, 0.5), (1, 1.0)],
)
def test_parse_eps(text, value):
    assert parse_eps(text) == pytest.approx(value)


@pytest.mark.parametrize("bad", ["0", "-1/255", "2", "8/0", "abc", "1/2/3", "", "nan", True])
def test_parse_eps_rejects(bad):
    with pytest.raises(ValueError, match="eps must be"):
        parse_eps(bad)


def test_parse_attacks_and_registry():
    assert parse_attacks("pgd, apgd,wgd") == ("pgd", "apgd", "wgd")
    assert set(ATTACKS) == {"fgsm", "pgd", "mim", "apgd", "wgd"}
    with pytest.raises(ValueError, match="unknown attack 'cw'; choose from"):
        parse_attacks("pgd,cw")
    with pytest.raises(ValueError, match="twice"):
        parse_attacks("pgd,pgd")
    with pytest.raises(ValueError, match="already registered"):
        register_attack("pgd")(pgd)
    assert get_attack("fgsm").iterative is False


def test_parse_task_sets():
    assert parse_task_sets("s,sd", "sdn") == [("s",), ("s", "d")]
    assert parse_task_sets(None, "sd") == [("s", "d")]
    assert parse_task_sets(["d", "dn"], None) == [("d",), ("d", "n")]
    with pytest.raises(ValueError, match="appears twice"):
        parse_task_sets("s,s", "sd")


def _data(n=5, tasks="dn"):
    return make_images(n), make_labels(tasks, n)


def test_evaluate_table_shape_and_worst_case():
    model = TinyMultiTask("dn")
    df = evaluate_robustness(
        model, _data(), attacks="fgsm,pgd", tasks="d,dn", eps=8 / 255, steps=2, batch_size=2
    )
    assert list(df.columns) == list(COLUMNS)
    # (2 attacks + worst) × 2 attacked sets × 2 evaluated tasks
    assert len(df) == 12
    assert set(df["attack"]) == {"fgsm", "pgd", WORST}
    assert set(df["attacked"]) == {"d", "dn"}
    assert (df["n"] == 5).all()
    key = ["attacked", "task"]
    worst = df[df["attack"] == WORST].set_index(key)
    for name in ("fgsm", "pgd"):
        one = df[df["attack"] == name].set_index(key)
        assert (worst["adv_error"] >= one["adv_error"] - 1e-12).all()
        assert (worst["adv_loss"] >= one["adv_loss"] - 1e-12).all()
        assert (worst["adv_vulnerability"] >= one["adv_vulnerability"] - 1e-12).all()
        assert (worst["relative_vulnerability"] >= one["relative_vulnerability"] - 1e-12).all()
        torch.testing.assert_close(
            torch.tensor(one["clean_error"].values), torch.tensor(worst["clean_error"].values)
        )
    attacked = df[(df["attacked"] == "d") & (df["task"] == "d") & (df["attack"] == "pgd")]
    assert float(attacked["adv_loss"].iloc[0]) > float(attacked["clean_loss"].iloc[0])


def test_per_image_rows_reproduce_the_table_and_the_worst_case():
    from rts.attacks.evaluate import IMAGE_COLUMNS
    from rts.attacks.statistics import STATISTICS

    model = TinyMultiTask("dn")
    df, images = evaluate_robustness(
        model, _data(), "fgsm,pgd", "dn", eps=8 / 255, steps=2, batch_size=2, per_image=True
    )
    assert list(images.columns) == list(IMAGE_COLUMNS)
    assert len(images) == 3 * 2 * 5  # (2 attacks + worst) x 2 tasks x 5 images
    for (attack, task), g in images.groupby(["attack", "task"]):
        row = df[(df["attack"] == attack) & (df["task"] == task)].iloc[0]
        assert list(g["image"]) == list(range(5))
        assert g["adv_error"].mean() == pytest.approx(row["adv_error"])
        clean, adv = g["clean_error"].to_numpy(), g["adv_error"].to_numpy()
        assert STATISTICS["mean"](clean, adv) == pytest.approx(row["relative_vulnerability"])
    wide = images.pivot_table(index=["task", "image"], columns="attack", values="adv_error")
    assert (wide[WORST] == wide[["fgsm", "pgd"]].max(axis=1)).all()


def test_evaluate_matches_a_direct_attack():
    model = TinyMultiTask("dn")
    x, y = _data(4)
    df = evaluate_robustness(
        model, (x, y), attacks="pgd", tasks="dn", eps=4 / 255, steps=3, batch_size=8, seed=7
    )
    x_adv = pgd(model, x, y, "dn", eps=4 / 255, steps=3, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        clean = mse_error(model(x)["n"], y["n"])
        adv = mse_error(model(x_adv)["n"], y["n"])
    row = df[df["task"] == "n"].iloc[0]
    assert row["attack"] == "pgd" and len(df) == 2  # one attack: no worst-case rows
    assert row["clean_error"] == pytest.approx(float(clean.mean()))
    assert row["adv_error"] == pytest.approx(float(adv.mean()))
    assert row["relative_vulnerability"] == pytest.approx(relative_vulnerability(clean, adv))


def test_evaluate_is_deterministic_and_batch_independent():
    model = TinyMultiTask("dn")
    data = _data(4)
    kw = {"attacks": "pgd,wgd", "tasks": "dn", "eps": 4 / 255, "steps": 2, "seed": 1}
    a = evaluate_robustness(model, data, batch_size=2, **kw)
    b = evaluate_robustness(model, data, batch_size=2, **kw)
    assert a.equals(b)
    c = evaluate_robustness(model, data, batch_size=4, **{**kw, "attacks": "fgsm"})
    d = evaluate_robustness(model, data, batch_size=1, **{**kw, "attacks": "fgsm"})
    cols = ["clean_error", "adv_error", "adv_vulnerability"]
    torch.testing.assert_close(torch.tensor(c[cols].values), torch.tensor(d[cols].values))


def test_evaluate_limit_and_progress_and_iterable_data():
    model = TinyMultiTask("d")
    x, y = _data(6, "d")
    batches = [(x[:3], {"d": y["d"][:3]}), (x[3:], {"d": y["d"][3:]})]
    seen = []
    df = evaluate_robustness(
        model, batches, attacks="fgsm", tasks="d", eps=0.01, steps=1, limit=4, progress=seen.append
    )
    assert seen == [3, 1]
    assert (df["n"] == 4).all()


def test_evaluate_classifier_with_custom_loss_and_error(digits):
    net, x, y = digits

    def zero_one(pred, target):
        return (pred.argmax(1) != target).double()

    df = evaluate_robustness(
        Wrapped(net),
        (x[:32], {"y": y[:32]}),
        attacks="fgsm,pgd",
        tasks=[["y"]],
        eps=0.1,
        steps=5,
        eval_tasks=["y"],
        losses={"y": ce_per_sample},
        errors={"y": zero_one},
    )
    worst = df[df["attack"] == WORST].iloc[0]
    assert worst["adv_error"] >= df[df["attack"] == "pgd"].iloc[0]["adv_error"]
    assert worst["adv_error"] > worst["clean_error"]  # robust accuracy below clean accuracy


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tasks": "dk"}, "attacked task.* k not in the model"),
        ({"eval_tasks": "s"}, "evaluated task.* s not in the model"),
        ({"attacks": "pgd,foo"}, "unknown attack 'foo'"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"attack_options": {"apgd": {"rho": 0.5}}}, "attack_options for attack"),
        ({"norm": "l7"}, "unknown norm 'l7'"),
    ],
)
def test_evaluate_rejects_bad_input(kwargs, match):
    model = TinyMultiTask("dn")
    kw = {"attacks": "pgd", "eps": 0.01, "steps": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        evaluate_robustness(model, _data(2), **kw)


def test_attack_options_reach_the_attack():
    model = TinyMultiTask("dn")
    data = _data(2)
    kw = {"attacks": "wgd", "tasks": "dn", "eps": 4 / 255, "steps": 2}
    a = evaluate_robustness(model, data, attack_options={"wgd": {"gamma": 0.0}}, **kw)
    b = evaluate_robustness(model, data, attack_options={"wgd": {"gamma": 3.0}}, **kw)
    assert not a["adv_error"].equals(b["adv_error"])
