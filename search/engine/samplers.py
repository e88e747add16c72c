"""Stage 1's proposals on Optuna's public API: the samplers, the study in the run's journal, and
the one routine that asks for a new candidate (:func:`draw`), shared by the asynchronous searcher
(:mod:`.searcher`) and the deterministic batches (:mod:`.batches`).

Every ask rebuilds the sampler from a seed drawn from ``(search seed, trial number)``
(:func:`sampler_seed`), so a proposal is a function of the study's content alone: nothing about
a sampler has to be saved, pickled or restored (NSGA-II holds a thread lock since Optuna 5.1, and
cannot be pickled at all).
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from rts.search.engine.records import Outcome
from rts.search.engine.space import Space

STUDY = "stage1"
"""The stage-1 study's name in the run's journal (both modes)."""

MAX_REDRAWS = 20
"""How often a sampler that proposed a candidate already run is asked again, and then how often
a uniform random sampler is asked, before a repeat is accepted (:func:`draw`)."""

REPEAT_OF = "repeat_of"
"""User attribute of a study trial answered from an earlier trial's outcome instead of trained
(the earlier trial's id)."""

UNTRAINED = "untrained_slots"
"""Study user attribute (asynchronous stage 1): slots of the budget answered, not trained."""

SamplerFactory = Callable[[int], optuna.samplers.BaseSampler]
"""A sampler for a seed (the seed of one ask, :func:`sampler_seed`)."""


class ExhaustiveGridSampler(optuna.samplers.GridSampler):
    """A ``GridSampler`` that does not call ``study.stop()`` once the grid is exhausted.

    Optuna's grid sampler stops the study from ``after_trial``, which raises outside
    ``study.optimize`` (the search drives the study by ask and tell); the number of trials
    already equals the size of the grid, so there is nothing to stop.
    """

    def after_trial(self, study, trial, state, values) -> None:
        return None


def sampler_seed(seed: int, number: int) -> int:
    """The sampler's seed for the ask that creates study trial ``number`` (any ``seed``)."""
    digest = hashlib.sha256(f"rts-sampler:{seed}:{number}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def make_sampler(
    name: str, space: Space, *, seed: int, n_trials: int
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler ``name`` (``tpe``, ``random``, ``nsga2``, ``grid``, ``gp``), seeded.

    TPE starts with random trials scaled to the budget (a third of it, 3 to 10), models the
    parameters jointly (``multivariate``, ``group`` for the conditional ones) and uses
    ``constant_liar`` so concurrent trials are not all proposed at the same point. NSGA-II's
    population is a quarter of the budget (4 to 50), so a small budget still evolves for a few
    generations. ``grid`` enumerates :meth:`Space.grid_space` in a seeded random order. ``gp``
    is Optuna's Gaussian-process sampler (the same random start as TPE), for small budgets over
    the per-task encoding's yes/no parameters.
    """
    startup = max(3, min(10, n_trials // 3))
    with warnings.catch_warnings():  # multivariate/group/constant_liar/GP are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=startup,
                multivariate=True,
                group=True,
                constant_liar=True,
            )
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(
                seed=seed, population_size=max(4, min(50, n_trials // 4))
            )
        if name == "grid":
            return ExhaustiveGridSampler(space.grid_space(), seed=seed)
    raise ValueError(f"unknown sampler {name!r}; choose from tpe, random, nsga2, grid, gp")


@dataclass(frozen=True)
class SamplerRecipe:
    """How to build the configured sampler for one ask: a plain, picklable description.

    ``fixed_seed``: build every sampler with this seed instead of the ask's. Optuna's grid
    sampler needs it: it gives trial ``n`` the ``n``-th point of a permutation drawn from its
    seed, so a new seed at every ask would land on points already running.
    """

    name: str
    space: Space
    n_trials: int
    fixed_seed: int | None = None

    def __call__(self, seed: int) -> optuna.samplers.BaseSampler:
        if self.fixed_seed is not None:
            seed = self.fixed_seed
        return make_sampler(self.name, self.space, seed=seed, n_trials=self.n_trials)


def journal_storage(path: str | os.PathLike[str]) -> JournalStorage:
    """Optuna's journal-file storage at ``path`` (file-locked, safe on NFS)."""
    path = os.fspath(path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


def open_study(
    storage: str | os.PathLike[str] | optuna.storages.BaseStorage, n_objectives: int
) -> optuna.Study:
    """The stage-1 study (:data:`STUDY`, minimising ``n_objectives`` values) in ``storage`` (a
    journal file's path, or any Optuna storage), created if it is not there."""
    if not isinstance(storage, optuna.storages.BaseStorage):
        storage = journal_storage(storage)
    return optuna.create_study(
        study_name=STUDY,
        storage=storage,
        directions=["minimize"] * n_objectives,
        load_if_exists=True,
    )


def objective_values(result: Mapping[str, Any], metrics: Sequence[str]) -> list[float] | None:
    """The values of ``metrics`` in ``result`` as floats, or ``None`` if one is missing."""
    values = []
    for m in metrics:
        v = result.get(m)
        if v is None:
            return None
        values.append(float(v))
    return values


def tell_outcome(study: optuna.Study, trial: optuna.Trial | int, result: Outcome) -> None:
    """Tell ``study`` the outcome of ``trial`` (a live trial, or a trial number).

    A pruned single-objective trial's intermediate values are reported first (TPE ranks pruned
    trials by their last one); a trial given by number cannot take them (Optuna reports only
    through a live ``Trial``), so it is told its state alone. A trial the study has already
    closed keeps its record (after a hard kill the journal can be newer than the searcher).
    """
    state = optuna.trial.TrialState[result.state]
    if (
        isinstance(trial, optuna.Trial)
        and state == optuna.trial.TrialState.PRUNED
        and len(study.directions) == 1
    ):
        try:
            for step, value in sorted(result.steps.items()):
                trial.report(value, step)
        except optuna.exceptions.UpdateFinishedTrialError:
            return
    values = result.values if state == optuna.trial.TrialState.COMPLETE else None
    study.tell(trial, values, state=state, skip_if_finished=True)


def outcome_of(
    result: Mapping[str, Any] | None,
    metrics: Sequence[str],
    final_epoch: int,
    *,
    error: bool = False,
    failed: bool = False,
    steps: Mapping[int, float] | None = None,
) -> Outcome:
    """What a trial's last result says to Optuna: COMPLETE at ``final_epoch`` with its values,
    PRUNED before it (with ``steps``, its intermediate values), FAIL when it errored, failed
    (``failed``) or ended on a value that is not finite."""
    result = result or {}
    steps = dict(steps or {})
    if error or failed:
        return Outcome("FAIL", None, steps)
    values = objective_values(result, metrics)
    if values is None or int(result.get("epoch", -1)) < final_epoch:
        return Outcome("PRUNED", None, steps)
    if not all(math.isfinite(v) for v in values):
        return Outcome("FAIL", None, steps)
    return Outcome("COMPLETE", values, steps)


@dataclass(frozen=True)
class Draw:
    """One answer of :func:`draw`: the study trial, the candidate's config and key, and
    whether it repeats a candidate already run (only after every redraw also repeated)."""

    trial: optuna.Trial
    config: dict[str, Any]
    key: Hashable
    repeat: bool


def draw(
    study: optuna.Study,
    sampler: SamplerFactory,
    *,
    seed: int,
    space: Space,
    key_of: Callable[[Mapping[str, Any]], Hashable],
    is_known: Callable[[Hashable], bool],
    on_repeat: Callable[[optuna.Trial, Hashable], None],
) -> Draw:
    """Ask ``study`` for a candidate that is not known yet.

    Each ask rebuilds the sampler with :func:`sampler_seed` ``(seed, trial number)``. A proposal
    of a known candidate is handed to ``on_repeat`` (which answers its study trial) and drawn
    again: :data:`MAX_REDRAWS` more times by ``sampler``, then :data:`MAX_REDRAWS` times by a
    uniform random sampler (a model-based sampler can settle on a few candidates while untried
    ones remain). The last proposal is returned even when it repeats (``repeat=True``): the
    caller decides (the asynchronous searcher answers the slot, a batch runs it).
    """
    last = 2 * MAX_REDRAWS
    for attempt in range(last + 1):
        number = len(study.get_trials(deepcopy=False))
        s = sampler_seed(seed, number)
        at_random = attempt > MAX_REDRAWS
        study.sampler = optuna.samplers.RandomSampler(seed=s) if at_random else sampler(s)
        trial = study.ask()
        config = space.define(trial)
        key = key_of(config)
        known = is_known(key)
        if not known or attempt == last:
            return Draw(trial, config, key, known)
        on_repeat(trial, key)
    raise AssertionError("unreachable")  # pragma: no cover
