"""The stages, the engine's top: :func:`run_stage1` (a fixed design, the deterministic batches,
or the asynchronous searcher with ASHA) and :func:`run_stage2` (the finalists in full).

Each returns Ray's results once every trial finished; :mod:`rts.search.results` turns them into
tables.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rts.search.config.schema import (
    ConfigError,
    SearchConfig,
    reuses_stage1,
    stage_resources,
    trains_in_full,
)
from rts.search.engine.experiment import (
    check_complete,
    fresh_start,
    restorable,
    restore_tuner,
    run_config,
    run_fixed,
)
from rts.search.engine.paths import RunPaths, trial_dirname
from rts.search.engine.plan import stage1_trial_count
from rts.search.engine.session import Echo
from rts.search.engine.space import Space
from rts.search.engine.storage import journal_at
from rts.search.engine.trainable import make_trainable
from rts.search.engine.trial import TrialFn

log = logging.getLogger(__name__)


def run_stage1(
    cfg: SearchConfig,
    paths: RunPaths,
    trial_fn: TrialFn,
    echo: Echo,
    callbacks: Sequence[Any] = (),
) -> Any:
    """Run or resume stage 1 on Ray; returns its results once every trial finished.

    Asynchronous mode: the study searcher (:mod:`.searcher`) and ASHA, one experiment; returns Ray's
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
        from rts.search.engine.batches import run_batched_stage1  # optuna: out of light imports

        return run_batched_stage1(cfg, paths, trial_fn, echo, callbacks)
    with journal_at(paths.journal):  # a restored searcher's study goes to this run's journal
        return _stage1(cfg, paths, trial_fn, echo, callbacks)


def _design_stage1(
    cfg: SearchConfig, paths: RunPaths, trial_fn: TrialFn, echo: Echo, callbacks: Sequence[Any]
) -> Any:
    """Stage 1 as a fixed design (``stage1.design``): every design candidate trained for the
    stage's epochs, no sampler and no pruning (deterministic whatever the mode)."""
    design = Space.from_config(cfg).design(cfg.stage1.design)
    entries = [{**c.to_config(), "role": "design"} for c in design]
    how = f"{cfg.stage1.epochs} epochs each, no pruning"
    if trains_in_full(cfg):
        how = f"{cfg.stage1.epochs} epochs each, trained in full with stage 2's recipe" + (
            "; stage 2 reuses them" if reuses_stage1(cfg) else ""
        )
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
            f"stage 1: {cfg.stage1.design} design, {len(entries)} trials ({how}; stage 2 "
            f"takes the {cfg.stage1.model} model's predictions)"
        ),
        callbacks=callbacks,
    )


def _stage1(
    cfg: SearchConfig, paths: RunPaths, trial_fn: TrialFn, echo: Echo, callbacks: Sequence[Any]
) -> Any:
    """Stage 1 on Ray: restore the interrupted experiment, or start it."""
    from ray import tune  # Ray and Optuna stay out of light imports
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from rts.search.engine.samplers import SamplerRecipe
    from rts.search.engine.searcher import StudySearcher

    exp = paths.experiment(1)
    total = stage1_trial_count(cfg)
    trainable = make_trainable(trial_fn, cfg, 1)
    config = run_config(cfg, paths, 1, "stage1", paths.ray, total, echo, callbacks)
    if restorable(exp):
        check_searcher_version(exp)
        echo(f"stage 1: resuming {exp}")
        tuner = restore_tuner(exp, trainable, config)
    else:
        fresh_start(exp, paths.journal)
        space = Space.from_config(cfg)
        s1 = cfg.stage1
        metrics = (s1.metric, "clean_error") if cfg.search.objective == "pareto" else (s1.metric,)
        searcher = StudySearcher(
            space,
            # the grid's order is drawn once from the search seed (as one grid sampler would)
            sampler=SamplerRecipe(
                cfg.sampler,
                space,
                total,
                fixed_seed=cfg.search.seed if cfg.sampler == "grid" else None,
            ),
            metrics=metrics,
            final_epoch=cfg.stage1.epochs,
            budget=total,
            storage=paths.journal,
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
            run_config=config,
        )
    results = tuner.fit()
    check_complete(results, total - untrained_slots(paths.journal), 1, paths)
    return results


OLD_SEARCHER = b"StagedOptunaSearch"
"""The class name of the searcher of rts 0.1.0 and before (a subclass of Ray's OptunaSearch),
as it appears in an experiment's ``tuner.pkl``."""


def check_searcher_version(exp: str) -> None:
    """Refuse, in one line, to resume a stage 1 started by the earlier searcher.

    Its pickled state held Ray's ``OptunaSearch`` internals, which this version does not read.

    Raises:
        ConfigError: ``exp`` was started by the earlier searcher.
    """
    from rts.search.engine.storage import filesystem, is_uri

    path = f"{exp}/tuner.pkl"
    try:
        if is_uri(exp):
            fs, where = filesystem(path)
            with fs.open_input_stream(where) as fh:
                data = fh.read()
        else:
            data = Path(path).read_bytes()
    except (OSError, ValueError):  # no such file: nothing to check
        return
    if OLD_SEARCHER in data:
        run = exp.rsplit("/ray/", 1)[0]
        raise ConfigError(
            f"{exp}: stage 1 was started by an earlier rts whose searcher this version cannot "
            f"restore; finish it with that version, or delete {exp} and {run}/optuna.journal "
            "to run stage 1 again"
        )


def untrained_slots(journal: Path) -> int:
    """Asynchronous stage 1: slots of the budget answered from earlier trials, not trained
    (:data:`rts.search.engine.samplers.UNTRAINED`)."""
    from rts.search.engine.samplers import UNTRAINED  # optuna: kept out of light imports

    study = _load_study(journal)
    return int(study.user_attrs.get(UNTRAINED, 0)) if study is not None else 0


def answered_repeats(journal: Path) -> int:
    """Stage-1 study trials answered from an earlier trial's outcome instead of trained (both
    modes; :data:`rts.search.engine.samplers.REPEAT_OF`)."""
    from rts.search.engine.samplers import REPEAT_OF  # optuna: kept out of light imports

    study = _load_study(journal)
    if study is None:
        return 0
    return sum(REPEAT_OF in t.user_attrs for t in study.get_trials(deepcopy=False))


def _load_study(journal: Path) -> Any:
    """The stage-1 study in ``journal``, or ``None`` when there is none."""
    import optuna

    from rts.search.engine.samplers import STUDY, journal_storage

    if not journal.is_file():
        return None
    try:
        return optuna.load_study(study_name=STUDY, storage=journal_storage(journal))
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
