"""Decoders: MTRobust's architecture, exact output size, per-task gradients."""

from __future__ import annotations

import math

import pytest
import torch

from rts.models import Decoder, build_model, decoder_widths
from rts.tasks.registry import TASKS


def test_widths_reproduce_mtrobust_and_scale():
    assert decoder_widths(256, 5) == (256, 128, 64, 48, 32)
    assert decoder_widths(256, 4) == (256, 128, 64, 32)  # MTRobust's downscale=2 variant
    assert decoder_widths(16, 5) == (16, 8, 8, 8, 8)  # never below 8 channels
    assert decoder_widths(256, 6) == (256, 128, 64, 48, 32, 16)
    assert decoder_widths(4, 5) == (4, 4, 4, 4, 4)  # nor below the base width
    with pytest.raises(ValueError, match="width"):
        decoder_widths(0, 5)


def _mtrobust_decoder_params(base_match: int, out: int) -> int:
    """Parameter count of MTRobust's ``Decoder`` (models/taskonomy_models.py), by hand."""
    widths = [256, 128, 64, 48, 32]
    total, prev = 0, base_match
    for i, w in enumerate(widths):
        total += prev * w * 2 * 2 + w + 2 * w  # ConvTranspose2d(k=2) + BN
        if i < 4:
            total += w * w * 9 + w + 2 * w  # Conv3x3 + BN
        prev = w
    return total + 32 * out * 9 + out  # the output Conv3x3


def test_parameter_count_matches_mtrobust_and_the_papers_model_size():
    assert sum(p.numel() for p in Decoder(512, 1).parameters()) == _mtrobust_decoder_params(512, 1)
    assert sum(p.numel() for p in Decoder(2048, 18).parameters()) == _mtrobust_decoder_params(
        2048, 18
    )
    # The supplement's Table 1 gives 14.19M parameters for ResNet18 models and 29.66M for
    # ResNet50: the encoder plus two one-channel MTRobust decoders.
    r18 = sum(p.numel() for p in build_model("resnet18", "dD").parameters())
    assert round(r18 / 1e6, 2) == 14.19
    r50 = sum(p.numel() for p in build_model("resnet50", "dD").parameters())
    assert round(r50 / 1e6, 2) == 29.66


@pytest.mark.parametrize("stride", [2, 8, 16, 32])
def test_output_is_exactly_input_size(stride):
    dec = Decoder(12, 3, stride=stride, width=8)
    rep = torch.rand(2, 12, math.ceil(40 / stride), math.ceil(24 / stride))
    assert dec(rep, (40, 24)).shape == (2, 3, 40, 24)
    # an encoder that rounds down gives a smaller map: resized up instead of cropped
    small = torch.rand(2, 12, 72 // stride, 40 // stride)
    assert dec(small, (72, 40)).shape == (2, 3, 72, 40)


def test_crop_keeps_pixels_aligned():
    """The 40x24 output is the top-left of the full 64x32 upsampling, not a resized copy."""
    dec = Decoder(12, 2, stride=32, width=8).eval()
    rep = torch.rand(1, 12, 2, 1)
    full = dec(rep, (64, 32))
    assert full.shape == (1, 2, 64, 32)
    assert torch.equal(dec(rep, (40, 24)), full[..., :40, :24])


def test_bad_stride_is_refused():
    with pytest.raises(ValueError, match="power of two"):
        Decoder(8, 1, stride=12)
    with pytest.raises(ValueError, match="power of two"):
        Decoder(8, 1, stride=1)


@pytest.mark.parametrize("key", list(TASKS))
def test_every_decoder_parameter_gets_a_gradient(key):
    spec = TASKS[key]
    dec = Decoder(16, spec.channels, stride=32, width=8)
    out = dec(torch.rand(2, 16, 2, 1), (40, 24))
    assert out.shape == (2, spec.channels, 40, 24)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in dec.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("width", [4, 8, 16])
def test_tiny_model_at_init_depends_on_its_input(width):
    """Regression: 1–2 channel stages died at init, so eval outputs ignored x (zero gradients)."""
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    model = build_model("resnet18", "dn", decoder_width=width, seed=0).eval()
    out = model(x)
    for k in "dn":
        (g,) = torch.autograd.grad(out[k].sum(), x, retain_graph=True)
        assert g.abs().sum() > 0, k
