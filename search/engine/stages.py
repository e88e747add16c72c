"""Running one stage on Ray Tune: start or restore the experiment, wait, check it finished.

The stage functions return Ray's results; :mod:`rts.search.results` turns them into tables.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rts.search.config.schema import ConfigError, SearchConfig, stage_resources
from rts.search.engine.paths import RunPaths
from rts.search.engine.plan import stage1_trial_count
from rts.search.engine.space import Space
from rts.search.engine.trial import TrialFn

log = logging.getLogger(__name__)


def trial_counter(path: str | Path) -> int:
    """The creation index of a trial, from its folder name ``trial_<n>_<id>``."""
    name = Path(str(path)).name
    parts = name.split("_")
    if len(parts) >= 3 and parts[0] == "trial" and parts[1].isdigit():
        return int(parts[1])
    raise ValueError(f"not a trial folder of this search: {name!r}")


def stage_trial_id(stage: int, number: int) -> str:
    """The results' id of the ``number``-th trial (1-based, creation order) of ``stage``."""
    return f"s{stage}-{number:04d}"


def trial_number(trial: Any, first: int = 1) -> int | None:
    """A Ray trial's number in its stage, as the results will give it (1-based): its batch
    member number (deterministic stage 1), else its creation order in the experiment.

    Args:
        trial: a live Ray Tune trial.
        first: the counter Ray gives an experiment's first trial: 1 under a searcher (stage 1),
            0 under a grid search (stage 2, :func:`run_fixed`).

    Returns:
        The number, or ``None`` if Ray has not numbered the trial.
    """
    member = trial.config.get("candidate", trial.config).get("member")
    if member:
        return int(member)
    counter = str(trial.experiment_tag).split("_")[0]
    return int(counter) - first + 1 if counter.isdigit() else None


def trial_dirname(trial: Any) -> str:
    """Ray ``trial_dirname_creator``: ``trial_<n>_<ray id>`` (``n`` = creation order)."""
    counter = str(trial.experiment_tag).split("_")[0]
    return f"trial_{int(counter):04d}_{trial.trial_id}" if counter.isdigit() else trial.trial_id


def trial_config(result: Any) -> dict[str, Any]:
    """The trial's config; from its ``params.json`` (local or on the remote storage) if Ray's
    result lacks it."""
    config = result.config
    if config:
        return config
    params = f"{result.path}/params.json"
    fs = getattr(result, "filesystem", None)
    if fs is None:
        return json.loads(Path(params).read_text()) if Path(params).exists() else {}
    try:
        with fs.open_input_stream(params) as fh:
            return json.loads(fh.read())
    except FileNotFoundError:
        return {}


LOCAL_RAY_ENV = {"RAY_AUTH_MODE": "disabled"}
"""Environment for a Ray we start ourselves only: no token auth (and no warning about it) on a
local cluster. Joining a cluster (``--address``) leaves auth to the cluster's settings."""

RAY_ENV_DEFAULTS = {
    **LOCAL_RAY_ENV,
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
}
"""Environment set (if unset) before a local Ray starts: :data:`LOCAL_RAY_ENV`, no warning
about snapshotting the experiment after every epoch's checkpoint (resume needs it), and Tune's
classic output path (the search prints its own progress)."""


def ray_env(address: str | None) -> dict[str, str]:
    """The environment defaults for Ray: :data:`RAY_ENV_DEFAULTS`, without
    :data:`LOCAL_RAY_ENV` when joining a cluster at ``address``."""
    return {k: v for k, v in RAY_ENV_DEFAULTS.items() if not (address and k in LOCAL_RAY_ENV)}


def ray_init_kwargs(
    address: str | None,
    num_cpus: int | None,
    *,
    worker_logs: bool = False,
    dashboard: bool = False,
) -> dict[str, Any]:
    """The arguments of ``ray.init`` for the search.

    Args:
        address: a cluster to join, or ``None`` for a new local Ray ("local": start one even
            if another cluster on this machine advertises itself in
            /tmp/ray/ray_current_cluster, which ``ray.init()`` would silently join).
        num_cpus: CPUs of a local Ray (``None``: all).
        worker_logs: show the trials' stdout/stderr and logs on the driver (``rts -v``).
        dashboard: start Ray's dashboard with a local Ray (a cluster has its own).
    """
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": worker_logs}
    if address:
        return {"address": address, **kwargs}
    return {"address": "local", "num_cpus": num_cpus, "include_dashboard": dashboard, **kwargs}


def check_dashboard() -> None:
    """Raise :class:`ConfigError` when Ray's dashboard packages (``ray[default]``) are missing."""
    try:
        import ray.dashboard.optional_deps  # noqa: F401  (what Ray itself checks)
    except ImportError:
        raise ConfigError(
            "--dashboard: Ray's dashboard packages are not installed; "
            'pip install "robust-task-search[dashboard]" (or "ray[default]")'
        ) from None


Echo = Callable[[str], None]


class SearchInterrupted(RuntimeError):
    """A stage stopped before all its trials finished; rerunning the command resumes it."""


