"""The two-stage search: Ray Tune + Optuna + ASHA on the surrogate, then the target.

Stage 1 (surrogate): ``n_trials`` candidates proposed by Optuna through Ray Tune's
``OptunaSearch`` (define-by-run space, :mod:`search.space`) train the surrogate model epoch by
epoch and report the main task's relative vulnerability to a cheap attack after every epoch;
ASHA stops the unpromising ones early. The Optuna study lives in a journal file under the run.

Stage 2 (target): the ``top_k`` distinct best candidates of stage 1 (plus the single-task
baseline, always, and the uniform-weight twins of weighted candidates) are trained for the full
budget on the target encoder and evaluated with the attack ensemble.

Resume: everything lives under ``<storage>/<name>/``. Running the same command again restores
an interrupted stage with ``Tuner.restore`` (finished trials are kept, running ones continue
from their last checkpoint, the searcher's state comes back) and skips a finished stage, whose
tables are on disk; stage 2's trial set is a pure function of stage 1's table. A trial that
raises or diverges is recorded as failed with its reason and the search goes on.

``storage`` may be a URI (``s3://``, ``gs://``, ``hdfs://``, ``file://``): Ray Tune's
experiments go there directly, and the run's own files are written to a local staging copy
that is downloaded at the start and uploaded after each stage (:mod:`search.storage`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from search.config import (
    ConfigError,
    SearchConfig,
    diff_configs,
    dump_config,
    load_config,
    resolve,
    validate,
)
from search.results import (
    StageTables,
    Summary,
    add_surrogate_columns,
    collect_stage,
    encoder_cost,
    exhaustive_cost,
    format_summary,
    read_parquet,
    select_stage2,
    summarize,
    trial_dirname,
    write_parquet,
)
from search.space import Space
from search.trial import TrialFn
from tasks.io import atomic_write_text

log = logging.getLogger(__name__)

RAY_ENV_DEFAULTS = {
    "RAY_AUTH_MODE": "disabled",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
}
"""Environment set (if unset) before Ray starts: no token-auth warning on a local cluster, no
warning about snapshotting the experiment after every epoch's checkpoint (resume needs it)."""

Echo = Callable[[str], None]


class SearchInterrupted(RuntimeError):
    """A stage stopped before all its trials finished; rerunning the command resumes it."""


@dataclass(frozen=True)
class RunPaths:
    """Where a run keeps everything.

    Attributes:
        root: the run folder ``<storage>/<name>`` (the local staging copy for a URI storage).
        remote: ``<storage URI>/<name>`` for a URI storage, else ``None``.
    """

    root: Path
    remote: str | None = None

    @property
    def location(self) -> str:
        """Where the results are: the URI, or the folder."""
        return self.remote or str(self.root)

    @property
    def display(self) -> str:
        """The location for messages (with the staging copy for a URI)."""
        return f"{self.remote} (local copy: {self.root})" if self.remote else str(self.root)

    @property
    def config(self) -> Path:
        """The resolved config (``config.yaml``)."""
        return self.root / "config.yaml"

    @property
    def ray(self) -> str:
        """Ray Tune's storage (``<location>/ray``, holding ``stage1``, ``stage2``): on the
        remote itself for a URI storage."""
        return f"{self.remote}/ray" if self.remote else str(self.root / "ray")

    def experiment(self, stage: int) -> str:
        """Ray Tune's experiment of ``stage`` (a folder or URI)."""
        return f"{self.ray}/stage{stage}"

    @property
    def journal(self) -> Path:
        """The Optuna study of stage 1 (journal storage)."""
        return self.root / "optuna.journal"

    def stage(self, stage: int, table: str) -> Path:
        """A finished stage's table: ``stages/stage<n>_<table>.parquet``."""
        return self.root / "stages" / f"stage{stage}_{table}.parquet"

    @property
    def trials(self) -> Path:
        """One row per trial of both stages."""
        return self.root / "trials.parquet"

    @property
    def history(self) -> Path:
        """One row per trial and epoch."""
        return self.root / "history.parquet"

    @property
    def attacks(self) -> Path:
        """Stage-2 attack rows."""
        return self.root / "attacks.parquet"

    @property
    def checkpoints(self) -> Path:
        """Stage-2 model checkpoints, one folder per trial."""
        return self.root / "checkpoints"

    @property
    def summary_json(self) -> Path:
        """The summary as JSON."""
        return self.root / "summary.json"

    @property
    def summary_md(self) -> Path:
        """The summary as printed."""
        return self.root / "summary.md"


