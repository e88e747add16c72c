"""Training as a plain function, usable from a notebook, the CLI and a Ray trial alike.

:func:`train` runs epochs of ``forward → task_losses → weighting → backward → step`` and, after
each epoch, measures every task's clean loss and error ``f_i`` on the validation split, hands an
:class:`EpochRecord` to ``on_epoch`` (which may return ``False`` to stop, as ASHA pruning needs)
and, with ``out_dir``, writes ``last.pt`` (everything needed to resume), the checkpoints asked for
(``epoch_050.pt`` of a 150-epoch run is "the model after 50 epochs of the full schedule") and
``metrics.parquet``.

Schedule: the default is the one the published code ran (``MTRobust/jobs/*.sh``: Adam, lr 1e-3,
÷10 at epochs 120 and 140, 150 epochs), because it produced the paper's numbers; the supplement's
text (SGD, lr 0.01, momentum 0.99, ÷10 at 100, 120, 140) is the ``"supplement"`` preset.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn

from rts.models.checkpoint import read_checkpoint, save_checkpoint
from rts.models.device import resolve_device
from rts.models.mtl import MultiTaskModel
from rts.models.weighting import LossWeighting, WeightingSpec, make_weighting
from rts.tasks.io import atomic_path
from rts.tasks.losses import task_errors, task_losses

log = logging.getLogger(__name__)

__all__ = [
    "SCHEDULES",
    "EpochRecord",
    "NonFiniteLossError",
    "Precision",
    "Schedule",
    "TaskData",
    "evaluate",
    "precise_batchnorm",
    "records_frame",
    "train",
]

Precision = Literal["auto", "fp32", "bf16"]


class TaskData(Protocol):
    """What :func:`train` needs of a dataset (``tasks.data.TaskDataset`` has it)."""

    def __len__(self) -> int: ...

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        flip: bool = False,
        drop_last: bool = False,
    ) -> Iterable[tuple[Tensor, dict[str, Tensor]]]: ...


class NonFiniteLossError(FloatingPointError, ValueError):
    """A task loss became NaN or infinite; the message names the task, epoch and batch."""


@dataclass(frozen=True)
class Schedule:
    """Optimizer and step learning-rate schedule (epochs are counted from 0).

    Attributes:
        optimizer: ``"adam"`` or ``"sgd"``.
        lr: initial learning rate.
        momentum: SGD momentum (ignored by Adam).
        weight_decay: L2 penalty (0 in both of the paper's schedules).
        milestones: epochs from which the learning rate is multiplied by ``gamma`` once more.
        gamma: the factor at each milestone.
    """

    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = (120, 140)
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose from adam, sgd")
        for name in ("lr", "gamma"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"schedule {name} must be a number > 0, got {name}={value!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got momentum={self.momentum}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got weight_decay={self.weight_decay}")
        milestones = tuple(int(m) for m in self.milestones)
        if any(m < 1 for m in milestones) or list(milestones) != sorted(set(milestones)):
            raise ValueError(
                f"milestones must be increasing epochs >= 1, got milestones={self.milestones}"
            )
        object.__setattr__(self, "milestones", milestones)

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based epoch ``epoch``: ``lr · gamma^(milestones <= epoch)``."""
        return self.lr * self.gamma ** sum(m <= epoch for m in self.milestones)

    def scaled(self, epochs: int, reference: int = 150) -> Schedule:
        """The same schedule compressed to ``epochs`` (milestones scaled from ``reference``)."""
        milestones = sorted({max(1, round(m * epochs / reference)) for m in self.milestones})
        return replace(self, milestones=tuple(m for m in milestones if m < epochs))

    def make_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """A fresh optimizer for ``params`` at the initial learning rate."""
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(
            params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )


SCHEDULES: dict[str, Schedule] = {
    "code": Schedule("adam", 1e-3, milestones=(120, 140)),
    "supplement": Schedule("sgd", 1e-2, momentum=0.99, milestones=(100, 120, 140)),
}
"""``code``: what the published job scripts ran (default); ``supplement``: the App. B text."""


@dataclass(frozen=True)
class EpochRecord:
    """Clean metrics after one epoch; primitives only (``asdict`` → DataFrame → Parquet).

    Attributes:
        epoch: epochs completed (1-based).
        lr: learning rate used during this epoch.
        seconds: wall time of the epoch (training and validation).
        train_loss: mean training loss per task (NaN for a task with weight 0).
        val_loss: mean validation loss per task.
        val_error: mean validation error ``f_i`` per task (1 − mIoU for ``s``, MSE otherwise).
        weights: the task weights at the end of the epoch.
    """

    epoch: int
    lr: float
    seconds: float
    train_loss: dict[str, float] = field(default_factory=dict)
    val_loss: dict[str, float] = field(default_factory=dict)
    val_error: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)

    def flat(self) -> dict[str, float]:
        """One flat row: ``epoch, lr, seconds, train_loss/s, val_loss/s, val_error/s, weight/s``.

        The ``group/task`` names are what Ray Tune makes of the nested dicts too.
        """
        row: dict[str, float] = {"epoch": self.epoch, "lr": self.lr, "seconds": self.seconds}
        for group, values in (
            ("train_loss", self.train_loss),
            ("val_loss", self.val_loss),
            ("val_error", self.val_error),
            ("weight", self.weights),
        ):
            row.update({f"{group}/{k}": v for k, v in values.items()})
        return row


