"""Per-sample task losses and errors: the one place trainer, attacks and metrics get them.

Every function returns one value per example (``Tensor[N]``), so callers can weight, sum or
keep the best per sample. Invalid pixels (``NaN`` in dense labels, :data:`SEG_IGNORE` in
segmentation labels) are excluded; an example with no valid pixel has loss and error 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from rts.tasks.registry import SEG_IGNORE, get_task, parse_tasks

PerSampleLoss = Callable[[Tensor, Tensor], Tensor]
"""``(pred, target) -> Tensor[N]``: a per-example loss."""


def _valid_and_filled(target: Tensor) -> tuple[Tensor, Tensor]:
    """Validity mask of a dense label (finite values) and the label with invalid values zeroed."""
    valid = torch.isfinite(target)
    return valid, torch.where(valid, target, torch.zeros((), dtype=target.dtype))


def _masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean over all but the first dimension, counting only ``valid`` entries (0 if none)."""
    values = torch.where(valid, values, torch.zeros((), dtype=values.dtype, device=values.device))
    dims = tuple(range(1, values.dim()))
    count = valid.sum(dim=dims).clamp_min(1).to(values.dtype)
    return values.sum(dim=dims) / count


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Masked L1: mean ``|pred - target|`` over the valid elements of each example. ``[N]``."""
    valid, target = _valid_and_filled(target.to(pred.dtype))
    return _masked_mean((pred - target).abs(), valid.expand_as(pred))


def mse_error(pred: Tensor, target: Tensor) -> Tensor:
    """Per-pixel mean squared error over the valid elements of each example. ``[N]``.

    A *mean* over pixels, not the published code's per-image sum (peers.md trap 5).
    """
    valid, target = _valid_and_filled(target.to(pred.dtype))
    return _masked_mean((pred - target).square(), valid.expand_as(pred))


def cross_entropy_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Pixel-wise cross-entropy of logits ``[N, C, H, W]`` vs class ids ``[N, H, W]``. ``[N]``.

    Unlabelled pixels (:data:`SEG_IGNORE`) are excluded; the mean is over labelled pixels.
    """
    target = target.long()
    valid = target != SEG_IGNORE
    per_pixel = F.cross_entropy(pred, torch.where(valid, target, 0), reduction="none")
    return _masked_mean(per_pixel, valid)


def miou_error(pred: Tensor, target: Tensor) -> Tensor:
    """``1 - mIoU`` per example, from logits ``[N, C, H, W]`` and class ids ``[N, H, W]``. ``[N]``.

    The IoU is averaged over the classes present in the prediction or the label of that
    example (valid pixels only), so an image is not rewarded for classes absent from it.
    Not differentiable (argmax): used for evaluation, not for attacks.
    """
    n, c = pred.shape[:2]
    target = target.long()
    valid = target != SEG_IGNORE
    guess = pred.argmax(dim=1)
    # One bincount over (example, guess, truth) triples builds every confusion matrix at once.
    index = (torch.arange(n, device=pred.device).view(n, 1, 1) * c + guess) * c + target
    index = index[valid]
    conf = torch.bincount(index, minlength=n * c * c).view(n, c, c).to(torch.float64)
    inter = conf.diagonal(dim1=1, dim2=2)
    union = conf.sum(dim=1) + conf.sum(dim=2) - inter
    present = union > 0
    iou = torch.where(present, inter / union.clamp_min(1), torch.zeros((), dtype=torch.float64))
    miou = iou.sum(dim=1) / present.sum(dim=1).clamp_min(1)
    has_pixels = valid.flatten(1).any(dim=1)
    return torch.where(has_pixels, 1.0 - miou, torch.zeros_like(miou)).to(pred.dtype)


def default_loss(key: str) -> PerSampleLoss:
    """The registry's training loss of task ``key`` as a per-sample function."""
    return cross_entropy_loss if get_task(key).loss == "ce" else l1_loss


def default_error(key: str) -> PerSampleLoss:
    """The registry's error ``f_i`` of task ``key`` (``1 - mIoU`` for ``s``, MSE otherwise)."""
    return miou_error if get_task(key).error == "1-miou" else mse_error


def task_losses(
    pred: Mapping[str, Tensor],
    y: Mapping[str, Tensor],
    tasks: str | Iterable[str],
    losses: Mapping[str, PerSampleLoss] | None = None,
) -> dict[str, Tensor]:
    """Per-sample losses ``{task: Tensor[N]}`` of the ``tasks`` asked for.

    Args:
        pred: model outputs keyed by task.
        y: labels keyed by task.
        tasks: task keys (``"sd"`` or a sequence). Keys outside the registry are allowed when
            ``losses`` names a function for them (e.g. a classifier wrapped as ``{"y": logits}``).
        losses: optional per-task override ``(pred, target) -> Tensor[N]``; default the registry's.
    """
    keys = _keys(tasks, losses)
    out = {}
    for k in keys:
        fn = losses[k] if losses is not None and k in losses else default_loss(k)
        out[k] = fn(pred[k], y[k])
    return out


def task_errors(
    pred: Mapping[str, Tensor], y: Mapping[str, Tensor], tasks: str | Iterable[str]
) -> dict[str, Tensor]:
    """Per-sample errors ``f_i`` ``{task: Tensor[N]}`` (``1 - mIoU`` for ``s``, MSE otherwise)."""
    return {k: default_error(k)(pred[k], y[k]) for k in parse_tasks(tasks)}


def weighted_sum(
    losses: Mapping[str, Tensor], weights: Mapping[str, float] | None = None
) -> Tensor:
    """``Σ_i w_i · L_i`` per sample; ``weights=None`` means uniform ``1/M`` (the paper's baseline).

    Tasks missing from ``weights`` get weight 0; a weight of 0 skips the task entirely, so no
    gradient flows to its decoder.
    """
    if not losses:
        raise ValueError("weighted_sum needs at least one task loss")
    if weights is None:
        weights = {k: 1.0 / len(losses) for k in losses}
    total: Tensor | None = None
    for k, value in losses.items():
        w = float(weights.get(k, 0.0))
        if w == 0.0:
            continue
        total = value * w if total is None else total + value * w
    if total is None:
        return torch.zeros_like(next(iter(losses.values())))
    return total


def _keys(tasks: str | Iterable[str], losses: Mapping[str, PerSampleLoss] | None) -> list[str]:
    """Task keys in order; registry keys are validated, custom ones need a loss override."""
    if isinstance(tasks, str):
        raw = [c for c in tasks if c not in ", "] if tasks not in (losses or {}) else [tasks]
    else:
        raw = list(tasks)
    if not raw:
        raise ValueError("empty task set; name at least one task")
    for k in raw:
        if losses is None or k not in losses:
            get_task(k)
    if len(set(raw)) != len(raw):
        raise ValueError(f"duplicate task in {raw!r}")
    return raw