@dataclass(frozen=True)
class SearchOutcome:
    """What :func:`run_search` returns: where the results are, the tables and the summary."""

    paths: RunPaths
    trials: pd.DataFrame
    history: pd.DataFrame
    attacks: pd.DataFrame
    summary: Summary


def run_dir(cfg: SearchConfig, storage: str | os.PathLike[str] = "runs") -> RunPaths:
    """The run folder of ``cfg`` under ``storage``: a local or shared folder, or a URI that
    pyarrow opens (then ``root`` is the local staging copy; nothing is read or written here).

    Raises:
        ConfigError: a URI with an unsupported scheme or no bucket / absolute path.
    """
    text = os.fspath(storage)
    if "://" in text:
        from search.storage import check_uri, staging_dir

        try:
            uri = check_uri(text)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return RunPaths(staging_dir(uri, cfg.name), remote=f"{uri}/{cfg.name}")
    return RunPaths(Path(text).expanduser().resolve() / cfg.name)


def run_search(
    cfg: SearchConfig,
    *,
    storage: str | os.PathLike[str] = "runs",
    address: str | None = None,
    num_cpus: int | None = None,
    trial_fn: TrialFn | None = None,
    echo: Echo | None = None,
) -> SearchOutcome:
    """Run (or resume) the two-stage search of ``cfg``; returns the tables and the summary.

    Args:
        cfg: the search config (validated again here).
        storage: folder that holds ``<name>/``, shared between nodes on a cluster; or a URI
            (``s3://bucket/runs``, ``file:///abs``; see :mod:`search.storage`).
        address: ``None`` starts Ray locally; ``"auto"`` or ``"ray://host:10001"`` joins a
            cluster. Ignored when Ray is already initialised in this process.
        num_cpus: CPUs of a local Ray (default: all of the machine's).
        trial_fn: the trial function (default :func:`search.trial.run_trial`, the real one).
        echo: prints progress lines (one per finished trial and stage); ``None`` is silent.

    Raises:
        ConfigError: bad config, or the run folder holds a different search.
        SearchInterrupted: a stage was interrupted; call again to resume.
    """
    cfg = resolve(cfg)
    validate(cfg)
    check_ray_args(address, num_cpus)
    paths = run_dir(cfg, storage)
    say = echo or (lambda _line: None)
    if paths.remote:
        from search.storage import sync_down

        if sync_down(paths.remote, paths.root):
            say(f"resuming from {paths.display}")
    prepare_run_dir(cfg, paths)
    if trial_fn is None:
        from search.trial import run_trial

        trial_fn = run_trial
    space = Space.from_config(cfg)
    with _mirrored(paths):
        sync_up(paths)
        finished = all(_read_stage(paths, stage) is not None for stage in (1, 2))
        with contextlib.nullcontext() if finished else ray_session(address, num_cpus):
            s1 = _run_stage1(cfg, paths, trial_fn, say)
            sync_up(paths)
            entries = select_stage2(
                s1.trials,
                space,
                top_k=cfg.stage2.top_k,
                uniform_twins=cfg.stage2.uniform_twins,
                pareto=cfg.search.objective == "pareto",
                metric=cfg.stage1.metric,
                baseline=cfg.stage2.baseline,
            )
            s2 = _run_stage2(cfg, paths, trial_fn, [e.to_config() for e in entries], say)
            sync_up(paths)
        outcome = _write_results(cfg, paths, space, s1, s2)
    return outcome


