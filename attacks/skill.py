"""Skill: how much better a model does than a trivial predictor fitted on the training split.

A vulnerability only means something for a model that has learned its task: a model whose
output ignores the image is perfectly "robust". The trivial predictor is what a model that
learned nothing from the image can do best: the per-pixel mean of the training labels for dense
tasks, the per-pixel majority class for segmentation (``s``). Then, on the evaluation images,

    skill_i = 1 − f_i(model) / f_i(trivial)

with ``f_i`` the task's error (``rts.tasks.losses.task_errors``): 1 for a perfect model, 0 for one
no better than the training mean, negative for a worse one. A model also counts as not having
learned when its prediction barely changes from image to image (:func:`prediction_spread`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from rts.tasks.losses import task_errors
from rts.tasks.registry import SEG_CLASSES, SEG_IGNORE, parse_tasks

if TYPE_CHECKING:
    from rts.attacks.evaluate import PerImage

MIN_SKILL = 0.0
"""A main task at or below this skill is flagged: its vulnerability says nothing."""

MIN_TRIVIAL_ERROR = 1e-9
"""A trivial error at or below this is no yardstick (labels constant to rounding): the skill is
unknown rather than ``1 − error / 1e-12``, a huge negative number."""

MIN_SPREAD = 0.05
"""A prediction whose spread across images is below this share of the labels' is flagged."""

_SEG_LOGIT = 10.0
"""Logit of the chosen class in the trivial segmentation output (the others are 0)."""


@dataclass(frozen=True)
class TrivialPredictor:
    """Per-task constant outputs fitted on a training split.

    Attributes:
        maps: ``{task: Tensor}``: ``[C, H, W]`` mean labels for dense tasks, ``[H, W]`` class ids
            for ``s``.
    """

    maps: Mapping[str, Tensor]

    def predict(self, n: int, tasks: str | Iterable[str] | None = None) -> dict[str, Tensor]:
        """The trivial output for ``n`` images, shaped like a model's (logits for ``s``)."""
        keys = parse_tasks(tasks) if tasks is not None else list(self.maps)
        out = {}
        for k in keys:
            m = self.maps[k]
            if k == "s":
                logits = torch.zeros(SEG_CLASSES, *m.shape, dtype=torch.float32)
                logits.scatter_(0, m.long().unsqueeze(0), _SEG_LOGIT)
                out[k] = logits.expand(n, -1, -1, -1)
            else:
                out[k] = m.expand(n, -1, -1, -1)
        return out


Batches = Iterable[tuple[Tensor, Mapping[str, Tensor]]]


def fit_trivial(batches: Batches, tasks: str | Iterable[str]) -> TrivialPredictor:
    """The per-pixel mean (dense) / majority class (``s``) of the labels in ``batches``.

    Invalid label pixels (NaN, :data:`SEG_IGNORE`) are skipped; a pixel never valid takes the
    mean (majority) over all valid pixels.

    Raises:
        ValueError: a dense label holds an infinite value (it would make the trivial error, and
            so every skill, infinite or NaN; invalid pixels must be NaN).
    """
    keys = parse_tasks(tasks)
    sums: dict[str, Tensor] = {}
    counts: dict[str, Tensor] = {}
    for _, y in batches:
        for k in keys:
            label = y[k]
            if k == "s":
                valid = label != SEG_IGNORE
                onehot = torch.zeros(label.shape[0], SEG_CLASSES + 1, *label.shape[1:])
                cls = torch.where(valid, label.long(), torch.full_like(label.long(), SEG_CLASSES))
                onehot.scatter_(1, cls.unsqueeze(1), 1.0)
                add = onehot[:, :SEG_CLASSES].sum(dim=0)
                sums[k] = sums[k] + add if k in sums else add
            else:
                label = label.double()
                if torch.isinf(label).any():
                    raise ValueError(
                        f"labels of task {k!r} hold infinite values; mark invalid pixels with "
                        "NaN (the trivial predictor and every skill would be infinite or NaN)"
                    )
                valid = ~torch.isnan(label)
                add = torch.where(valid, label, 0.0).sum(dim=0)
                n = valid.sum(dim=0).double()
                sums[k] = sums[k] + add if k in sums else add
                counts[k] = counts[k] + n if k in counts else n
    if not sums:
        raise ValueError("cannot fit the trivial predictor on an empty training split")
    maps: dict[str, Tensor] = {}
    for k in keys:
        if k == "s":
            votes = sums[k]
            labelled = votes.sum(dim=0) > 0
            overall = int(votes.sum(dim=(1, 2)).argmax())
            maps[k] = torch.where(
                labelled, votes.argmax(dim=0), torch.full_like(labelled, overall, dtype=torch.long)
            )
        else:
            total, n = sums[k], counts[k]
            overall = float(total.sum() / n.sum().clamp_min(1))
            mean = torch.where(n > 0, total / n.clamp_min(1), torch.full_like(total, overall))
            maps[k] = mean.float()
    return TrivialPredictor(maps)