def check_ray_args(address: str | None, num_cpus: int | None) -> None:
    """Reject ``--num-cpus`` with ``--address`` and a CPU count below 1."""
    if num_cpus is not None and num_cpus < 1:
        raise ConfigError(f"--num-cpus must be >= 1, got {num_cpus}")
    if address and num_cpus is not None:
        raise ConfigError(
            f"--num-cpus {num_cpus}: caps a local Ray only; a cluster (--address {address}) "
            "has its own resources"
        )


@contextlib.contextmanager
def ray_session(
    address: str | None,
    num_cpus: int | None,
    *,
    worker_logs: bool = False,
    dashboard: bool = False,
    echo: Echo | None = None,
) -> Iterator[None]:
    """Start (or join) Ray for the search and shut it down after; reuse one already running.

    ``worker_logs`` and ``dashboard`` are :func:`ray_init_kwargs`'s; the dashboard's URL (of a
    local Ray with ``dashboard``, or of a joined cluster that has one) goes to ``echo``.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    check_ray_args(address, num_cpus)
    if dashboard and not address:
        check_dashboard()
    for key, value in ray_env(address).items():
        os.environ.setdefault(key, value)
    context = ray.init(
        **ray_init_kwargs(address, num_cpus, worker_logs=worker_logs, dashboard=dashboard)
    )
    url = getattr(context, "dashboard_url", None)
    if echo is not None and url and (dashboard or address):
        echo(f"Ray dashboard: {url if '://' in url else 'http://' + url}")
    try:
        yield
    finally:
        ray.shutdown()


def _run_config(
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
    from rts.search.engine.plan import encoder_costs, mean_cost, stage1_epochs_per_trial
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
    )
    trackers = tracking_callbacks(cfg.tracking, cfg.name, paths.tensorboard, stage, first)
    return [progress, *trackers, *callbacks]


def _restore(exp: str, trainable: Any, run_config: Any, **kwargs: Any) -> Any:
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


def _restorable(exp: str) -> bool:
    from ray import tune

    return tune.Tuner.can_restore(exp)


def run_stage1(
    cfg: SearchConfig,
    paths: RunPaths,
    trial_fn: TrialFn,
    echo: Echo,
    callbacks: Sequence[Any] = (),
) -> Any:
    """Run or resume stage 1 on Ray; returns its results once every trial finished.

    Asynchronous mode: Ray Tune's ``OptunaSearch`` and ASHA, one experiment; returns Ray's
    ``ResultGrid``. Deterministic mode (``search.deterministic``): batches of proposals and rung
    barriers (:func:`rts.search.engine.batches.run_batched_stage1`); returns one
    :class:`~rts.search.engine.batches.RecordedResult` per trial, which reads like Ray's.
    ``callbacks`` (Ray Tune callbacks) are added to every experiment of the stage.

    Raises:
        SearchInterrupted: the stage stopped early (Ctrl-C, a lost driver); call again to resume.
    """
    if cfg.stage1.design != "sampler":
        return _design_stage1(cfg, paths, trial_fn, echo, callbacks)
    if cfg.search.deterministic:
        from rts.search.engine.batches import run_batched_stage1

        return run_batched_stage1(cfg, paths, trial_fn, echo, callbacks)
    from rts.search.engine.storage import journal_at

    with journal_at(paths.journal):  # a restored searcher's study goes to this run's journal
        return _stage1(cfg, paths, trial_fn, echo, callbacks)


def _design_stage1(
    cfg: SearchConfig, paths: RunPaths, trial_fn: TrialFn, echo: Echo, callbacks: Sequence[Any]
) -> Any:
    """Stage 1 as a fixed design (``stage1.design``): every design candidate trained for the
    stage's epochs, no sampler and no pruning (deterministic whatever the mode)."""
    design = Space.from_config(cfg).design(cfg.stage1.design)
    entries = [{**c.to_config(), "role": "design"} for c in design]
    return run_fixed(
        cfg,
        paths,
        trial_fn,
        1,
        paths.ray,
        "stage1",
        entries,
        echo,
        title="stage 1",
        announce=(
            f"stage 1: {cfg.stage1.design} design, {len(entries)} trials ({cfg.stage1.epochs} "
            f"epochs each, no pruning; stage 2 takes the {cfg.stage1.model} model's predictions)"
        ),
        callbacks=callbacks,
    )