def sync_up(paths: RunPaths) -> None:
    """Upload what changed in the staging copy (nothing for a folder storage)."""
    if paths.remote:
        from search.storage import sync_up as upload

        upload(paths.root, paths.remote)


@contextlib.contextmanager
def _mirrored(paths: RunPaths) -> Iterator[None]:
    """Upload the staging copy when the block stops on an error too (best effort)."""
    try:
        yield
    except BaseException:
        if paths.remote:
            try:
                sync_up(paths)
            except Exception as exc:  # keep the original error
                log.warning("could not upload %s to %s: %s", paths.root, paths.remote, exc)
        raise
    sync_up(paths)


def _write_results(
    cfg: SearchConfig, paths: RunPaths, space: Space, s1: StageTables, s2: StageTables
) -> SearchOutcome:
    """Join both stages, write the tables and the summary, and return them."""
    trials = pd.concat([s1.trials, add_surrogate_columns(s2.trials, s1.trials)], ignore_index=True)
    history = pd.concat([s1.history, s2.history], ignore_index=True)
    summary = summarize(
        s1.trials,
        s2.trials,
        space,
        stage2_epochs=cfg.stage2.epochs,
        aggregate=cfg.attack.aggregate,
        attacks=cfg.attack.ensemble,
        pareto=cfg.search.objective == "pareto",
    )
    write_parquet(trials, paths.trials)
    write_parquet(history, paths.history)
    write_parquet(s2.attacks, paths.attacks)
    atomic_write_text(paths.summary_json, summary.to_json())
    atomic_write_text(paths.summary_md, format_summary(summary, paths.location) + "\n")
    return SearchOutcome(paths, trials, history, s2.attacks, summary)


def prepare_run_dir(cfg: SearchConfig, paths: RunPaths) -> None:
    """Write ``config.yaml``; if the folder holds a run already, it must be the same search."""
    if paths.config.exists():
        previous = load_config(paths.config, check=False)
        changed = diff_configs(previous, cfg)
        if changed:
            raise ConfigError(
                f"{paths.location} holds a search with another config ({'; '.join(changed[:3])}); "
                "rerun with the same config to resume, or pick another name=..."
            )
    atomic_write_text(paths.config, dump_config(cfg))


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
def ray_session(address: str | None, num_cpus: int | None) -> Iterator[None]:
    """Start (or join) Ray for the search and shut it down after; reuse one already running."""
    import ray

    if ray.is_initialized():
        yield
        return
    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    check_ray_args(address, num_cpus)
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        # "local": start a new instance even if another cluster on this machine advertises
        # itself in /tmp/ray/ray_current_cluster (ray.init() would silently join it).
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def stage1_trial_count(cfg: SearchConfig) -> int:
    """Stage-1 trials: ``n_trials``, at most the space size for the grid sampler."""
    n = cfg.search.n_trials or Space.from_config(cfg).size
    if cfg.sampler == "grid":
        n = min(n, Space.from_config(cfg).size)
    return n


def _run_config(name: str, cfg: SearchConfig, paths: RunPaths, total: int, echo: Echo) -> Any:
    from ray import tune

    return tune.RunConfig(
        name=name,
        storage_path=paths.ray,
        failure_config=tune.FailureConfig(max_failures=cfg.resources.max_failures),
        # Two, not one: a driver killed between Ray deleting a trial's older checkpoint and saving
        # the experiment state that points to the newer one must still find a checkpoint.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        callbacks=[_progress_callback(name, total, echo)],
        verbose=0,
    )


def _restorable(exp: str) -> bool:
    from ray import tune

    return tune.Tuner.can_restore(exp)


def _run_stage1(cfg: SearchConfig, paths: RunPaths, trial_fn: TrialFn, echo: Echo) -> StageTables:
    """Run or resume stage 1, or read its tables when it finished before."""
    done = _read_stage(paths, 1)
    if done is not None:
        echo(f"stage 1: finished earlier ({len(done.trials)} trials), skipped")
        return done
    from search.storage import journal_at

    with journal_at(paths.journal):  # a restored searcher's study goes to this run's journal
        return _stage1(cfg, paths, trial_fn, echo)


