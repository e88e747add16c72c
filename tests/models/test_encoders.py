"""Encoder registry: shapes, gradients, errors, local weights files."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
import torchvision

from rts.models import ENCODERS, MissingExtraError, build_encoder, build_model, get_encoder
from rts.models.encoders import register_encoder

HEAVY = {"resnet101", "resnet152", "wide_resnet50_2"}


def _encoder_params():
    for name, spec in ENCODERS.items():
        marks = []
        if spec.extra and importlib.util.find_spec(spec.extra) is None:
            marks.append(pytest.mark.skip(reason=f"needs the {spec.extra} extra"))
        if name in HEAVY:
            marks.append(pytest.mark.slow)
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_encoder_params()))
def test_every_parameter_gets_a_gradient_and_shapes_follow_the_spec(name):
    """Non-square 40x24 input: catches H/W swaps; every encoder and decoder weight learns."""
    spec = get_encoder(name)
    model = build_model(name, "sd", decoder_width=8, seed=0)
    x = torch.rand(2, 3, 40, 24, generator=torch.Generator().manual_seed(0))
    rep = model.encoder((x - model.mean) / model.std)
    assert rep.shape[:2] == (2, spec.channels)
    # a stride-s encoder maps 40x24 to about (40/s, 24/s): ResNets round up (ceil)
    assert abs(rep.shape[2] - 40 / spec.stride) < 1 and abs(rep.shape[3] - 24 / spec.stride) < 1
    out = model(x)
    assert out["s"].shape == (2, 18, 40, 24) and out["d"].shape == (2, 1, 40, 24)
    g = torch.Generator().manual_seed(1)
    loss = sum((v * torch.randn(v.shape, generator=g)).sum() for v in out.values())
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert p.grad.abs().sum() > 0, pname


def test_resnet_feature_map_is_ceil_of_stride():
    enc = build_encoder("resnet18")
    assert enc(torch.rand(1, 3, 40, 24)).shape == (1, 512, math.ceil(40 / 32), math.ceil(24 / 32))
    assert enc(torch.rand(1, 3, 64, 96)).shape == (1, 512, 2, 3)


def test_unknown_encoder_lists_choices():
    with pytest.raises(ValueError, match=r"unknown encoder 'resnet19'; choose from .*resnet18"):
        get_encoder("resnet19")
    with pytest.raises(ValueError, match="resnet50"):
        build_model("vgg16", "s")


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("resnet18", channels=512, stride=32, cost=1.0)(lambda: torch.nn.Identity())
    assert ENCODERS["resnet18"].channels == 512


def test_bad_stride_is_refused():
    with pytest.raises(ValueError, match="power of two"):
        register_encoder("odd", channels=8, stride=24, cost=1.0)(lambda: torch.nn.Identity())
    assert "odd" not in ENCODERS


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed")
def test_xception_without_timm_names_the_extra():
    with pytest.raises(MissingExtraError, match=r'pip install "robust-task-search\[timm\]"'):
        build_encoder("xception")
    # it is a ValueError too, so `rts` reports it in one line
    with pytest.raises(ValueError):
        build_model("xception", "s")


def test_local_torchvision_weights_load(tmp_path):
    """A torchvision ImageNet-style file (with fc and a DataParallel prefix) loads exactly."""
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    enc = build_encoder("resnet18", weights_path=path)
    for key, value in enc.state_dict().items():
        assert torch.equal(value, reference.state_dict()[key]), key
    model = build_model("resnet18", "d", decoder_width=8, weights_path=path)
    assert torch.equal(model.encoder.conv1.weight, reference.conv1.weight)


def test_mismatched_or_unsafe_weights_are_refused(tmp_path):
    wrong = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), wrong)
    with pytest.raises(ValueError, match="do not match the encoder"):
        build_encoder("resnet18", weights_path=wrong)
    evil = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "why": _Pickled()}, evil)
    with pytest.raises(ValueError, match="weights_only=True"):
        build_encoder("resnet18", weights_path=evil)
    with pytest.raises(FileNotFoundError):
        build_encoder("resnet18", weights_path=tmp_path / "missing.pth")


class _Pickled:
    """An arbitrary object: loading it would run pickle's object machinery."""


def test_every_encoder_declares_a_cost_relative_to_resnet18():
    """The search's compute accounting reads the cost from the registry (ResNet18 = 1)."""
    assert ENCODERS["resnet18"].cost == 1.0
    costs = {name: spec.cost for name, spec in ENCODERS.items()}
    assert all(c > 0 for c in costs.values())
    assert costs["resnet18"] < costs["resnet34"] < costs["resnet50"] < costs["resnet101"]


def test_register_encoder_rejects_a_nonpositive_cost():
    with pytest.raises(ValueError, match="cost must be > 0"):
        register_encoder("free", channels=8, stride=32, cost=0.0)(lambda: torch.nn.Identity())


@pytest.mark.parametrize(("name", "channels"), [("resnet18_s8", 128), ("resnet50_s8", 512)])
def test_truncated_resnets_keep_an_8x8_feature_map_at_64px(name, channels):
    """Stem + layer1 + layer2: output stride 8 by construction, where the full ResNet gives 2x2."""
    spec = get_encoder(name)
    assert (spec.stride, spec.channels) == (8, channels)
    enc = build_encoder(name)
    assert [n for n, _ in enc.named_children()][-2:] == ["layer1", "layer2"]
    assert enc(torch.rand(1, 3, 64, 64)).shape == (1, channels, 8, 8)
    assert enc(torch.rand(1, 3, 40, 24)).shape == (1, channels, 5, 3)
    assert build_encoder(name.removesuffix("_s8"))(torch.rand(1, 3, 64, 64)).shape[-2:] == (2, 2)


@pytest.mark.parametrize("name", ["resnet18_s8", "resnet50_s8"])
def test_truncated_resnet_cost_is_its_flops_over_resnet18s(name):
    """The registered cost is what the docstring says: forward FLOPs at 224 px / ResNet18's."""
    from torch.utils.flop_counter import FlopCounterMode

    def flops(module):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            module(torch.rand(1, 3, 224, 224))
        return counter.get_total_flops()

    ratio = flops(build_encoder(name)) / flops(torchvision.models.resnet18(weights=None))
    assert get_encoder(name).cost == pytest.approx(ratio, rel=0.02)
    assert get_encoder(name).cost < get_encoder(name.removesuffix("_s8")).cost


def test_truncated_trunk_loads_its_full_resnets_weights_file(tmp_path):
    """resnet18's ImageNet-style file loads into resnet18_s8 (the stages it leaves out are
    skipped); a file of another architecture is still refused."""
    torch.manual_seed(4)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    enc = build_encoder("resnet18_s8", weights_path=path)
    for key, value in enc.state_dict().items():
        assert torch.equal(value, reference.state_dict()[key]), key
    wrong = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), wrong)
    with pytest.raises(ValueError, match="do not match the encoder"):
        build_encoder("resnet18_s8", weights_path=wrong)
