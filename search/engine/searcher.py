"""Objects Ray Tune pickles with an experiment: the searcher and the grid sampler (the progress
callback is in :mod:`rts.search.engine.progress`).

They live in their own module (importing optuna and ray at module level) so that they pickle by
reference and a restored experiment finds them again.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from rts.search.engine.faults import FAILURE_KEY
from rts.search.engine.progress import ProgressCallback as _ProgressCallback
from rts.search.engine.records import Outcome
from rts.search.engine.space import sampler_seed

log = logging.getLogger(__name__)

MAX_REDRAWS = 20
"""How often the searcher asks the sampler again when it proposes a configuration already run."""

REPEAT_OF = "repeat_of"
"""User attribute of a study trial answered from an earlier trial's outcome instead of trained
(the earlier trial's id)."""

UNTRAINED = "untrained_slots"
"""Study user attribute (asynchronous stage 1): slots of the budget answered, not trained."""


class ExhaustiveGridSampler(optuna.samplers.GridSampler):
    """A ``GridSampler`` that does not call ``study.stop()`` once the grid is exhausted.

    Optuna's grid sampler stops the study from ``after_trial``, which raises outside
    ``study.optimize`` (Ray Tune drives the study by ask and tell); the number of trials already
    equals the size of the grid, so there is nothing to stop.
    """

    def after_trial(self, study, trial, state, values) -> None:
        return None


def objective_values(result: Mapping[str, Any], metrics: Sequence[str]) -> list[float] | None:
    """The values of ``metrics`` in ``result`` as floats, or ``None`` if one is missing."""
    values = []
    for m in metrics:
        v = result.get(m)
        if v is None:
            return None
        values.append(float(v))
    return values


def tell_outcome(study: optuna.Study, trial: optuna.Trial, result: Outcome) -> None:
    """Tell ``study`` the outcome of ``trial`` (intermediate values first, single objective)."""
    state = optuna.trial.TrialState[result.state]
    if state == optuna.trial.TrialState.PRUNED and len(study.directions) == 1:
        for step, value in sorted(result.steps.items()):
            trial.report(value, step)
    values = result.values if state == optuna.trial.TrialState.COMPLETE else None
    study.tell(trial, values, state=state)


class StagedOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells Optuna how each trial really ended, and never trains the
    same candidate twice.

    A trial whose last result reached ``final_epoch`` is ``COMPLETE`` with its last values; one
    stopped earlier by ASHA is ``PRUNED`` (TPE then ranks it by its last intermediate value,
    below the complete trials); one that failed (an error, or a last result with
    :data:`~rts.search.engine.faults.FAILURE_KEY`) or returned a non-finite value is ``FAIL``.
    Ray's own ``OptunaSearch`` reports a pruned trial as complete with its early-epoch value and
    an errored one with its last value, which would teach the sampler wrong things.

    Every trial uses the same seeds, so a repeated candidate would only repeat its result. A
    repeat is *answered*: its study trial is told the earlier trial's outcome (at once when that
    trial has finished, else when it finishes; meanwhile it stays running, which TPE's constant
    liar already accounts for) and marked with the user attribute :data:`REPEAT_OF`. The sampler
    is asked again, up to :data:`MAX_REDRAWS` times; a model-based sampler that has settled on
    a few candidates can keep repeating them while untried ones remain, so then a uniform
    random sampler (seeded from ``redraw_seed`` and the study's trial count: reproducible) is
    asked up to :data:`MAX_REDRAWS` times more. Only when that repeats too (the space is all
    but exhausted) is the slot of the ``budget`` answered instead of trained; the search ends
    once every slot is used (:data:`UNTRAINED` counts the slots answered).
    """

    def __init__(
        self,
        *args: Any,
        final_epoch: int,
        key: Callable[[dict], Any],
        budget: int,
        redraw_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        self._final_epoch = final_epoch
        self._redraw_seed = redraw_seed
        self._key = key
        self._budget = budget  # slots: stage-1 trials, trained or answered
        self._slots = 0
        self._untrained = 0
        self._seen: dict[Any, str] = {}  # candidate key -> the trial that runs it
        self._outcome: dict[str, Outcome] = {}  # finished trial -> what the study was told
        self._waiting: dict[str, list[optuna.Trial]] = {}  # running trial -> its repeats
        super().__init__(*args, **kwargs)

    def suggest(self, trial_id: str) -> dict | str | None:
        """A candidate no earlier trial of this search has run, or ``FINISHED`` once every
        slot of the budget is used (see the class docstring)."""
        while self._slots < self._budget:
            config = self._propose(trial_id)
            if config is None:
                return None
            self._slots += 1
            key = self._key(config)
            if key not in self._seen:
                self._seen[key] = trial_id
                return config
            self._answer(trial_id, key)  # the sampler only repeats: this slot trains nothing
            self._untrained += 1
            self._ot_study.set_user_attr(UNTRAINED, self._untrained)
        return Searcher.FINISHED

    def _propose(self, trial_id: str) -> dict | None:
        """The sampler's proposal; repeats are answered and redrawn, MAX_REDRAWS times by the
        sampler, then MAX_REDRAWS times at random (see the class docstring)."""
        config = super().suggest(trial_id)
        for attempt in range(2 * MAX_REDRAWS):
            if config is None or self._key(config) not in self._seen:
                break
            self._answer(trial_id, self._key(config))
            if attempt < MAX_REDRAWS:
                config = super().suggest(trial_id)
            else:
                config = self._suggest_at_random(trial_id)
        return config

    def _suggest_at_random(self, trial_id: str) -> dict | None:
        """A proposal of a uniform random sampler, the study's own sampler set aside for it."""
        study = self._ot_study
        number = len(study.get_trials(deepcopy=False))
        own = study.sampler
        study.sampler = optuna.samplers.RandomSampler(seed=sampler_seed(self._redraw_seed, number))
        try:
            return super().suggest(trial_id)
        finally:
            study.sampler = own

    def _answer(self, trial_id: str, key: Any) -> None:
        """Close ``trial_id``'s study trial with the outcome of the trial that ran ``key``."""
        ot_trial = self._ot_trials.pop(trial_id)
        earlier = self._seen[key]
        ot_trial.set_user_attr(REPEAT_OF, earlier)
        if earlier in self._outcome:
            self._tell(ot_trial, self._outcome[earlier])
        else:
            self._waiting.setdefault(earlier, []).append(ot_trial)

    def _tell(self, ot_trial: optuna.Trial, outcome: Outcome) -> None:
        try:
            tell_outcome(self._ot_study, ot_trial, outcome)
        except Exception as exc:  # never let bookkeeping kill the search
            log.warning("optuna could not record trial %s: %s", ot_trial.number, exc)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Report an intermediate value, unless the study has already closed the trial.

        After a hard kill the Optuna journal can be newer than Ray's last snapshot: a trial the
        journal saw finish is resumed by Ray and reports again. That must not kill the search.
        The last result of a trial that failed (:data:`FAILURE_KEY`) is no intermediate value.
        """
        if result.get(FAILURE_KEY):
            return
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError as exc:
            log.info("trial %s resumed after the study closed it: %s", trial_id, exc)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Tell the study COMPLETE, PRUNED or FAIL for this trial (see the class docstring),
        and the same to the repeats that wait for it."""
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        result = result or {}
        values = objective_values(result, metrics)
        state = optuna.trial.TrialState.COMPLETE
        if error or result.get(FAILURE_KEY):
            state, values = optuna.trial.TrialState.FAIL, None
        elif values is None or int(result.get("epoch", 0)) < self._final_epoch:
            state = optuna.trial.TrialState.PRUNED
            if values is not None and len(values) == 1 and math.isfinite(values[0]):
                # The result that made ASHA stop the trial never reached on_trial_result.
                with contextlib.suppress(Exception):
                    ot_trial.report(values[0], int(result.get("training_iteration", 0)))
            values = None
        elif not all(math.isfinite(v) for v in values):
            state, values = optuna.trial.TrialState.FAIL, None
        steps = self._steps(ot_trial) if state == optuna.trial.TrialState.PRUNED else {}
        self._outcome[trial_id] = Outcome(state.name, values, steps)
        self._tell(ot_trial, Outcome(state.name, values))
        for repeat in self._waiting.pop(trial_id, []):
            self._tell(repeat, self._outcome[trial_id])
        self._completed_trials.add(trial_id)

    def _steps(self, ot_trial: optuna.Trial) -> dict[int, float]:
        """The intermediate values the study holds for ``ot_trial`` (to tell its repeats)."""
        frozen = self._ot_study.get_trials(deepcopy=False)
        match = [t for t in frozen if t.number == ot_trial.number]
        return dict(match[0].intermediate_values) if match else {}

    def restore(self, checkpoint_path: str) -> None:
        """Restore Ray's snapshot, then close study trials the snapshot does not know.

        After a hard kill, trials asked after Ray's last snapshot exist in the Optuna storage but
        not in the restored searcher; they would stay RUNNING forever.
        """
        super().restore(checkpoint_path)
        known = {t.number for t in self._ot_trials.values()}
        known |= {t.number for waiting in self._waiting.values() for t in waiting}
        self._ot_study.set_user_attr(UNTRAINED, self._untrained)  # the snapshot's count
        running = self._ot_study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
        )
        for frozen in running:
            if frozen.number not in known:
                self._ot_study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)


ProgressCallback = _ProgressCallback
"""Moved to :mod:`rts.search.engine.progress`; the name stays so that experiments pickled by an
earlier version (``tuner.pkl``) still unpickle on resume (their callbacks are then replaced)."""