def records_frame(records: Iterable[EpochRecord]) -> Any:
    """A pandas DataFrame with one :meth:`EpochRecord.flat` row per epoch."""
    import pandas as pd

    return pd.DataFrame([r.flat() for r in records])


def _amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """``None`` for fp32; ``torch.bfloat16`` for bf16 autocast (``auto``: bf16 on CUDA only)."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}; choose from auto, fp32, bf16")
    if precision == "auto":
        use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if use_bf16 else None
    return torch.bfloat16 if precision == "bf16" else None


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _to_device(
    x: Tensor, y: Mapping[str, Tensor], keys: str, device: torch.device, channels_last: bool
) -> tuple[Tensor, dict[str, Tensor]]:
    x = x.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, {k: y[k].to(device, non_blocking=True) for k in keys}


def evaluate(
    model: MultiTaskModel,
    data: TaskData,
    *,
    batch_size: int = 32,
    tasks: str | None = None,
    precision: Precision = "fp32",
) -> tuple[dict[str, float], dict[str, float]]:
    """Mean clean loss and error ``f_i`` per task over ``data``: ``(loss, error)``.

    Runs in eval mode under ``torch.inference_mode()`` on the model's device, in order, without
    flips; the model's train/eval mode is restored afterwards. Means are over examples.
    """
    keys = model.select(tasks)
    device = next(model.parameters()).device
    amp = _amp_dtype(precision, device)
    channels_last = device.type == "cuda" or amp is not None
    loss_sum = {k: torch.zeros((), dtype=torch.float64, device=device) for k in keys}
    err_sum = {k: torch.zeros((), dtype=torch.float64, device=device) for k in keys}
    count = 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for x, y in data.batches(batch_size):
                x, y = _to_device(x, y, keys, device, channels_last)
                with _autocast(device, amp):
                    pred = model(x, keys)
                pred = {k: v.float() for k, v in pred.items()}
                losses = task_losses(pred, y, keys)
                errors = task_errors(pred, y, keys)
                for k in keys:
                    loss_sum[k] += losses[k].double().sum()
                    err_sum[k] += errors[k].double().sum()
                count += x.shape[0]
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("the evaluation data set is empty")
    return (
        {k: float(v) / count for k, v in loss_sum.items()},
        {k: float(v) / count for k, v in err_sum.items()},
    )


def _progress(iterable: Iterable[Any], total: int, desc: str, enabled: bool) -> Iterator[Any]:
    if not enabled:
        return iter(iterable)
    from tqdm.auto import tqdm

    return iter(tqdm(iterable, total=total, desc=desc, leave=False, unit="batch"))


def train(
    model: MultiTaskModel,
    train_data: TaskData,
    val_data: TaskData | None,
    weighting: LossWeighting | WeightingSpec | str,
    schedule: Schedule,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[EpochRecord], bool | None] | None = None,
    *,
    epochs: int,
    batch_size: int = 32,
    seed: int = 0,
    checkpoint_epochs: Iterable[int] = (),
    out_dir: str | os.PathLike[str] | None = None,
    save_last: bool = True,
    resume_from: str | os.PathLike[str] | None = None,
    precision: Precision = "auto",
    flip: bool = True,
    precise_bn: int = 1024,
    progress: bool = False,
    meta: Mapping[str, Any] | None = None,
) -> list[EpochRecord]:
    """Train ``model`` for ``epochs`` epochs of ``schedule``; returns one record per epoch.

    Args:
        model: a :class:`~models.mtl.MultiTaskModel`; trained in place, left in eval mode.
        train_data: training split (``batches(batch_size, shuffle=, generator=, flip=)``).
        val_data: validation split for the per-epoch clean metrics, or ``None``.
        weighting: a :class:`~models.weighting.LossWeighting`, a spec, or a scheme name.
        schedule: optimizer and learning-rate steps (:data:`SCHEDULES`).
        device: ``"cpu"``, ``"cuda[:i]"``, ``"auto"`` or a ``torch.device``.
        on_epoch: called with each :class:`EpochRecord` after the epoch's files are written;
            returning ``False`` stops training (ASHA pruning).
        epochs: total epochs of the run (a resumed run continues up to it).
        batch_size: training and validation batch size.
        seed: seeds shuffling and flips (a private generator: no global seeding); with the
            same initial model and threads, CPU runs are bit-identical.
        checkpoint_epochs: epochs (1-based) after which ``out_dir/epoch_XXX.pt`` is written.
        out_dir: folder for ``last.pt``, checkpoints and ``metrics.parquet``.
        save_last: write ``out_dir/last.pt`` (weights, optimizer, weighting, RNG) every epoch.
        resume_from: a ``last.pt`` to continue from (its model config and weighting must match).
        precision: ``"fp32"``, ``"bf16"`` (autocast + channels_last; ~2× faster on CPU but
            different numerics) or ``"auto"`` (bf16 on CUDA, fp32 on CPU).
        flip: random horizontal flips of training batches (MTRobust's augmentation).
        precise_bn: after each epoch, recompute every BatchNorm's statistics exactly on this
            many training images (see :func:`precise_batchnorm`); 0 keeps the running averages.
        progress: show a tqdm bar per epoch (for the CLI).
        meta: extra primitives stored in every checkpoint (e.g. ``{"data": asdict(spec)}``).

    Raises:
        NonFiniteLossError: a task loss became NaN/inf (names task, epoch and batch).
        ValueError: bad arguments or a checkpoint that does not match.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got epochs={epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got batch_size={batch_size!r}")
    checkpoint_epochs = sorted({int(e) for e in checkpoint_epochs})
    if any(not 1 <= e <= epochs for e in checkpoint_epochs):
        raise ValueError(f"checkpoint epochs must be in 1..{epochs}, got {checkpoint_epochs}")
    if isinstance(precise_bn, bool) or not isinstance(precise_bn, int) or precise_bn < 0:
        raise ValueError(f"precise_bn must be an integer >= 0, got precise_bn={precise_bn!r}")
    if checkpoint_epochs and out_dir is None:
        raise ValueError("checkpoint_epochs needs out_dir (where the checkpoints go)")
    device = resolve_device(device)
    amp = _amp_dtype(precision, device)
    resolved_precision: Precision = "bf16" if amp is not None else "fp32"
    channels_last = device.type == "cuda" or amp is not None
    if not isinstance(weighting, LossWeighting):
        weighting = make_weighting(weighting, model.tasks)
    outside = [k for k in weighting.tasks if k not in model.tasks]
    if outside:
        raise ValueError(
            f"weighting has task(s) {''.join(outside)!r} the model {model.tasks!r} lacks"
        )

    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    weighting.to(device)
    optimizer = schedule.make_optimizer(model.parameters())
    generator = torch.Generator().manual_seed(seed)
    records: list[EpochRecord] = []
    run_meta = {
        **dict(meta or {}),
        "weighting": asdict(weighting.spec),
        "schedule": asdict(schedule),
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "precision": resolved_precision,
        "flip": flip,
        "precise_bn": precise_bn,
    }
    if resume_from is not None:
        records = _resume(resume_from, model, weighting, optimizer, generator, run_meta)
        log.info("resumed from %s after epoch %d", resume_from, len(records))
    out = Path(out_dir) if out_dir is not None else None
    shared = model.shared_parameters()

    for epoch in range(len(records), epochs):
        lr = schedule.lr_at(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        train_loss = _train_epoch(
            model,
            train_data,
            weighting,
            optimizer,
            shared,
            generator,
            epoch=epoch + 1,
            epochs=epochs,
            batch_size=batch_size,
            device=device,
            amp=amp,
            channels_last=channels_last,
            flip=flip,
            progress=progress,
        )
        if precise_bn:
            precise_batchnorm(
                model,
                train_data,
                images=precise_bn,
                batch_size=batch_size,
                seed=seed + epoch,
                precision=resolved_precision,
            )
        val_loss: dict[str, float] = {}
        val_error: dict[str, float] = {}
        if val_data is not None:
            val_loss, val_error = evaluate(
                model, val_data, batch_size=batch_size, precision=resolved_precision
            )
        record = EpochRecord(
            epoch=epoch + 1,
            lr=lr,
            seconds=time.perf_counter() - start,
            train_loss=train_loss,
            val_loss=val_loss,
            val_error=val_error,
            weights=weighting.weights(),
        )
        records.append(record)
        log.info("epoch %d/%d: %s", record.epoch, epochs, _summary(record))
        if out is not None:
            _write_outputs(
                out,
                model,
                weighting,
                optimizer,
                generator,
                records,
                run_meta,
                checkpoint=record.epoch in checkpoint_epochs,
                save_last=save_last,
            )
        if on_epoch is not None and on_epoch(record) is False:
            log.info("stopped by on_epoch after epoch %d", record.epoch)
            break
    model.eval()
    return records


def precise_batchnorm(
    model: nn.Module,
    data: TaskData,
    *,
    images: int = 1024,
    batch_size: int = 32,
    seed: int = 0,
    precision: Precision = "fp32",
) -> None:
    """Set every BatchNorm's running mean and variance to their exact values on ``data``.

    BatchNorm's running averages (momentum 0.1) trail the weights by about ten steps. Early in
    training, and in every short CPU run, the weights move faster than that, and the eval-mode
    model (the one validated, checkpointed and attacked) computes something else than the one
    trained: clean errors jump around. Following "precise BN" (Wu & Johnson 2021; pycls), a
    forward pass in train mode over up to ``images`` shuffled training images (a private
    generator from ``seed``) measures each layer's mean ``E[x]`` and ``E[x²]`` per batch; the
    running statistics become their averages (variance ``E[x²] − E[x]²``). Only BN buffers
    change; nothing else, and no gradients. All decoders are run, trained or not.
    """
    bns = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not bns or images <= 0:
        return
    device = next(model.parameters()).device
    amp = _amp_dtype(precision, device)
    channels_last = device.type == "cuda" or amp is not None
    momenta = [bn.momentum for bn in bns]
    sums = [torch.zeros_like(bn.running_mean) for bn in bns]
    squares = [torch.zeros_like(bn.running_var) for bn in bns]
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    batches = 0
    seen = 0
    try:
        for bn in bns:
            bn.momentum = 1.0  # running stats := this batch's stats
        model.train()
        drop_last = len(data) > batch_size
        with torch.no_grad():
            for x, _ in data.batches(
                batch_size, shuffle=True, generator=generator, drop_last=drop_last
            ):
                x = x.to(device, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with _autocast(device, amp):
                    model(x)
                for bn, s, q in zip(bns, sums, squares, strict=True):
                    s += bn.running_mean
                    q += bn.running_var + bn.running_mean.square()
                batches += 1
                seen += x.shape[0]
                if seen >= images:
                    break
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        model.train(was_training)
    if batches:
        for bn, s, q in zip(bns, sums, squares, strict=True):
            mean = s / batches
            bn.running_mean.copy_(mean)
            bn.running_var.copy_((q / batches - mean.square()).clamp_min(0))


def _train_epoch(
    model: MultiTaskModel,
    data: TaskData,
    weighting: LossWeighting,
    optimizer: torch.optim.Optimizer,
    shared: list[nn.Parameter],
    generator: torch.Generator,
    *,
    epoch: int,
    epochs: int,
    batch_size: int,
    device: torch.device,
    amp: torch.dtype | None,
    channels_last: bool,
    flip: bool,
    progress: bool,
) -> dict[str, float]:
    """One pass over ``data``; returns the mean training loss per task (NaN when inactive)."""
    model.train()
    weighting.train()
    keys = weighting.active_tasks
    n = len(data)
    drop_last = n > batch_size  # never a lone last batch: BatchNorm needs > 1 value
    batches = data.batches(
        batch_size, shuffle=True, generator=generator, flip=flip, drop_last=drop_last
    )
    total_batches = n // batch_size if drop_last else 1
    sums = torch.zeros(len(keys), dtype=torch.float64, device=device)
    count = 0
    for index, (x_cpu, y_cpu) in enumerate(
        _progress(batches, total_batches, f"epoch {epoch}/{epochs}", progress)
    ):
        x, y = _to_device(x_cpu, y_cpu, keys, device, channels_last)
        with _autocast(device, amp):
            pred = model(x, keys)
        losses = task_losses({k: v.float() for k, v in pred.items()}, y, keys)
        means = {k: v.mean() for k, v in losses.items()}
        stacked = torch.stack([means[k] for k in keys])
        if not bool(torch.isfinite(stacked).all()):
            values = {k: float(means[k].detach()) for k in keys}
            bad = next(k for k in keys if not math.isfinite(values[k]))
            lr = optimizer.param_groups[0]["lr"]
            raise NonFiniteLossError(
                f"loss of task {bad!r} is {values[bad]} at epoch {epoch} (batch {index}); "
                f"lower the learning rate (lr={lr:g}) or check the data"
            )
        total = weighting(means, shared)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        weighting.step()
        sums += stacked.detach().double() * x.shape[0]
        count += x.shape[0]
    if count == 0:
        raise ValueError(f"the training data gave no batch (len={n}, batch_size={batch_size})")
    means_out = dict(zip(keys, (sums / count).tolist(), strict=True))
    return {k: means_out.get(k, math.nan) for k in model.tasks}


def _summary(record: EpochRecord) -> str:
    errors = ", ".join(f"{k}={v:.4g}" for k, v in record.val_error.items())
    losses = ", ".join(f"{k}={v:.4g}" for k, v in record.train_loss.items())
    return f"train loss {losses}; val error {errors or '-'} ({record.seconds:.1f}s)"


def _train_state(
    optimizer: torch.optim.Optimizer,
    weighting: LossWeighting,
    generator: torch.Generator,
    records: list[EpochRecord],
) -> dict[str, Any]:
    return {
        "optimizer": optimizer.state_dict(),
        "weighting": weighting.state_dict(),
        "generator": generator.get_state(),
        "records": [asdict(r) for r in records],
    }


def _write_outputs(
    out: Path,
    model: MultiTaskModel,
    weighting: LossWeighting,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    records: list[EpochRecord],
    run_meta: dict[str, Any],
    *,
    checkpoint: bool,
    save_last: bool,
) -> None:
    """``last.pt`` (resume state), ``epoch_XXX.pt`` when asked, ``metrics.parquet``."""
    epoch = records[-1].epoch
    meta = {**run_meta, "epoch": epoch, "task_weights": weighting.weights()}
    if save_last:
        state = _train_state(optimizer, weighting, generator, records)
        save_checkpoint(out / "last.pt", model, meta, train_state=state)
    if checkpoint:
        save_checkpoint(out / f"epoch_{epoch:03d}.pt", model, meta)
    with atomic_path(out / "metrics.parquet") as tmp:
        records_frame(records).to_parquet(tmp, index=False)


def _resume(
    path: str | os.PathLike[str],
    model: MultiTaskModel,
    weighting: LossWeighting,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    run_meta: Mapping[str, Any],
) -> list[EpochRecord]:
    """Load a ``last.pt`` into the live objects; returns the records of the epochs it holds."""
    payload = read_checkpoint(path)
    meta = payload["meta"]
    state = payload.get("train_state")
    if state is None:
        raise ValueError(f"{str(path)!r} has no training state to resume from (use last.pt)")
    for key, value in model.config.items():
        if meta.get(key) != value:
            raise ValueError(
                f"cannot resume from {str(path)!r}: its {key} is {meta.get(key)!r}, "
                f"the model's is {value!r}"
            )
    for key in ("weighting", "schedule", "seed", "batch_size"):
        if meta.get(key) != run_meta[key]:
            raise ValueError(
                f"cannot resume from {str(path)!r}: its {key} is {meta.get(key)!r}, "
                f"this run's is {run_meta[key]!r}"
            )
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(state["optimizer"])
    weighting.load_state_dict(state["weighting"])
    generator.set_state(state["generator"])
    return [EpochRecord(**r) for r in state["records"]]