def _stage1(cfg: SearchConfig, paths: RunPaths, trial_fn: TrialFn, echo: Echo) -> StageTables:
    """Stage 1 on Ray: restore the interrupted experiment, or start it."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from search.space import make_sampler, make_searcher
    from search.trainable import make_trainable

    exp = paths.experiment(1)
    total = stage1_trial_count(cfg)
    trainable = make_trainable(trial_fn, cfg, 1)
    if _restorable(exp):
        echo(f"stage 1: resuming {exp}")
        tuner = tune.Tuner.restore(exp, trainable=trainable, resume_unfinished=True)
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
            storage=journal_storage(paths.journal),
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
                max_concurrent_trials=cfg.resources.max_concurrent,
                reuse_actors=True,
                trial_dirname_creator=trial_dirname,
            ),
            run_config=_run_config("stage1", cfg, paths, total, echo),
        )
    results = tuner.fit()
    _check_complete(results, total, 1, paths)
    encoder = None if cfg.stage1.encoder == "same" else cfg.stage1.encoder
    tables = collect_stage(results, 1, epochs=cfg.stage1.epochs, trained_encoder=encoder)
    _write_stage(paths, 1, tables)
    return tables


def _run_stage2(
    cfg: SearchConfig,
    paths: RunPaths,
    trial_fn: TrialFn,
    entries: list[dict[str, Any]],
    echo: Echo,
) -> StageTables:
    """Run or resume stage 2 over ``entries`` (candidate configs), or read its tables."""
    done = _read_stage(paths, 2)
    if done is not None:
        echo(f"stage 2: finished earlier ({len(done.trials)} trials), skipped")
        return done
    from ray import tune

    from search.trainable import make_trainable

    exp = paths.experiment(2)
    trainable = make_trainable(trial_fn, cfg, 2)
    if _restorable(exp):
        echo(f"stage 2: resuming {exp}")
        tuner = tune.Tuner.restore(exp, trainable=trainable, resume_unfinished=True)
    else:
        _fresh_start(exp, None)
        echo(
            f"stage 2: {len(entries)} trials ({cfg.stage2.epochs} epochs, attacks "
            f"{', '.join(cfg.attack.ensemble)})"
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"candidate": tune.grid_search(entries)},
            tune_config=tune.TuneConfig(
                num_samples=1,
                max_concurrent_trials=cfg.resources.max_concurrent,
                reuse_actors=True,
                trial_dirname_creator=trial_dirname,
            ),
            run_config=_run_config("stage2", cfg, paths, len(entries), echo),
        )
    results = tuner.fit()
    _check_complete(results, len(entries), 2, paths)
    tables = collect_stage(results, 2, epochs=cfg.stage2.epochs, trained_encoder=None)
    tables = StageTables(
        _save_checkpoints(results, tables.trials, paths), tables.history, tables.attacks
    )
    _write_stage(paths, 2, tables)
    return tables


def _fresh_start(exp: str, journal: Path | None) -> None:
    """Clear what an earlier start left before it saved a restorable state."""
    from search.storage import delete_tree

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

    from search.storage import SnapshotJournalBackend

    return JournalStorage(SnapshotJournalBackend(path))


def _check_complete(results: Any, expected: int, stage: int, paths: RunPaths) -> None:
    from search.results import trial_config

    finished = results.num_terminated + results.num_errors
    # A trial stopped by Ctrl-C before Ray saved its config has no candidate: not finished.
    unsaved = sum(1 for r in results if not trial_config(r))
    finished -= unsaved
    if len(results) < expected or finished < len(results):
        raise SearchInterrupted(
            f"stage {stage} stopped with {finished} of {expected} trials finished; run the same "
            f"command again to resume ({paths.location})"
        )


def _read_stage(paths: RunPaths, stage: int) -> StageTables | None:
    files = [paths.stage(stage, t) for t in ("trials", "history", "attacks")]
    if not all(f.exists() for f in files):
        return None
    return StageTables(*(read_parquet(f) for f in files))


def _write_stage(paths: RunPaths, stage: int, tables: StageTables) -> None:
    # trials last: its presence marks the stage as finished (see _read_stage).
    write_parquet(tables.history, paths.stage(stage, "history"))
    write_parquet(tables.attacks, paths.stage(stage, "attacks"))
    write_parquet(tables.trials, paths.stage(stage, "trials"))
    _drop_resume_checkpoints(paths.experiment(stage))


def _drop_resume_checkpoints(exp: str) -> None:
    """Delete the per-epoch trial checkpoints of a finished stage (local storage).

    They exist only to resume an interrupted stage; once the stage's tables are written the
    stage is never resumed again (stage-2 models were copied to ``checkpoints/`` first). They are
    most of a run's size: model and optimizer state of every trial, kept twice.
    """
    if "://" in exp or not os.path.isdir(exp):
        return
    for folder in Path(exp).glob("*/checkpoint_*"):
        shutil.rmtree(folder, ignore_errors=True)


def _save_checkpoints(results: Any, trials: pd.DataFrame, paths: RunPaths) -> pd.DataFrame:
    """Copy every completed stage-2 trial's last checkpoint to ``checkpoints/<trial_id>``."""
    out = trials.copy()
    by_ray_id = {Path(str(r.path)).name.split("_")[-1]: r for r in results}
    for i, row in out.iterrows():
        result = by_ray_id.get(str(row["ray_trial_id"]))
        if row["status"] != "completed" or result is None or result.checkpoint is None:
            continue
        target = paths.checkpoints / str(row["trial_id"])
        tmp = paths.checkpoints / f".{row['trial_id']}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        result.checkpoint.to_directory(str(tmp))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        out.loc[i, "checkpoint"] = str(target.relative_to(paths.root))
    return out


