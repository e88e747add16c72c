"""Output standardisation: statistics fitted from labels, the output map, checkpoints, learning."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from rts.attacks.skill import fit_trivial, skills, trivial_errors
from rts.models import (
    SCHEDULES,
    apply_output_init,
    build_model,
    evaluate,
    fit_output_stats,
    load_checkpoint,
    save_checkpoint,
    standardise_outputs,
    train,
)
from rts.tasks.registry import SEG_CLASSES, SEG_IGNORE
from tests.models.conftest import TinyTaskData


def _labelled(n: int = 6, seed: int = 0) -> TinyTaskData:
    """Depth-like labels (offset 3, spread 0.5, some NaN), normals, segmentation."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 16, 12, generator=g)
    d = 3.0 + 0.5 * torch.randn(n, 1, 16, 12, generator=g)
    d[:, :, :3] = float("nan")
    normals = torch.randn(n, 3, 16, 12, generator=g) * torch.tensor([0.3, 0.2, 0.1]).view(3, 1, 1)
    normals += torch.tensor([0.4, -0.5, 0.7]).view(3, 1, 1)
    s = torch.randint(0, 3, (n, 16, 12), generator=g)
    s[:, 0] = SEG_IGNORE
    return TinyTaskData(x, {"s": s, "d": d, "n": normals})


def test_dense_stats_are_the_valid_pixels_mean_and_std_per_channel():
    data = _labelled()
    stats = fit_output_stats(data, "dn", images=None, batch_size=4)
    d = data.y["d"]
    shift, scale = stats["d"]
    assert shift.shape == scale.shape == (1,)
    assert shift.item() == pytest.approx(d.nanmean().item(), rel=1e-5)
    valid = d[~d.isnan()].double()
    assert scale.item() == pytest.approx(valid.std(unbiased=False).item(), rel=1e-5)
    # normals: y and z channels as measured; x (negated by flips) gets mean 0 and its RMS
    n = data.y["n"].double().transpose(0, 1).reshape(3, -1)
    shift, scale = stats["n"]
    assert shift[0] == 0.0
    assert scale[0].item() == pytest.approx(n[0].square().mean().sqrt().item(), rel=1e-5)
    assert shift[1:].tolist() == pytest.approx(n[1:].mean(dim=1).tolist(), rel=1e-5)
    assert scale[1:].tolist() == pytest.approx(n[1:].std(dim=1, unbiased=False).tolist(), 1e-5)


def test_segmentation_shift_is_the_log_class_share_of_labelled_pixels():
    data = _labelled()
    shift, scale = fit_output_stats(data, "s", images=None)["s"]
    labels = data.y["s"][data.y["s"] != SEG_IGNORE]
    share = torch.bincount(labels, minlength=SEG_CLASSES).double() / labels.numel()
    assert shift[:3].tolist() == pytest.approx(share[:3].log().tolist(), rel=1e-5)
    assert (shift[3:] == math.log(1e-4)).all()  # absent classes: the floor
    assert (scale == 1).all()


def test_images_caps_what_is_read_and_the_seed_picks_which():
    data = _labelled(n=12)
    few = fit_output_stats(data, "d", images=3, batch_size=2, seed=0)["d"][0]
    again = fit_output_stats(data, "d", images=3, batch_size=2, seed=0)["d"][0]
    other = fit_output_stats(data, "d", images=3, batch_size=2, seed=1)["d"][0]
    every = fit_output_stats(data, "d", images=None)["d"][0]
    assert torch.equal(few, again) and not torch.equal(few, other)
    assert not torch.equal(few, every)
    with pytest.raises(ValueError, match="images must be >= 1"):
        fit_output_stats(data, "d", images=0)


