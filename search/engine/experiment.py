"""One Ray Tune experiment: start it, or restore an interrupted one, wait, and check that every
trial finished. Stage 2 is one experiment over fixed configs (:func:`run_fixed`), so is every
rung of a deterministic stage-1 batch; asynchronous stage 1 builds its own tuner around the
searcher and uses the same pieces (:func:`run_config`, :func:`restore_tuner`)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rts.search.config.schema import SearchConfig, stage_resources
from rts.search.engine.paths import RunPaths, trial_config, trial_dirname
from rts.search.engine.plan import encoder_costs, mean_cost, stage1_epochs_per_trial
from rts.search.engine.session import Echo
from rts.search.engine.storage import delete_tree
from rts.search.engine.trainable import make_trainable
from rts.search.engine.trial import TrialFn

log = logging.getLogger(__name__)


class SearchInterrupted(RuntimeError):
    """A stage stopped before all its trials finished; rerunning the command resumes it."""


def run_config(
    cfg: SearchConfig,
    paths: RunPaths,
    stage: int,
    name: str,
    storage_path: str,
    total: int,
    echo: Echo,
    callbacks: Sequence[Any],
    *,
    label: str | None = None,
    stop: dict[str, Any] | None = None,
) -> Any:
    from ray import tune

    return tune.RunConfig(
        name=name,
        storage_path=storage_path,
        # Retries infrastructure faults only: a trial fault ends its trial without an error
        # (rts.search.engine.faults).
        failure_config=tune.FailureConfig(max_failures=cfg.resources.max_retries),
        # Two, not one: a driver killed between Ray deleting a trial's older checkpoint and saving
        # the experiment state that points to the newer one must still find a checkpoint.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        callbacks=stage_callbacks(
            cfg, paths, stage, total, echo, callbacks, label=label or name, stop=stop
        ),
        stop=stop,
        verbose=0,
    )


def stage_callbacks(
    cfg: SearchConfig,
    paths: RunPaths,
    stage: int,
    total: int,
    echo: Echo,
    callbacks: Sequence[Any] = (),
    *,
    label: str,
    stop: dict[str, Any] | None = None,
) -> list[Any]:
    """The callbacks of one experiment: progress, the trackers of ``cfg.tracking``, then the
    caller's ``callbacks``."""
    # progress and tracking import Ray at module level: kept out of light imports.
    from rts.search.engine.progress import ProgressCallback
    from rts.search.engine.tracking import tracking_callbacks

    final = int(stop["epoch"]) if stop else cfg.stage1.epochs if stage == 1 else cfg.stage2.epochs
    per_trial = stage1_epochs_per_trial(cfg) if stage == 1 and not stop else final
    costs = encoder_costs(cfg, stage)
    first = 1 if stage == 1 and not stop else 0  # stage 2 and rungs are grid searches
    progress = ProgressCallback(
        label,
        stage,
        total,
        echo,
        final_epoch=final,
        metric=cfg.stage1.metric if stage == 1 else "vuln",
        planned_units=total * per_trial * mean_cost(costs),
        costs=costs,
        first=first,
        retries_file=str(paths.retries),
        max_retries=cfg.resources.max_retries,
    )
    trackers = tracking_callbacks(cfg.tracking, cfg.name, paths.tensorboard, stage, first)
    return [progress, *trackers, *callbacks]


def restore_tuner(exp: str, trainable: Any, run_config: Any, **kwargs: Any) -> Any:
    """``Tuner.restore`` with this run's callbacks instead of the pickled ones.

    Ray restores the ``RunConfig`` pickled at the first start, callbacks included; a resume must
    print to this driver and honour this run's ``tracking`` and the caller's callbacks. Ray has
    no public setter (ray-project/ray#41364): the local tuner's run config is replaced in place.
    """
    from ray import tune

    tuner = tune.Tuner.restore(exp, trainable=trainable, resume_unfinished=True, **kwargs)
    local = getattr(tuner, "_local_tuner", None)
    if local is not None:
        local.get_run_config().callbacks = run_config.callbacks
    else:  # Ray Client: the tuner runs on the cluster with its pickled callbacks
        log.info("resuming %s through Ray Client with the callbacks of its first start", exp)
    return tuner


