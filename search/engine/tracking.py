"""Experiment trackers: TensorBoard event files per trial, MLflow and Weights & Biases runs.

Each is a Ray Tune logger callback built from the ``tracking:`` section for one stage; they run
in the driver. TensorBoard writes with ``tensorboardX`` (which ``ray[tune]`` installs) into
``<run>/tensorboard/stage<n>/<trial_id>/``, one scalar per numeric metric with the epoch as its
step, so ``tensorboard --logdir <run>/tensorboard`` compares every trial of a run. It replaces
Ray's own TensorBoard logger (which writes into each trial's Ray folder); with
``tracking.tensorboard: false`` neither writes. MLflow and W&B are Ray's integration callbacks,
optional extras checked before anything starts (:func:`check_trackers`).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

from ray.tune.logger import TBXLoggerCallback

from rts.search.config.schema import ConfigError, TrackingConfig
from rts.search.engine.paths import stage_trial_id, trial_number

EXTRAS = {"mlflow": "mlflow", "wandb": "wandb"}
"""Tracker → the Python package it needs (installed by the extra of the same name)."""


def check_trackers(tracking: TrackingConfig) -> None:
    """Raise :class:`ConfigError` naming the extra when a tracker's package is missing."""
    for name, package in EXTRAS.items():
        if getattr(tracking, name) is not None and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"tracking.{name}: the {package} package is not installed; "
                f'pip install "robust-task-search[{name}]" (or remove tracking.{name})'
            )


class TensorBoardCallback(TBXLoggerCallback):
    """Event files per trial under ``root/stage<n>/<trial_id>``, the epoch as the step.

    A subclass of Ray's ``TBXLoggerCallback``, so Ray adds no TensorBoard logger of its own;
    ``root=None`` writes nothing (``tracking.tensorboard: false``).
    """

    def __init__(self, root: str | None, stage: int, first: int = 1) -> None:
        super().__init__()
        self.root = root
        self.stage = stage
        self.first = first  # Ray's counter of the first trial (paths.trial_number)

    def folder(self, trial: Any) -> Path:
        """The trial's event folder (``s<stage>-<n>``, or Ray's id before it has a number)."""
        number = trial_number(trial, self.first)
        name = stage_trial_id(self.stage, number) if number else str(trial.trial_id)
        return Path(str(self.root)) / f"stage{self.stage}" / name

    def log_trial_start(self, trial: Any) -> None:
        """Open the trial's writer (a resumed trial appends a new event file)."""
        if self.root is None:
            return
        if trial in self._trial_writer:
            self._trial_writer[trial].close()
        self._trial_writer[trial] = self._summary_writer_cls(str(self.folder(trial)))
        self._trial_result[trial] = {}

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        """One scalar per finite numeric metric, at step ``epoch``."""
        if self.root is None:
            return
        if trial not in self._trial_writer:
            self.log_trial_start(trial)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        writer = self._trial_writer[trial]
        for key, value in result.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if key in SKIPPED or not math.isfinite(value):
                continue
            writer.add_scalar(key, value, global_step=step)
        writer.flush()

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        """Close the trial's writer."""
        writer = self._trial_writer.pop(trial, None)
        self._trial_result.pop(trial, None)
        if writer is not None:
            writer.close()


SKIPPED = frozenset(
    {
        "epoch",
        "training_iteration",
        "timestamp",
        "time_this_iter_s",
        "time_total_s",
        "time_since_restore",
        "iterations_since_restore",
        "timesteps_total",
        "episodes_total",
        "pid",
        "done",
    }
)
"""Ray's bookkeeping fields: not metrics of the trial."""


def tracking_callbacks(
    tracking: TrackingConfig, run_name: str, tensorboard_root: Path, stage: int, first: int = 1
) -> list[Any]:
    """The tracker callbacks of one stage's experiment (the TensorBoard one always: with
    ``tensorboard: false`` it keeps Ray from writing its own event files); ``first`` is
    :func:`~rts.search.engine.paths.trial_number`'s."""
    root = str(tensorboard_root) if tracking.tensorboard else None
    out: list[Any] = [TensorBoardCallback(root, stage, first)]
    tags = {"rts_run": run_name, "stage": f"stage{stage}"}
    if tracking.mlflow is not None:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        out.append(
            MLflowLoggerCallback(
                tracking_uri=tracking.mlflow.tracking_uri,
                experiment_name=tracking.mlflow.experiment or run_name,
                tags=tags,
            )
        )
    if tracking.wandb is not None:
        from ray.air.integrations.wandb import WandbLoggerCallback

        out.append(
            WandbLoggerCallback(
                project=tracking.wandb.project or run_name,
                group=tracking.wandb.group or f"stage{stage}",
                tags=list(tags.values()),
            )
        )
    return out