def trivial_errors(
    trivial: TrivialPredictor, batches: Batches, tasks: str | Iterable[str]
) -> dict[str, float]:
    """Mean error ``f_i`` of the trivial predictor over the images of ``batches``."""
    keys = parse_tasks(tasks)
    total = dict.fromkeys(keys, 0.0)
    count = 0
    for x, y in batches:
        pred = trivial.predict(x.shape[0], keys)
        errors = task_errors(pred, {k: y[k] for k in keys}, keys)
        for k in keys:
            total[k] += float(errors[k].double().sum())
        count += x.shape[0]
    if count == 0:
        raise ValueError("cannot measure the trivial predictor on an empty split")
    return {k: v / count for k, v in total.items()}


def trivial_val_errors(
    train: Any, data: Any, tasks: str | Iterable[str], *, batch_size: int = 64
) -> dict[str, float]:
    """Error on ``data`` of the trivial predictor fitted on ``train`` (both ``TaskDataset``-like,
    with ``batches``): what every skill of a model evaluated on ``data`` is measured against."""
    keys = parse_tasks(tasks)
    trivial = fit_trivial(train.batches(batch_size), keys)
    return trivial_errors(trivial, data.batches(batch_size), keys)


def skill(model_error: float, trivial_error: float) -> float:
    """``1 − model_error / trivial_error``; NaN (unknown) when the trivial error is at most
    :data:`MIN_TRIVIAL_ERROR`, not finite, or the model's error is unknown."""
    if (
        not trivial_error > MIN_TRIVIAL_ERROR
        or not math.isfinite(trivial_error)
        or math.isnan(model_error)
    ):
        return math.nan
    return 1.0 - model_error / trivial_error


def skills(errors: Mapping[str, float], trivial: Mapping[str, float]) -> dict[str, float]:
    """:func:`skill` of every task of ``errors`` that ``trivial`` has."""
    return {k: skill(v, trivial[k]) for k, v in errors.items() if k in trivial}


def prediction_spread(pred: Tensor, label: Tensor) -> float:
    """Spread of the prediction across images over that of the labels (dense tasks).

    The per-pixel standard deviation across the batch, averaged over valid pixels, of the
    prediction divided by the same for the label; ~1 for a model that follows the image, ~0 for
    one that paints the same output on every image. NaN when the labels do not vary.
    """
    label = label.double()
    valid = ~torch.isnan(label)
    filled = torch.where(valid, label, label.nanmean() if valid.any() else 0.0)
    per_pixel = valid.all(dim=0)
    if pred.shape[0] < 2 or not per_pixel.any():
        return math.nan
    sp = pred.double().std(dim=0)[per_pixel].mean()
    sl = filled.std(dim=0)[per_pixel].mean()
    return float(sp / sl) if sl > 0 else math.nan


def skill_flag(name: str, task: str, value: float, spread: float = math.nan) -> str:
    """One plain line when a model has not learned ``task`` (contains the word ``skill``);
    ``""`` otherwise. ``name`` names the model (``"d+Dn"``)."""
    if math.isnan(value):
        return f"{name}: {task}-skill unknown: its vulnerability cannot be trusted"
    if value <= MIN_SKILL:
        return (
            f"{name}: main-task skill {value:.2f}: worse than the training mean; its "
            "vulnerability says nothing"
        )
    if not math.isnan(spread) and spread < MIN_SPREAD:
        return (
            f"{name}: main-task skill {value:.2f} but its {task} prediction barely changes "
            f"between images (spread {spread:.3f} of the labels'): robust because it ignores "
            "the image"
        )
    return ""


FIT_IMAGES = 1024
"""The trivial predictor is fitted on at most this many training images, evenly spread."""


def model_skill(
    per_image: PerImage, train: Any, data: Any, *, batch_size: int = 64
) -> dict[str, float]:
    """Skill of every task of an evaluation (``rts attack``), from its clean errors on ``data``.

    Args:
        per_image: :func:`rts.attacks.evaluate.attack_per_image` run on ``data``.
        train: the training split (a ``TaskDataset``); the trivial predictor is fitted on up to
            :data:`FIT_IMAGES` of its images, evenly spread.
        data: the evaluated images.
        batch_size: images per batch while reading labels.
    """
    keys = per_image.eval_keys
    if len(train) > FIT_IMAGES:
        train = train.subset(torch.linspace(0, len(train) - 1, FIT_IMAGES).long())
    trivial = trivial_val_errors(train, data, keys, batch_size=batch_size)
    errors = {k: float(per_image.clean[k][1].double().mean()) for k in keys}
    return skills(errors, trivial)


def format_skill(values: Mapping[str, float]) -> str:
    """``"skill (1 - error / error of the training mean): s 0.42, d 0.71"``, plus one line per
    task that has not learned (skill ≤ :data:`MIN_SKILL`)."""
    text = "skill (1 - error / error of the training mean): " + ", ".join(
        f"{k} {v:.2f}" for k, v in values.items()
    )
    weak = [k for k, v in values.items() if not v > MIN_SKILL]
    if weak:
        text += (
            f"\nwarning: task(s) {', '.join(weak)} not learned (skill <= {MIN_SKILL:g}): "
            "their vulnerability says nothing"
        )
    return text
