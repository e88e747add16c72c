"""Skill: whether a model learned its task at all, so its vulnerability means something.

``skill_i = 1 - E[f_i(model)] / E[f_i(mean)]``: 1 is perfect, 0 is no better than predicting the
training set's mean label everywhere (for segmentation: its most frequent class), below 0 worse.
A relative vulnerability of a model with skill near 0 compares noise with noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from rts.attacks.evaluate import PerImage
from rts.tasks.losses import default_error
from rts.tasks.registry import SEG_IGNORE, get_task

LEARNED = 0.1
"""Below this skill a task counts as not learned (flagged, never ranked silently)."""


def training_means(
    batches: Iterable[tuple[Tensor, Mapping[str, Tensor]]], keys: Sequence[str]
) -> dict[str, Tensor]:
    """The trivial predictor of each task, from the training labels ``{task: [C, 1, 1]}``.

    Dense tasks: the per-channel mean over valid (finite) pixels. Segmentation: the log class
    frequencies over labelled pixels, as logits (their argmax is the most frequent class).
    """
    sums: dict[str, Tensor] = {}
    counts: dict[str, Tensor] = {}
    for _, y in batches:
        for k in keys:
            label = y[k]
            if get_task(k).is_segmentation:
                valid = label[label != SEG_IGNORE].long()
                add = torch.bincount(valid.flatten(), minlength=get_task(k).channels).double()
                sums[k] = sums.get(k, 0) + add
                counts[k] = counts.get(k, 0) + add.sum()
            else:
                value = label.double().transpose(0, 1).flatten(1)  # [C, N·H·W]
                valid = torch.isfinite(value)
                sums[k] = sums.get(k, 0) + torch.where(valid, value, 0).sum(1)
                counts[k] = counts.get(k, 0) + valid.sum(1)
    out = {}
    for k in keys:
        if k not in sums:
            raise ValueError(f"no training label of task {k!r} to fit the trivial predictor")
        mean = sums[k] / torch.as_tensor(counts[k]).clamp_min(1)
        if get_task(k).is_segmentation:
            mean = mean.clamp_min(1e-12).log()
        out[k] = mean.float().view(-1, 1, 1)
    return out


def trivial_errors(
    means: Mapping[str, Tensor],
    batches: Iterable[tuple[Tensor, Mapping[str, Tensor]]],
    keys: Sequence[str],
) -> dict[str, Tensor]:
    """Per-image error ``f_i`` of the trivial predictor on ``batches`` (``{task: [N]}``)."""
    out: dict[str, list[Tensor]] = {k: [] for k in keys}
    for x, y in batches:
        n, _, h, w = x.shape
        for k in keys:
            pred = means[k].to(x.device).expand(n, -1, h, w)
            out[k].append(default_error(k)(pred, y[k].to(x.device)).detach().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def skill(model_error: Tensor, trivial_error: Tensor) -> float:
    """``1 - mean model error / mean trivial error`` over the same images (NaN if undefined)."""
    base = float(trivial_error.double().mean())
    if not base > 0:
        return math.nan
    return 1.0 - float(model_error.double().mean()) / base


def format_skill(skills: Mapping[str, float]) -> str:
    """``"skill (1 - error / error of the training mean): s 0.42, d 0.71"`` plus a warning for
    each task below :data:`LEARNED`."""
    text = "skill (1 - error / error of the training mean): " + ", ".join(
        f"{k} {v:.2f}" for k, v in skills.items()
    )
    weak = [k for k, v in skills.items() if not v >= LEARNED]
    if weak:
        text += (
            f"\nwarning: task(s) {', '.join(weak)} not learned (skill < {LEARNED}): "
            "their vulnerability compares noise with noise"
        )
    return text


FIT_IMAGES = 1024
"""The trivial predictor is fitted on at most this many training images, evenly spread."""


def model_skill(
    per_image: PerImage, train: Any, data: Any, *, batch_size: int = 64
) -> dict[str, float]:
    """Skill of every evaluated task, from an evaluation's clean errors on ``data``.

    Args:
        per_image: :func:`attacks.evaluate.attack_per_image` run on ``data``.
        train: the training split (a ``TaskDataset``); the trivial predictor is fitted on up to
            :data:`FIT_IMAGES` of its images (an estimate of the mean, not a full pass).
        data: the evaluated images, in the order they were attacked.
        batch_size: images per batch while reading labels.
    """
    keys = per_image.eval_keys
    if len(train) > FIT_IMAGES:
        train = train.subset(torch.linspace(0, len(train) - 1, FIT_IMAGES).long())
    means = training_means(train.batches(batch_size), keys)
    trivial = trivial_errors(means, data.batches(batch_size), keys)
    return {k: skill(per_image.clean[k][1], trivial[k]) for k in keys}