def _progress_callback(stage: str, total: int, echo: Echo) -> Any:
    from search.search_tune import ProgressCallback

    return ProgressCallback(stage, total, echo)


# --------------------------------------------------------------------------------------------
# Dry run


@dataclass(frozen=True)
class Plan:
    """What a search will do, computed without running anything (``--dry-run``)."""

    configurations: int
    continuous: bool
    subsets: int
    stage1_trials: int
    stage1_epochs_max: int
    stage1_epochs_expected: float
    stage2_trials_max: int
    estimated_trials: int
    exhaustive_configs: int
    exhaustive_units: float
    units_expected: float


def asha_expected_epochs(epochs: int, grace: int, factor: int, scheduler: str = "asha") -> float:
    """Expected epochs of one stage-1 trial: ASHA lets about ``1/factor`` of the trials past
    each rung (``grace · factor^k`` epochs) and the rest stop there."""
    if scheduler != "asha":
        return float(epochs)
    rungs = []
    r = grace
    while r < epochs:
        rungs.append(r)
        r *= factor
    expected, survive, prev = 0.0, 1.0, 0
    for rung in rungs:
        expected += survive * (rung - prev)
        survive /= factor
        prev = rung
    return expected + survive * (epochs - prev)


def plan_search(cfg: SearchConfig) -> Plan:
    """The search-space size, trial counts and compute estimate of ``cfg``."""
    cfg = resolve(cfg)
    space = Space.from_config(cfg)
    n1 = stage1_trial_count(cfg)
    s1 = cfg.stage1
    per_trial = asha_expected_epochs(s1.epochs, s1.grace_period, s1.reduction_factor, s1.scheduler)
    twins = cfg.stage2.top_k if cfg.stage2.uniform_twins and set(space.schemes) - {"uniform"} else 0
    n2 = min(cfg.stage2.top_k, space.size) + twins
    n2 += len(space.encoders) if cfg.stage2.baseline else 0
    configs, units = exhaustive_cost(space, cfg.stage2.epochs)
    s1_encoders = space.encoders if s1.encoder == "same" else (s1.encoder,)
    s1_cost = sum(encoder_cost(e) for e in s1_encoders) / len(s1_encoders)
    s2_cost = sum(encoder_cost(e) for e in space.encoders) / len(space.encoders)
    return Plan(
        configurations=space.size,
        continuous=space.continuous,
        subsets=len(space.subsets()),
        stage1_trials=n1,
        stage1_epochs_max=n1 * s1.epochs,
        stage1_epochs_expected=n1 * per_trial,
        stage2_trials_max=n2,
        estimated_trials=n1 + n2,
        exhaustive_configs=configs,
        exhaustive_units=units,
        units_expected=n1 * per_trial * s1_cost + n2 * cfg.stage2.epochs * s2_cost,
    )


