"""Definition 3 on one model: the chain's vulnerabilities, increments and bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import bootstrap

from rts.attacks import pgd
from rts.attacks.chain import CHAIN_COLUMNS, parse_chain, vulnerability_chain
from rts.attacks.evaluate import attack_per_image, evaluate_robustness
from rts.attacks.metrics import mean_interval
from rts.attacks.objective import per_task_losses
from tests.attacks.conftest import TinyMultiTask, make_images, make_labels

KW = {"eps": 8 / 255, "steps": 3, "batch_size": 3, "seed": 0}


@pytest.fixture(scope="module")
def toy():
    model = TinyMultiTask("sdn", seed=2)
    return model, (make_images(7, seed=2), make_labels("sdn", 7, seed=2))


def test_chain_increments_telescope_and_match_the_ensemble(toy):
    model, data = toy
    table = vulnerability_chain(model, data, "d,dn,sdn", "pgd,wgd", n_resamples=500, **KW)
    assert tuple(table.columns) == CHAIN_COLUMNS
    assert set(table["attack"]) == {"pgd", "wgd", "worst"}
    for _, rows in table.groupby("attack"):
        rows = rows.sort_values("step")
        assert list(rows["tasks"]) == ["d", "dn", "sdn"]
        assert list(rows["added"]) == ["d", "n", "s"]
        av = rows["adv_vulnerability"].to_numpy()
        inc = rows["marginal"].to_numpy()
        assert np.isnan(inc[0])
        assert inc[1:].sum() == pytest.approx(av[-1] - av[0], rel=1e-12, abs=1e-12)
        assert (rows["adv_vulnerability_lo"] <= av + 1e-12).all()
        assert (rows["adv_vulnerability_hi"] >= av - 1e-12).all()
        assert (rows["n"] == 7).all()
    # the same attacks on the same images give the ensemble's Definition-1 numbers
    ens = evaluate_robustness(model, data, "pgd,wgd", "d,dn,sdn", **KW)
    for attack, tasks in (("pgd", "dn"), ("worst", "sdn")):
        expect = ens[(ens["attack"] == attack) & (ens["attacked"] == tasks)]
        got = table[(table["attack"] == attack) & (table["tasks"] == tasks)]
        assert float(got["adv_vulnerability"].iloc[0]) == pytest.approx(
            float(expect["adv_vulnerability"].iloc[0]), rel=1e-12
        )


def test_chain_value_is_the_joint_loss_change_by_hand(toy):
    """AV(T) = E|L_T(x+δ) - L_T(x)| with L_T the uniform mean of the attacked set's losses."""
    model, (x, y) = toy
    table = vulnerability_chain(
        model, (x, y), ["d", "dn"], "pgd", eps=8 / 255, steps=3, batch_size=7, seed=0
    )
    gen = torch.Generator().manual_seed(0)
    x_d = pgd(model, x, y, "d", eps=8 / 255, steps=3, generator=gen)
    x_dn = pgd(model, x, y, "dn", eps=8 / 255, steps=3, generator=gen)
    with torch.no_grad():
        clean = per_task_losses(model, x, y, "dn")
        adv_d = per_task_losses(model, x_d, y, "d")
        adv_dn = per_task_losses(model, x_dn, y, "dn")
    av_d = (adv_d["d"] - clean["d"]).abs()
    av_dn = ((adv_dn["d"] + adv_dn["n"]) / 2 - (clean["d"] + clean["n"]) / 2).abs()
    rows = table.set_index("tasks")
    assert rows.loc["d", "adv_vulnerability"] == pytest.approx(float(av_d.double().mean()))
    assert rows.loc["dn", "adv_vulnerability"] == pytest.approx(float(av_dn.double().mean()))
    assert rows.loc["dn", "marginal"] == pytest.approx(float((av_dn - av_d).double().mean()))


def test_intervals_are_scipys_percentile_bootstrap_over_images(toy):
    model, data = toy
    per_image = attack_per_image(model, data, "pgd", [("d",), ("d", "n")], **KW)
    av_d = per_image.results["pgd", ("d",)].av.double().numpy()
    av_dn = per_image.results["pgd", ("d", "n")].av.double().numpy()
    table = vulnerability_chain(model, data, "d,dn", "pgd", n_resamples=999, **KW)
    for values, lo_col, row in (
        (av_d, "adv_vulnerability", 0),
        (av_dn - av_d, "marginal", 1),  # paired: the same images in both sets
    ):
        ref = bootstrap(
            (values,), np.mean, n_resamples=999, method="percentile",
            rng=np.random.default_rng(0),
        )  # fmt: skip
        got = table.iloc[row]
        assert got[f"{lo_col}_lo"] == pytest.approx(ref.confidence_interval.low, rel=1e-9)
        assert got[f"{lo_col}_hi"] == pytest.approx(ref.confidence_interval.high, rel=1e-9)
    assert np.isnan(mean_interval(np.array([1.0]))[1:]).all()  # one image: no interval


@pytest.mark.parametrize(
    ("chain", "match"),
    [
        ("d", "a chain needs at least two task sets"),
        ("d,sdn", "must add exactly one task to the previous set 'd'"),
        ("dn,d", "must add exactly one task"),
        ("d,dk", "not in the model"),
        ("d,dz", "unknown task 'z'"),
        ("d,d", "appears twice"),
    ],
)
def test_bad_chains_are_one_line_errors(chain, match):
    with pytest.raises(ValueError, match=match):
        parse_chain(chain, "sdn")