def test_standardised_model_starts_at_the_label_mean_and_the_default_does_not():
    data = _labelled()
    mean = data.y["d"].nanmean().item()
    model = build_model("resnet18_s8", "d", decoder_width=8, seed=0).eval()
    with torch.no_grad():
        before = model(data.x)["d"].mean().item()
    standardise_outputs(model, data)
    with torch.no_grad():
        after = model(data.x)["d"]
    assert abs(before - mean) > 2.0  # a fresh head outputs about 0, the labels sit at 3
    assert abs(after.mean().item() - mean) < 0.25  # within half the labels' spread (0.5)
    # with the head silenced the output is exactly the mean: shift + scale * 0
    with torch.no_grad():
        model.decoders["d"].head.weight.zero_()
        model.decoders["d"].head.bias.zero_()
        silent = model(data.x)["d"]
    assert torch.allclose(silent, torch.full_like(silent, mean), atol=1e-5)


def test_default_output_init_is_the_identity_and_unknown_names_are_refused():
    data = _labelled()
    model = build_model("resnet18", "d", decoder_width=8, seed=0).eval()
    reference = build_model("resnet18", "d", decoder_width=8, seed=0).eval()
    apply_output_init(model, data, "default")
    with torch.no_grad():
        assert torch.equal(model(data.x)["d"], reference(data.x)["d"])
    with pytest.raises(ValueError, match="unknown output_init 'zscore'; choose from default"):
        apply_output_init(model, data, "zscore")


def test_bad_stats_are_refused():
    model = build_model("resnet18", "sd", decoder_width=8, seed=0)
    with pytest.raises(ValueError, match="1 value"):
        model.set_output_stats({"d": (torch.zeros(3), torch.ones(3))})
    with pytest.raises(ValueError, match="scale > 0"):
        model.set_output_stats({"d": (torch.zeros(1), torch.zeros(1))})
    with pytest.raises(ValueError, match="not in 'sd'"):
        model.set_output_stats({"n": (torch.zeros(3), torch.ones(3))})


def test_stats_travel_in_checkpoints_and_old_state_dicts_load_as_identity(tmp_path):
    data = _labelled()
    model = build_model("resnet18", "sd", decoder_width=8, seed=0)
    stats = standardise_outputs(model, data)
    save_checkpoint(tmp_path / "m.pt", model, {})
    loaded, _ = load_checkpoint(tmp_path / "m.pt")
    assert torch.equal(loaded.decoders["d"].out_shift, stats["d"][0])
    assert torch.equal(loaded.decoders["s"].out_shift, stats["s"][0])
    # a state dict written before the output map existed: no out_* keys
    old = {k: v for k, v in model.state_dict().items() if ".out_" not in k}
    fresh = build_model("resnet18", "sd", decoder_width=8, seed=1)
    fresh.load_state_dict(old, strict=True)
    assert (fresh.decoders["d"].out_shift == 0).all() and (fresh.decoders["d"].out_scale == 1).all()


def _smooth_images(n: int, seed: int, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def _depth_like(x: torch.Tensor) -> torch.Tensor:
    """A per-pixel function of the image on a depth-like scale: offset 0.66, spread ~0.02."""
    return 0.66 + 0.08 * (x.mean(dim=1, keepdim=True) - 0.5)


@pytest.mark.parametrize("output_init", ["default", "standardise"])
def test_recipe_learns_an_easy_depth_like_task_that_the_default_init_does_not(output_init):
    """The toy recipe (truncated encoder + standardised outputs) beats the trivial predictor on
    a task whose labels have depth's small spread around a large offset; with the default head
    init the same training ends far worse than the training mean (the old toy's failure)."""
    x_train, x_val = _smooth_images(48, 0), _smooth_images(16, 1)
    train_set = TinyTaskData(x_train, {"d": _depth_like(x_train)})
    val_set = TinyTaskData(x_val, {"d": _depth_like(x_val)})
    model = build_model("resnet18_s8", "d", decoder_width=8, seed=0)
    apply_output_init(model, train_set, output_init)
    schedule = dataclasses.replace(SCHEDULES["code"], lr=1e-3).scaled(8)
    train(model, train_set, None, "uniform", schedule, epochs=8, batch_size=8, precision="fp32")
    _, error = evaluate(model, val_set, batch_size=16)
    trivial = trivial_errors(fit_trivial(train_set.batches(16), "d"), val_set.batches(16), "d")
    skill = skills(error, trivial)["d"]
    if output_init == "standardise":
        assert skill > 0.3  # measured 0.62
    else:
        assert skill < 0.0  # measured -137
