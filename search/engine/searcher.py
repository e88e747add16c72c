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
from ray.tune.search.optuna import OptunaSearch

from rts.search.engine.faults import FAILURE_KEY
from rts.search.engine.progress import ProgressCallback as _ProgressCallback

log = logging.getLogger(__name__)

MAX_REDRAWS = 20
"""How often the searcher asks the sampler again when it proposes a configuration already run."""


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


class StagedOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells Optuna how each trial really ended.

    A trial whose last result reached ``final_epoch`` is ``COMPLETE`` with its last values; one
    stopped earlier by ASHA is ``PRUNED`` (TPE then ranks it by its last intermediate value,
    below the complete trials); one that failed (an error, or a last result with
    :data:`~rts.search.engine.faults.FAILURE_KEY`) or returned a non-finite value is ``FAIL``.
    Ray's own ``OptunaSearch`` reports a pruned trial as complete with its early-epoch value and
    an errored one with its last value, which would teach the sampler wrong things.
    """

    def __init__(
        self, *args: Any, final_epoch: int, key: Callable[[dict], Any], **kwargs: Any
    ) -> None:
        self._final_epoch = final_epoch
        self._key = key
        self._seen: dict[Any, str] = {}  # candidate key -> the trial that runs it
        self._outcome: dict[str, tuple[Any, list[float] | None]] = {}  # trial -> (state, values)
        super().__init__(*args, **kwargs)

    def suggest(self, trial_id: str) -> dict | None:
        """A configuration no earlier trial of this search has run, when the sampler finds one.

        Every trial uses the same seeds, so a repeated configuration would only repeat its
        result. A repeat is closed in the study with the earlier trial's outcome (what running
        it would have told the sampler) and the sampler is asked again, up to
        :data:`MAX_REDRAWS` times; after that (a space smaller than the budget) it runs.
        """
        config = super().suggest(trial_id)
        for _ in range(MAX_REDRAWS):
            if config is None:
                return None
            key = self._key(config)
            earlier = self._seen.get(key)
            if earlier is None:
                break
            state, values = self._outcome.get(earlier, (optuna.trial.TrialState.FAIL, None))
            with contextlib.suppress(Exception):
                self._ot_study.tell(self._ot_trials.pop(trial_id), values, state=state)
            config = super().suggest(trial_id)
        if config is not None:
            self._seen.setdefault(self._key(config), trial_id)
        return config

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
        """Tell the study COMPLETE, PRUNED or FAIL for this trial (see the class docstring)."""
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        result = result or {}
        values = objective_values(result, metrics)
        state = optuna.trial.TrialState.COMPLETE
        try:
            if error or result.get(FAILURE_KEY):
                state, values = optuna.trial.TrialState.FAIL, None
            elif values is None or int(result.get("epoch", 0)) < self._final_epoch:
                state = optuna.trial.TrialState.PRUNED
                if values is not None and len(values) == 1 and math.isfinite(values[0]):
                    # The result that made ASHA stop the trial never reached on_trial_result.
                    ot_trial.report(values[0], int(result.get("training_iteration", 0)))
                values = None
            elif not all(math.isfinite(v) for v in values):
                state, values = optuna.trial.TrialState.FAIL, None
            self._ot_study.tell(ot_trial, values, state=state)
        except Exception as exc:  # never let bookkeeping kill the search
            log.warning("optuna could not record trial %s: %s", trial_id, exc)
        self._outcome[trial_id] = (state, values)
        self._completed_trials.add(trial_id)

    def restore(self, checkpoint_path: str) -> None:
        """Restore Ray's snapshot, then close study trials the snapshot does not know.

        After a hard kill, trials asked after Ray's last snapshot exist in the Optuna storage but
        not in the restored searcher; they would stay RUNNING forever.
        """
        super().restore(checkpoint_path)
        known = {t.number for t in self._ot_trials.values()}
        running = self._ot_study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
        )
        for frozen in running:
            if frozen.number not in known:
                self._ot_study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)


ProgressCallback = _ProgressCallback
"""Moved to :mod:`rts.search.engine.progress`; the name stays so that experiments pickled by an
earlier version (``tuner.pkl``) still unpickle on resume (their callbacks are then replaced)."""