def restorable(exp: str) -> bool:
    """Whether ``exp`` holds an experiment Ray can restore."""
    from ray import tune

    return tune.Tuner.can_restore(exp)


def run_fixed(
    cfg: SearchConfig,
    paths: RunPaths,
    trial_fn: TrialFn,
    stage: int,
    storage_path: str,
    name: str,
    entries: list[dict[str, Any]],
    echo: Echo,
    *,
    title: str,
    announce: str = "",
    label: str | None = None,
    stop: dict[str, Any] | None = None,
    callbacks: Sequence[Any] = (),
) -> Any:
    """Run (or restore) one Ray Tune experiment over fixed trial configs; its ``ResultGrid``.

    Stage 2 is one such experiment; so is every rung of a deterministic stage-1 batch (with
    ``stop={"epoch": rung}``). ``title`` names it in messages, ``announce`` is echoed at a fresh
    start, ``label`` prefixes the per-trial progress lines (default: ``name``); ``callbacks``
    are added to the experiment's.

    Raises:
        SearchInterrupted: the experiment stopped early; call again to resume.
    """
    from ray import tune  # Ray stays out of light imports

    exp = f"{storage_path}/{name}"
    trainable = make_trainable(trial_fn, cfg, stage)
    space = {"candidate": tune.grid_search(entries)}
    config = run_config(
        cfg, paths, stage, name, storage_path, len(entries), echo, callbacks, label=label, stop=stop
    )
    if restorable(exp):
        echo(f"{title}: resuming {exp}")
        # The space again: a driver killed after Ray wrote tuner.pkl but before its first
        # experiment state restores without it (one trial with an empty config, which fails).
        tuner = restore_tuner(exp, trainable, config, param_space=space)
    else:
        fresh_start(exp, None)
        if announce:
            echo(announce)
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                num_samples=1,
                max_concurrent_trials=stage_resources(cfg, stage).max_concurrent,
                reuse_actors=True,
                trial_dirname_creator=trial_dirname,
            ),
            run_config=config,
        )
    results = tuner.fit()
    check_complete(results, len(entries), stage, paths)
    return results


def fresh_start(exp: str, journal: Path | None) -> None:
    """Clear what an earlier start left before it saved a restorable state."""
    if delete_tree(exp):
        log.info("removed %s: it held no restorable experiment", exp)
    if journal is not None and journal.exists():
        journal.unlink()


def check_complete(results: Any, expected: int, stage: int, paths: RunPaths) -> None:
    """Raise :class:`SearchInterrupted` unless all ``expected`` trials of ``results`` finished."""
    finished = results.num_terminated + results.num_errors
    # A trial stopped by Ctrl-C before Ray saved its config has no candidate: not finished.
    unsaved = sum(1 for r in results if not trial_config(r))
    finished -= unsaved
    if len(results) < expected or finished < len(results):
        raise SearchInterrupted(
            f"stage {stage} stopped with {finished} of {expected} trials finished; run the same "
            f"command again to resume ({paths.location})"
        )


def drop_resume_checkpoints(exp: str) -> None:
    """Delete the per-epoch trial checkpoints of a finished stage (local storage).

    They exist only to resume an interrupted stage; once the stage's tables are written the
    stage is never resumed again (stage-2 models were copied to ``checkpoints/`` first). They are
    most of a run's size: model and optimizer state of every trial, kept twice.
    """
    if "://" in exp or not os.path.isdir(exp):
        return
    # <exp>/<trial>/checkpoint_*; deterministic stage 1: <exp>/<batch-rung>/<trial>/checkpoint_*
    for pattern in ("*/checkpoint_*", "*/*/checkpoint_*"):
        for folder in Path(exp).glob(pattern):
            shutil.rmtree(folder, ignore_errors=True)
