"""Output standardisation: every head starts at its labels' mean and moves in units of their spread.

A decoder's output is ``shift + scale · head`` (:class:`~rts.models.decoders.Decoder`). By default
that is the identity and each head must learn the labels' offset and scale itself, which a short
run may never do: Taskonomy's log-depth labels sit at about 0.66 with a spread of 0.04 (synthetic
data, MTRobust's decoding), while a fresh head outputs about 0 ± 0.5, so the first error is
500× the training mean's and Adam's steps (about ``lr`` in the head's units) stay larger than the
labels' whole range for many epochs. ``output_init="standardise"`` sets, per dense task and
channel, ``shift`` to the training labels' mean and ``scale`` to their standard deviation: the
head predicts standardised labels (the usual standardised-target regression, kept inside the
model so losses, errors and attacks still see the labels' units), its first output is the mean,
and a step moves it in proportion to the labels' spread. Segmentation gets its logits shifted by
the log class frequencies (the prior-bias init of Lin et al. 2017, "Focal loss"), ``scale`` 1.

Measured effect (benchmarks/toy_learning.py, docs/models.md): a depth model's first-epoch skill
went from −530 to −0.8; tasks whose labels already have about unit spread change little.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor

from rts.tasks.registry import SEG_CLASSES, SEG_IGNORE, get_task, parse_tasks

__all__ = [
    "OUTPUT_INITS",
    "OutputInit",
    "apply_output_init",
    "fit_output_stats",
    "standardise_outputs",
]

OutputInit = Literal["default", "standardise"]
OUTPUT_INITS: tuple[str, ...] = ("default", "standardise")
"""``default``: identity output map (the heads' own init, MTRobust's); ``standardise``: the
training labels' per-channel mean and standard deviation (log class frequencies for ``s``)."""

MIN_SCALE = 1e-6
"""A channel whose labels do not vary keeps ``scale`` 1 (nothing to standardise)."""

MIN_CLASS_FREQUENCY = 1e-4
"""A segmentation class rarer than this (or absent) starts at this frequency's log."""


def fit_output_stats(
    data: object,
    tasks: str | Iterable[str],
    *,
    images: int | None = 2048,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, tuple[Tensor, Tensor]]:
    """``{task: (shift [C], scale [C])}`` from the labels of ``data`` (a training split).

    Dense tasks: mean and standard deviation over valid (non-NaN) pixels and images, per
    channel; the channel a horizontal flip negates (the x of surface normals) gets mean 0 and
    its root mean square, since flipped training images make its mean 0. Segmentation
    (``s``): ``log`` of each class's share of the labelled pixels (at least
    :data:`MIN_CLASS_FREQUENCY`), scale 1.

    Args:
        data: anything with ``batches(batch_size, shuffle=, generator=)`` yielding
            ``(x, {task: label})`` (``rts.tasks.data.TaskDataset``).
        tasks: the tasks to fit.
        images: read at most this many images, in an order shuffled by ``seed``; ``None`` = all.
        batch_size: images per batch read.
        seed: seed of that order (a private generator).
    """
    keys = parse_tasks(tasks)
    if images is not None and images < 1:
        raise ValueError(f"images must be >= 1 or None, got images={images}")
    sums: dict[str, Tensor] = {}
    squares: dict[str, Tensor] = {}
    counts: dict[str, Tensor] = {}
    seen = 0
    generator = torch.Generator().manual_seed(seed)
    for _, y in data.batches(batch_size, shuffle=True, generator=generator):
        if images is not None and seen >= images:
            break
        take = y[keys[0]].shape[0] if images is None else min(y[keys[0]].shape[0], images - seen)
        for k in keys:
            label = y[k][:take]
            if get_task(k).is_segmentation:
                cls = label[label != SEG_IGNORE].long()
                add = torch.bincount(cls.clamp(0, SEG_CLASSES - 1), minlength=SEG_CLASSES)
                sums[k] = sums.get(k, 0) + add.double()
                continue
            v = label.double().transpose(0, 1).reshape(label.shape[1], -1)
            valid = ~torch.isnan(v)
            v = torch.where(valid, v, 0.0)
            sums[k] = sums.get(k, 0) + v.sum(dim=1)
            squares[k] = squares.get(k, 0) + v.square().sum(dim=1)
            counts[k] = counts.get(k, 0) + valid.sum(dim=1).double()
        seen += take
    if seen == 0:
        raise ValueError("cannot fit output statistics on an empty data set")
    out: dict[str, tuple[Tensor, Tensor]] = {}
    for k in keys:
        spec = get_task(k)
        if spec.is_segmentation:
            share = sums[k] / sums[k].sum().clamp_min(1.0)
            out[k] = (share.clamp_min(MIN_CLASS_FREQUENCY).log().float(), torch.ones(SEG_CLASSES))
            continue
        n = counts[k].clamp_min(1.0)
        mean = sums[k] / n
        second = squares[k] / n
        if spec.flip_negate_channel is not None:
            mean[spec.flip_negate_channel] = 0.0
        std = (second - mean.square()).clamp_min(0.0).sqrt()
        std = torch.where(std > MIN_SCALE, std, torch.ones_like(std))
        mean = torch.where(counts[k] > 0, mean, torch.zeros_like(mean))
        out[k] = (mean.float(), std.float())
    return out


def standardise_outputs(
    model: torch.nn.Module, data: object, *, images: int | None = 2048, seed: int = 0
) -> dict[str, tuple[Tensor, Tensor]]:
    """Fit :func:`fit_output_stats` on ``data`` for every task of ``model`` and install them in
    its decoders (``MultiTaskModel.set_output_stats``); returns the statistics."""
    stats = fit_output_stats(data, model.tasks, images=images, seed=seed)
    model.set_output_stats(stats)
    return stats


def apply_output_init(
    model: torch.nn.Module, data: object, output_init: str, *, seed: int = 0
) -> None:
    """Apply ``output_init`` (one of :data:`OUTPUT_INITS`) to a fresh ``model`` using the
    training split ``data``; ``default`` leaves it untouched."""
    if output_init not in OUTPUT_INITS:
        raise ValueError(
            f"unknown output_init {output_init!r}; choose from {', '.join(OUTPUT_INITS)}"
        )
    if output_init == "standardise":
        standardise_outputs(model, data, seed=seed)
