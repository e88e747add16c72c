"""The Ray Tune function trainable: trial config → :class:`TrialSpec` → a plain trial function.

Ray stays here. The trainable decodes the trial's config into a frozen spec, restores the last
checkpoint folder if Ray resumes the trial (else the one its config names, :data:`RESUME_KEY`),
and hands the trial function a :class:`~.trial.TrialSession` whose ``report`` turns each
epoch's metrics into ``ray.tune.report`` (with a checkpoint folder when the trial wrote its
state). It also adds where the trial ran (``node_id``, ``hostname``), and fails the trial with
:class:`~.trial.TrialDiverged` when a loss or metric is not finite.

A trial fault (an exception of the trial function, a non-finite metric) ends the trial with a
last result saying why (:func:`~.faults.failed_result`) instead of an error, so Ray's
retries (``FailureConfig``) are spent on infrastructure faults only: an exception of Ray itself
(a checkpoint upload that failed, a lost object) is raised again, and a lost node or killed
worker never reaches this code (:mod:`rts.search.engine.faults`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rts.search.config.schema import SearchConfig, stage_resources
from rts.search.engine.faults import failed_result, failure_reason, is_infrastructure_fault
from rts.search.engine.rows import read_rows, write_rows
from rts.search.engine.space import decode
from rts.search.engine.trial import (
    TrialDiverged,
    TrialFn,
    TrialSession,
    WriteCheckpoint,
    build_spec,
)

log = logging.getLogger(__name__)

RESUME_KEY = "resume_from"
"""Trial-config entry: a checkpoint (folder or URI) the trial starts from when Ray has none of
its own for it (the next rung of a deterministic stage-1 batch)."""
SEED_KEY = "seed"
"""Trial-config entry: this trial's own training seed (``stage2.seeds``); absent = the search's
trial seed."""

CHECKED_METRICS = ("train_loss", "clean_error", "vuln")
"""Metrics that must be finite: a NaN or inf in one of them fails the trial as diverged."""


def make_trainable(trial_fn: TrialFn, cfg: SearchConfig, stage: int) -> Any:
    """The Ray function trainable of ``stage``, with the stage's trial resources attached."""
    from ray import tune

    fn = tune.with_parameters(ray_trial, trial_fn=trial_fn, cfg=cfg, stage=stage)
    r = stage_resources(cfg, stage)
    return tune.with_resources(fn, {"cpu": r.cpus_per_trial, "gpu": r.gpus_per_trial})


def ray_trial(config: dict[str, Any], *, trial_fn: TrialFn, cfg: SearchConfig, stage: int) -> None:
    """The body of every Ray trial (see the module docstring)."""
    import ray
    from ray import tune

    entry = config.get("candidate", config)
    candidate = decode(entry)
    spec = build_spec(cfg, candidate, stage)
    if entry.get(SEED_KEY) is not None:
        spec = dataclasses.replace(spec, seed=int(entry[SEED_KEY]))
    _set_threads(spec.threads)
    node_id = ray.get_runtime_context().get_node_id()
    host = socket.gethostname()
    with tempfile.TemporaryDirectory(prefix="rts-resume-") as tmp:
        resume_dir = None
        checkpoint = tune.get_checkpoint()
        if checkpoint is None and entry.get(RESUME_KEY):
            # A deterministic stage-1 rung continues the checkpoint of the rung before.
            checkpoint = tune.Checkpoint(entry[RESUME_KEY])
        if checkpoint is not None:
            resume_dir = Path(tmp)
            checkpoint.to_directory(str(resume_dir))

        sent: list[BaseException] = []  # what Ray's report raised: infrastructure faults
        rows = read_rows(resume_dir)  # every row reported, kept in each checkpoint (rows.py)

        def send(out: dict[str, Any], checkpoint: Any = None) -> None:
            try:
                tune.report(out, checkpoint=checkpoint)
            except Exception as exc:
                sent.append(exc)
                raise

        def report(metrics: Mapping[str, Any], write_checkpoint: WriteCheckpoint | None = None):
            out = dict(metrics)
            check_finite(out)
            out.update(node_id=node_id, hostname=host)
            rows.append(dict(out))  # as reported (Ray may add its own keys to out)
            if write_checkpoint is None:
                send(out)
                return
            with tempfile.TemporaryDirectory(prefix="rts-ckpt-") as ckpt_dir:
                write_checkpoint(Path(ckpt_dir))
                write_rows(Path(ckpt_dir), rows)
                send(out, tune.Checkpoint.from_directory(ckpt_dir))

        trial_id = tune.get_context().get_trial_id()
        try:
            trial_fn(spec, TrialSession(trial_id, report, resume_dir))
        except Exception as exc:
            if sent or is_infrastructure_fault(exc):
                raise  # Ray retries the trial from its last checkpoint
            log.warning("trial %s failed: %s", trial_id, failure_reason(exc), exc_info=True)
            required = {*CHECKED_METRICS, cfg.stage1.metric}
            tune.report(
                {**failed_result(exc, sorted(required)), "node_id": node_id, "hostname": host}
            )


def check_finite(metrics: Mapping[str, Any]) -> None:
    """Raise :class:`TrialDiverged` if a metric of :data:`CHECKED_METRICS` is NaN or infinite."""
    for key in CHECKED_METRICS:
        value = metrics.get(key)
        if isinstance(value, int | float) and not math.isfinite(value):
            epoch = metrics.get("epoch", "?")
            raise TrialDiverged(f"diverged: {key}={value} at epoch {epoch}")


def _set_threads(threads: int) -> None:
    """Give torch the trial's CPUs, not the whole machine's (if torch is loaded already; a trial
    that imports it later sets its threads itself)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
