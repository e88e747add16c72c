"""The asynchronous stage 1's searcher: a Ray Tune ``Searcher`` (Ray's documented extension
point) over an Optuna study driven by ``ask``/``tell`` only.

It imports Ray and Optuna at module level so that it pickles by reference with the experiment;
what it pickles is plain data (the study and the sampler are rebuilt, never pickled).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from ray.tune.search import Searcher

from rts.search.engine.faults import FAILURE_KEY
from rts.search.engine.records import Outcome
from rts.search.engine.samplers import (
    REPEAT_OF,
    UNTRAINED,
    SamplerFactory,
    draw,
    open_study,
    outcome_of,
    tell_outcome,
)
from rts.search.engine.space import Space, candidate_key
from rts.search.engine.storage import journal_target, restore_journal

log = logging.getLogger(__name__)

SAVED_STATE = (
    "_slots",
    "_untrained",
    "_seen",
    "_running",
    "_outcome",
    "_waiting",
    "_steps",
    "_done",
)
"""The searcher's own bookkeeping, saved by :meth:`StudySearcher.save` (plain data)."""


class StudySearcher(Searcher):
    """Stage 1's searcher: Optuna proposes, Ray Tune runs, ASHA prunes; it tells Optuna how
    each trial really ended and never trains the same candidate twice.

    A trial whose last result reached ``final_epoch`` is ``COMPLETE`` with its last values; one
    stopped earlier by ASHA is ``PRUNED`` with its intermediate values (TPE then ranks it by its
    last one, below the complete trials); one that failed (an error, or a last result with
    :data:`~rts.search.engine.faults.FAILURE_KEY`) or ended on a non-finite value is ``FAIL``.

    Every trial uses the same seeds, so a repeated candidate would only repeat its result. A
    repeat is *answered*: its study trial is told the earlier trial's outcome (at once when that
    trial has finished, else when it finishes; meanwhile it stays running, which TPE's constant
    liar already accounts for) and marked with the user attribute :data:`REPEAT_OF`; the
    sampler is asked again (:func:`~rts.search.engine.samplers.draw`). Only when every redraw
    repeats too (the space is all but exhausted) is the slot of the ``budget`` answered instead
    of trained; the search ends once every slot is used (:data:`UNTRAINED` counts them).

    State: the study lives in ``storage`` (the run's Optuna journal, or any Optuna storage for a
    test); :meth:`save` writes the bookkeeping and the journal's content, :meth:`restore` puts
    the journal back (where :func:`~rts.search.engine.storage.journal_at` says, on the machine
    that resumes) and closes study trials the saved state does not know (asked after Ray's last
    snapshot). The sampler is rebuilt from ``sampler`` and a seed for every ask, so a restored
    searcher proposes exactly what the saved one would have.
    """

    def __init__(
        self,
        space: Space,
        *,
        sampler: SamplerFactory,
        metrics: Sequence[str],
        final_epoch: int,
        budget: int,
        storage: str | os.PathLike[str] | optuna.storages.BaseStorage,
        seed: int = 0,
        key: Callable[[Mapping[str, Any]], Hashable] = candidate_key,
    ) -> None:
        super().__init__(metric=metrics[0], mode="min")
        self._space = space
        self._sampler = sampler
        self._metrics = list(metrics)
        self._final_epoch = final_epoch
        self._budget = budget  # slots: stage-1 trials, trained or answered
        self._seed = seed
        self._key = key
        if isinstance(storage, optuna.storages.BaseStorage):
            self._journal: str | None = None
            self._storage: optuna.storages.BaseStorage | None = storage
        else:
            self._journal, self._storage = os.fspath(storage), None
        self._slots = 0
        self._untrained = 0
        self._seen: dict[Hashable, str] = {}  # candidate key -> the Ray trial that runs it
        self._running: dict[str, int] = {}  # Ray trial -> its study trial's number
        self._outcome: dict[str, Outcome] = {}  # finished Ray trial -> what the study was told
        self._waiting: dict[str, list[int]] = {}  # running Ray trial -> its repeats' numbers
        self._steps: dict[str, dict[int, float]] = {}  # Ray trial -> intermediate values
        self._done: set[str] = set()
        self._study: optuna.Study | None = None
        self._live: dict[int, optuna.Trial] = {}  # study trials asked by this process

    # -- Ray's Searcher interface ---------------------------------------------------------

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        """The searcher owns its space and metrics: accept what Tune passes, change nothing."""
        return True

    def suggest(self, trial_id: str) -> dict | str | None:
        """A candidate no earlier trial of this search has run, or ``FINISHED`` once every
        slot of the budget is used (see the class docstring)."""
        study = self.study
        while self._slots < self._budget:
            got = draw(
                study,
                self._sampler,
                seed=self._seed,
                space=self._space,
                key_of=self._key,
                is_known=self._seen.__contains__,
                on_repeat=self._answer,
            )
            self._slots += 1
            if got.repeat:  # the sampler only repeats: this slot trains nothing
                self._answer(got.trial, got.key)
                self._untrained += 1
                study.set_user_attr(UNTRAINED, self._untrained)
                continue
            self._seen[got.key] = trial_id
            self._running[trial_id] = got.trial.number
            self._live[got.trial.number] = got.trial
            return {**got.trial.params, **got.config}
        return Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Keep the trial's intermediate value (told with its outcome, for a pruned trial)."""
        if result.get(FAILURE_KEY) or trial_id not in self._running or len(self._metrics) > 1:
            return
        value, step = result.get(self._metrics[0]), result.get("training_iteration")
        if isinstance(value, int | float) and math.isfinite(value) and step is not None:
            self._steps.setdefault(trial_id, {})[int(step)] = float(value)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Tell the study COMPLETE, PRUNED or FAIL for this trial (see the class docstring),
        and the same to the repeats that wait for it."""
        if trial_id in self._done or trial_id not in self._running:
            return
        # The result that made ASHA stop a trial never reached on_trial_result.
        self.on_trial_result(trial_id, result or {})
        outcome = outcome_of(
            result,
            self._metrics,
            self._final_epoch,
            error=error,
            failed=bool((result or {}).get(FAILURE_KEY)),
            steps=self._steps.pop(trial_id, {}),
        )
        if outcome.state != "PRUNED":
            outcome = Outcome(outcome.state, outcome.values, {})
        self._outcome[trial_id] = outcome
        self._tell(self._running[trial_id], outcome)
        for number in self._waiting.pop(trial_id, []):
            self._tell(number, outcome)
        self._done.add(trial_id)

    def save(self, checkpoint_path: str) -> None:
        """Write the bookkeeping and the journal's content (a resume elsewhere needs both)."""
        state = {name: getattr(self, name) for name in SAVED_STATE}
        state["journal"] = (
            Path(self._journal).read_bytes()
            if self._journal and Path(self._journal).exists()
            else b""
        )
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(state, fh)

    def restore(self, checkpoint_path: str) -> None:
        """Read what :meth:`save` wrote, put the journal back, and close the study trials that
        were asked after the save (they would stay RUNNING forever)."""
        with open(checkpoint_path, "rb") as fh:
            state = pickle.load(fh)
        journal = state.pop("journal")
        for name in SAVED_STATE:
            setattr(self, name, state[name])
        if self._journal is not None:
            self._journal = journal_target(self._journal)
            restore_journal(self._journal, journal)
        self._study, self._live = None, {}
        study = self.study
        study.set_user_attr(UNTRAINED, self._untrained)  # the saved count
        known = set(self._running.values()) | {n for w in self._waiting.values() for n in w}
        for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if frozen.number not in known:
                study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)

    # -- pickling: plain data only ---------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_study=None, _live={}, _storage=None)
        return state

    # -- helpers -------------------------------------------------------------------------

    @property
    def study(self) -> optuna.Study:
        """The stage-1 study, opened (or created) in the searcher's storage on first use."""
        if self._study is None:
            storage = self._storage if self._storage is not None else self._journal
            if storage is None:
                raise RuntimeError("the searcher's in-memory study did not survive pickling")
            self._study = open_study(storage, len(self._metrics))
        return self._study

    def _answer(self, trial: optuna.Trial, key: Hashable) -> None:
        """Close ``trial`` with the outcome of the Ray trial that ran ``key`` (now or when it
        finishes)."""
        earlier = self._seen[key]
        trial.set_user_attr(REPEAT_OF, earlier)
        self._live[trial.number] = trial
        if earlier in self._outcome:
            self._tell(trial.number, self._outcome[earlier])
        else:
            self._waiting.setdefault(earlier, []).append(trial.number)

    def _tell(self, number: int, outcome: Outcome) -> None:
        trial = self._live.pop(number, None)
        try:
            tell_outcome(self.study, trial if trial is not None else number, outcome)
        except Exception as exc:  # never let bookkeeping kill the search
            log.warning("optuna could not record trial %s: %s", number, exc)
