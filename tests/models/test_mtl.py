"""MultiTaskModel: normalisation inside, task subsets, zero-weight tasks, seeding."""

from __future__ import annotations

import pytest
import torch

from rts.models import WeightingSpec, build_model, make_weighting
from rts.tasks.losses import task_losses


@pytest.fixture(scope="module")
def model():
    return build_model("resnet18", "dsn", decoder_width=8, seed=0).eval()


def test_tasks_are_canonical_and_outputs_follow_the_request(model):
    assert model.tasks == "sdn"
    x = torch.rand(2, 3, 40, 24)
    out = model(x)
    assert list(out) == ["s", "d", "n"]
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "s": (2, 18, 40, 24),
        "d": (2, 1, 40, 24),
        "n": (2, 3, 40, 24),
    }
    sub = model(x, "n,s")
    assert list(sub) == ["n", "s"]
    assert torch.equal(sub["n"], out["n"]) and torch.equal(sub["s"], out["s"])


def test_subset_outside_the_model_is_refused(model):
    with pytest.raises(ValueError, match=r"task\(s\) 'k' not in this model; choose from 'sdn'"):
        model(torch.rand(1, 3, 40, 24), "sk")
    with pytest.raises(ValueError, match="unknown task"):
        model(torch.rand(1, 3, 40, 24), "z")
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        model(torch.rand(3, 40, 24))


def test_imagenet_normalisation_happens_inside(model):
    x = torch.rand(2, 3, 40, 24)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        rep = model.encoder((x - mean) / std)
        by_hand = model.decoders["d"](rep, (40, 24))
        assert torch.allclose(model(x, "d")["d"], by_hand, atol=1e-6)
    assert "mean" not in model.state_dict()  # constants, not weights


def test_zero_weight_task_decoder_gets_no_gradient():
    model = build_model("resnet18", "sd", decoder_width=8, seed=0)
    weighting = make_weighting(WeightingSpec("manual", weights={"s": 1.0, "d": 0.0}), "sd")
    assert weighting.active_tasks == "s"
    x = torch.rand(2, 3, 40, 24)
    y = {"s": torch.randint(0, 18, (2, 40, 24)), "d": torch.rand(2, 1, 40, 24)}
    pred = model(x, weighting.active_tasks)
    losses = {k: v.mean() for k, v in task_losses(pred, y, weighting.active_tasks).items()}
    weighting(losses).backward()
    assert all(p.grad is None for p in model.decoders["d"].parameters())
    assert all(p.grad is not None for p in model.decoders["s"].parameters())
    assert model.encoder.conv1.weight.grad.abs().sum() > 0


def test_seeded_build_is_reproducible_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a = build_model("resnet18", "d", decoder_width=8, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    b = build_model("resnet18", "d", decoder_width=8, seed=1)
    c = build_model("resnet18", "d", decoder_width=8, seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["encoder.conv1.weight"], sc["encoder.conv1.weight"])


def test_bad_width_is_refused():
    with pytest.raises(ValueError, match="decoder_width"):
        build_model("resnet18", "d", decoder_width=0)


def test_seeded_heads_do_not_depend_on_the_other_tasks():
    """A task-subset search compares subsets trained from one seed: shared parts start equal."""
    alone = build_model("resnet18", "d", decoder_width=8, seed=3)
    joint = build_model("resnet18", "sdn", decoder_width=8, seed=3)
    for name, value in alone.encoder.state_dict().items():
        assert torch.equal(value, joint.encoder.state_dict()[name]), name
    for name, value in alone.decoders["d"].state_dict().items():
        assert torch.equal(value, joint.decoders["d"].state_dict()[name]), name
    other_seed = build_model("resnet18", "d", decoder_width=8, seed=4)
    assert not torch.equal(other_seed.decoders["d"].head.weight, alone.decoders["d"].head.weight)
    assert not torch.equal(joint.decoders["s"].head.weight[:1], joint.decoders["d"].head.weight)