def format_plan(cfg: SearchConfig, plan: Plan) -> str:
    """The dry-run text: space size, the stages, the estimated trial count and cost."""
    cfg = resolve(cfg)
    space = Space.from_config(cfg)
    s1, s2, a = cfg.stage1, cfg.stage2, cfg.attack
    eps = f"{a.eps * 255:.3g}/255" if a.norm == "linf" else f"{a.eps:g}"
    size = f"{plan.configurations} configurations" + (
        " (plus continuous searched weights)" if plan.continuous else ""
    )
    s1_enc = "each trial's own encoder" if s1.encoder == "same" else s1.encoder
    sched = (
        f"ASHA on {s1.metric} (grace {s1.grace_period}, reduction factor {s1.reduction_factor})"
        if s1.scheduler == "asha"
        else f"no pruning, ranked by {s1.metric}"
    )
    attacked = "the main task" if a.target == "main" else "all tasks"
    ratio = plan.units_expected / plan.exhaustive_units if plan.exhaustive_units else math.nan
    lines = [
        f"search {cfg.name!r}: main task {space.main!r}",
        f"search space: {len(space.subsets())} auxiliary subsets of {space.pool!r} "
        f"({space.min_aux}-{space.max_aux} tasks) x {len(space.schemes)} weighting scheme(s) "
        f"{list(space.schemes)} x {len(space.encoders)} encoder(s) {list(space.encoders)} "
        f"= {size}",
        f"objective: {cfg.search.objective} (minimise the main task's relative vulnerability"
        + (" and its clean error: Pareto front)" if cfg.search.objective == "pareto" else ")"),
        f"stage 1 (surrogate): {plan.stage1_trials} trials, {cfg.sampler} sampler, {s1_enc}, "
        f"{s1.epochs} epochs at most, {a.cheap}-{a.cheap_steps} on {attacked} after every "
        f"epoch, {sched}: <= {plan.stage1_epochs_max} trial-epochs, about "
        f"{plan.stage1_epochs_expected:.0f} expected",
        f"stage 2 (target): top {s2.top_k}"
        + (" + single-task baseline" if s2.baseline else "")
        + (" + uniform-weight twins" if s2.uniform_twins else "")
        + f": <= {plan.stage2_trials_max} trials, {s2.epochs} epochs, "
        f"{', '.join(a.ensemble)} ({a.steps} steps, eps {eps} {a.norm}, {a.aggregate} case) "
        f"on {a.images} validation images",
        f"estimated trials: {plan.estimated_trials} (about {plan.units_expected:.0f} "
        f"ResNet18-epoch units, {ratio:.0%} of an exhaustive search of "
        f"{plan.exhaustive_configs} configurations = {plan.exhaustive_units:.0f} units)",
        f"resources: {cfg.resources.cpus_per_trial:g} CPU and {cfg.resources.gpus_per_trial:g} "
        f"GPU per trial; data: {cfg.data.source}, {cfg.data.n} images of "
        f"{cfg.data.size} px",
    ]
    return "\n".join(lines)