def _stage1(
    cfg: SearchConfig, paths: RunPaths, trial_fn: TrialFn, echo: Echo, callbacks: Sequence[Any]
) -> Any:
    """Stage 1 on Ray: restore the interrupted experiment, or start it."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from rts.search.engine.space import make_sampler, make_searcher
    from rts.search.engine.trainable import make_trainable

    exp = paths.experiment(1)
    total = stage1_trial_count(cfg)
    trainable = make_trainable(trial_fn, cfg, 1)
    run_config = _run_config(cfg, paths, 1, "stage1", paths.ray, total, echo, callbacks)
    if _restorable(exp):
        echo(f"stage 1: resuming {exp}")
        tuner = _restore(exp, trainable, run_config)
    else:
        _fresh_start(exp, paths.journal)
        space = Space.from_config(cfg)
        s1 = cfg.stage1
        metrics = (s1.metric, "clean_error") if cfg.search.objective == "pareto" else (s1.metric,)
        searcher = make_searcher(
            space,
            sampler=make_sampler(cfg.sampler, space, seed=cfg.search.seed, n_trials=total),
            metrics=metrics,
            final_epoch=cfg.stage1.epochs,
            budget=total,
            storage=journal_storage(paths.journal),
            seed=cfg.search.seed,
        )
        if s1.scheduler == "asha":
            scheduler = ASHAScheduler(
                time_attr="epoch",
                metric=s1.metric,
                mode="min",
                max_t=s1.epochs,
                grace_period=s1.grace_period,
                reduction_factor=s1.reduction_factor,
            )
        else:
            scheduler = FIFOScheduler()
        echo(
            f"stage 1: {total} trials, {s1.epochs} epochs each at most, "
            f"{cfg.sampler} sampler, {s1.scheduler} on {s1.metric}"
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=total,
                max_concurrent_trials=stage_resources(cfg, 1).max_concurrent,
                reuse_actors=True,
                trial_dirname_creator=trial_dirname,
            ),
            run_config=run_config,
        )
    results = tuner.fit()
    _check_complete(results, total - untrained_slots(paths.journal), 1, paths)
    return results


def untrained_slots(journal: Path) -> int:
    """Asynchronous stage 1: slots of the budget answered from earlier trials, not trained
    (:data:`rts.search.engine.searcher.UNTRAINED`)."""
    from rts.search.engine.searcher import UNTRAINED

    study = _load_study(journal)
    return int(study.user_attrs.get(UNTRAINED, 0)) if study is not None else 0


def answered_repeats(journal: Path) -> int:
    """Stage-1 study trials answered from an earlier trial's outcome instead of trained (both
    modes; :data:`rts.search.engine.searcher.REPEAT_OF`)."""
    from rts.search.engine.searcher import REPEAT_OF

    study = _load_study(journal)
    if study is None:
        return 0
    return sum(REPEAT_OF in t.user_attrs for t in study.get_trials(deepcopy=False))


def _load_study(journal: Path) -> Any:
    """The stage-1 study in ``journal``, or ``None`` when there is none."""
    import optuna

    if not journal.is_file():
        return None
    try:
        return optuna.load_study(study_name="stage1", storage=journal_storage(journal))
    except KeyError:  # the journal holds no such study
        return None


def run_stage2(
    cfg: SearchConfig,
    paths: RunPaths,
    trial_fn: TrialFn,
    entries: list[dict[str, Any]],
    echo: Echo,
    callbacks: Sequence[Any] = (),
) -> Any:
    """Run or resume stage 2 over ``entries`` (candidate configs); returns Ray's ``ResultGrid``.

    Raises:
        SearchInterrupted: the stage stopped early; call again to resume.
    """
    echo_start = (
        f"stage 2: {len(entries)} trials ({cfg.stage2.epochs} epochs, attacks "
        f"{', '.join(cfg.attack.ensemble)})"
    )
    return run_fixed(
        cfg,
        paths,
        trial_fn,
        2,
        paths.ray,
        "stage2",
        entries,
        echo,
        title="stage 2",
        announce=echo_start,
        callbacks=callbacks,
    )


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
    from ray import tune

    from rts.search.engine.trainable import make_trainable

    exp = f"{storage_path}/{name}"
    trainable = make_trainable(trial_fn, cfg, stage)
    space = {"candidate": tune.grid_search(entries)}
    run_config = _run_config(
        cfg, paths, stage, name, storage_path, len(entries), echo, callbacks, label=label, stop=stop
    )
    if _restorable(exp):
        echo(f"{title}: resuming {exp}")
        # The space again: a driver killed after Ray wrote tuner.pkl but before its first
        # experiment state restores without it (one trial with an empty config, which fails).
        tuner = _restore(exp, trainable, run_config, param_space=space)
    else:
        _fresh_start(exp, None)
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
            run_config=run_config,
        )
    results = tuner.fit()
    _check_complete(results, len(entries), stage, paths)
    return results


def _fresh_start(exp: str, journal: Path | None) -> None:
    """Clear what an earlier start left before it saved a restorable state."""
    from rts.search.engine.storage import delete_tree

    if delete_tree(exp):
        log.info("removed %s: it held no restorable experiment", exp)
    if journal is not None and journal.exists():
        journal.unlink()


def journal_storage(path: Path) -> Any:
    """Optuna journal-file storage at ``path`` (file-locked, safe on NFS).

    Its pickle (in Ray's snapshot of the searcher) carries the journal, so a restored stage 1
    gets back the study its searcher knows (:class:`search.storage.SnapshotJournalBackend`).
    """
    from optuna.storages import JournalStorage

    from rts.search.engine.storage import SnapshotJournalBackend

    return JournalStorage(SnapshotJournalBackend(path))


def _check_complete(results: Any, expected: int, stage: int, paths: RunPaths) -> None:
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
