"""Live progress of a running stage: a Ray Tune callback that prints what the trials are doing.

On a terminal it redraws a status block (at most every :attr:`ProgressCallback.interval` seconds):
counts of running / done / pruned / failed trials, each running trial's last epoch and metric,
the elapsed time and an estimate of the rest. Elsewhere (a log file, a pipe, CI) it prints one
plain line per epoch report with the same fields. Either way one line per finished trial.

The estimate is the stage's planned compute (:mod:`rts.search.engine.plan`'s cost model, in
ResNet18-epoch units) minus the units the trials have reached, divided by the rate at which this
driver saw units finish. The class lives in a module that imports Ray at module level, so that
it pickles by reference with the experiment.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ray import tune

from rts.search.engine.faults import FAILURE_KEY
from rts.search.engine.paths import read_retries, stage_trial_id, trial_number
from rts.tasks.io import atomic_write_text

RUNNING, DONE, PRUNED, FAILED = "running", "done", "pruned", "failed"
COUNTED = (RUNNING, DONE, PRUNED, FAILED)

UP_AND_CLEAR = "\x1b[{n}F\x1b[J"
"""ANSI: cursor up ``n`` lines to column 1, then clear to the end of the screen."""


def clock(seconds: float | None) -> str:
    """``"45s"``, ``"3m05s"``, ``"2h07m"``; ``"?"`` for an unknown time."""
    if seconds is None:
        return "?"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def candidate_label(entry: Mapping[str, Any]) -> str:
    """``d+sk`` (main + auxiliaries) or ``d alone``."""
    aux = entry.get("aux")
    main = entry.get("main", "?")
    return f"{main}+{aux}" if aux else f"{main} alone"


def metric_text(result: Mapping[str, Any], metric: str) -> str:
    """``vuln 0.812``: ``metric`` when reported, else the clean error; ``-`` for neither.

    A NaN counts as not reported: a trial trained in full with stage 2's recipe reports its
    attack only after its last epoch, and NaN before it (``stage2.reuse``).
    """
    for key in (metric, "clean_error"):
        value = result.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            return f"{key} {value:.4g}"
    return "-"


class ProgressCallback(tune.Callback):
    """Status of one Ray Tune experiment (a stage, or a rung of a deterministic batch).

    Args:
        label: names the experiment in every line (``stage1``).
        stage: 1 or 2 (trial ids ``s<stage>-<n>``).
        total: trials the experiment will run.
        echo: prints one line (or, on a terminal, a block of lines).
        final_epoch: epoch at which a trial is done; one ending before it was pruned.
        metric: the metric shown per trial (``vuln``; the clean error until it is reported).
        planned_units: the experiment's expected compute in ResNet18-epoch units.
        costs: epoch cost of each encoder a trial may train (one entry: every trial's).
        tty: redraw a block (``True``) or print a line per epoch (``False``); ``None`` = whether
            stdout is a terminal when the experiment starts.
        interval: seconds between two redraws of the block.
        first: Ray's counter of the experiment's first trial (:func:`paths.trial_number`).
        retries_file: where retries are counted (:attr:`~.paths.RunPaths.retries`); ``None``:
            not written.
        max_retries: Ray's retries per trial (``resources.max_retries``), for the messages.
    """

    def __init__(
        self,
        label: str,
        stage: int,
        total: int,
        echo: Callable[[str], None],
        *,
        final_epoch: int,
        metric: str = "vuln",
        planned_units: float = 0.0,
        costs: Mapping[str, float] | None = None,
        tty: bool | None = None,
        interval: float = 2.0,
        first: int = 1,
        retries_file: str | None = None,
        max_retries: int = 0,
    ) -> None:
        self.label = label
        self.stage = stage
        self.total = total
        self.echo = echo
        self.final_epoch = final_epoch
        self.metric = metric
        self.planned_units = planned_units
        self.costs = dict(costs or {})
        self.tty = tty
        self.interval = interval
        self.first = first
        self.retries_file = retries_file
        self.max_retries = max_retries
        self._reset()

    def _reset(self) -> None:
        self._start = time.monotonic()
        self._drawn = 0  # lines of the block on screen
        self._last_draw = 0.0
        self._reached: dict[str, float] = {}  # Ray trial id -> units of its epochs reached
        self._session_units = 0.0  # units reported while this driver watched
        self._retried = 0  # retries seen by this driver in this experiment

    def setup(self, **info: Any) -> None:
        """Start the clock; decide between a redrawn block and plain lines."""
        self._reset()
        if self.tty is None:
            self.tty = sys.stdout.isatty()

    # -- what the trials are doing ----------------------------------------------------------

    def trial_id(self, trial: Any) -> str:
        """The results' id of ``trial`` (``s1-0003``), or Ray's id if it has no number yet."""
        number = trial_number(trial, self.first)
        return stage_trial_id(self.stage, number) if number else str(trial.trial_id)

    def _cost(self, trial: Any) -> float:
        if not self.costs:
            return 1.0
        if len(self.costs) == 1:
            return next(iter(self.costs.values()))
        encoder = trial.config.get("candidate", trial.config).get("encoder")
        return self.costs.get(encoder, sum(self.costs.values()) / len(self.costs))

    def state(self, trial: Any) -> str | None:
        """``running``, ``done``, ``pruned``, ``failed``, or ``None`` (pending, paused)."""
        if trial.status == "RUNNING":
            return RUNNING
        if trial.status == "ERROR" or (trial.last_result or {}).get(FAILURE_KEY):
            return FAILED
        if trial.status == "TERMINATED":
            epoch = (trial.last_result or {}).get("epoch", 0)
            return DONE if int(epoch) >= self.final_epoch else PRUNED
        return None

    def counts(self, trials: list, ended: tuple[Any, str] | None = None) -> dict[str, int]:
        """Trials per state; ``ended``: a trial and the state it is entering now (Ray calls a
        callback before it sets the new status)."""
        out = dict.fromkeys(COUNTED, 0)
        for t in trials:
            s = ended[1] if ended is not None and t is ended[0] else self.state(t)
            if s is not None:
                out[s] += 1
        return out

    def eta(self, finished: bool = False) -> float | None:
        """Seconds left: the planned units not yet reached over the rate seen so far."""
        if finished:
            return 0.0
        elapsed = time.monotonic() - self._start
        if self._session_units <= 0 or elapsed <= 0:
            return None
        left = max(self.planned_units - sum(self._reached.values()), 0.0)
        return left / (self._session_units / elapsed)

    def status(self, trials: list, ended: tuple[Any, str] | None = None) -> str:
        """``2 running, 3 done, 1 pruned, 0 failed of 8 | 12s elapsed, ETA 45s``."""
        c = self.counts(trials, ended)
        finished = c[DONE] + c[PRUNED] + c[FAILED] >= self.total
        retried = f", {self._retried} retried" if self._retried else ""
        return (
            f"{c[RUNNING]} running, {c[DONE]} done, {c[PRUNED]} pruned, {c[FAILED]} failed"
            f"{retried} of {self.total} | {clock(time.monotonic() - self._start)} elapsed, "
            f"ETA {clock(self.eta(finished))}"
        )

    def trial_line(self, trial: Any, result: Mapping[str, Any]) -> str:
        """``s1-0003 d+sk epoch 2/4 vuln 0.812``."""
        entry = trial.config.get("candidate", trial.config)
        return (
            f"{self.trial_id(trial)} {candidate_label(entry)} epoch {result.get('epoch', '?')}/"
            f"{self.final_epoch} {metric_text(result, self.metric)}"
        )

    # -- output -----------------------------------------------------------------------------

    def block(self, trials: list, ended: tuple[Any, str] | None = None) -> list[str]:
        """The terminal block: the status, then one line per running trial (``ended``: as in
        :meth:`counts`)."""
        running = [
            t for t in trials if self.state(t) == RUNNING and (ended is None or t is not ended[0])
        ]
        lines = [f"{self.label}: {self.status(trials, ended)}"]
        for t in running:
            entry = t.config.get("candidate", t.config)
            text = (
                self.trial_line(t, t.last_result)
                if t.last_result
                else f"{self.trial_id(t)} {candidate_label(entry)} starting"
            )
            lines.append(f"  {text}")
        return lines

    def _draw(
        self, trials: list, above: list[str] = (), ended: tuple[Any, str] | None = None
    ) -> None:
        """Print ``above`` (kept on screen) and redraw the block below it."""
        block = self.block(trials, ended)
        clear = UP_AND_CLEAR.format(n=self._drawn) if self._drawn else ""
        self.echo(clear + "\n".join([*above, *block]))
        self._drawn = len(block)
        self._last_draw = time.monotonic()

    def _say(self, trials: list, line: str, ended: tuple[Any, str]) -> None:
        if self.tty:
            self._draw(trials, [line], ended)
        else:
            self.echo(line)

    # -- Ray Tune's hooks -------------------------------------------------------------------

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        """Count the epoch's units; print a line (plain output) or let the block show it."""
        if result.get(FAILURE_KEY):  # the trial's own fault: on_trial_complete says "failed"
            return
        epoch = result.get("epoch")
        if isinstance(epoch, int | float) and epoch >= 1:
            cost = self._cost(trial)
            self._session_units += cost
            self._reached[trial.trial_id] = cost * float(epoch)
        if not self.tty:
            self.echo(f"{self.label} {self.trial_line(trial, result)} | {self.status(trials)}")
        elif time.monotonic() - self._last_draw >= self.interval:
            self._draw(trials)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        """Redraw the block when it is older than the interval (terminal only)."""
        if self.tty and time.monotonic() - self._last_draw >= self.interval:
            self._draw(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """One line: the trial's id, candidate, last epoch and metric, done or pruned."""
        r = trial.last_result or {}
        if r.get(FAILURE_KEY):  # a trial fault ends the trial without a Ray error
            self.on_trial_error(iteration, trials, trial)
            return
        state = DONE if int(r.get("epoch", 0)) >= self.final_epoch else PRUNED
        what = "completed" if state == DONE else "pruned"
        c = self.counts(trials, (trial, state))
        line = (
            f"{self.label} {sum(c[s] for s in (DONE, PRUNED, FAILED))}/{self.total}: "
            f"{self.trial_line(trial, r)} {what}"
        )
        self._say(trials, line, (trial, state))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """One line saying the trial failed (the reason goes to the results table)."""
        c = self.counts(trials, (trial, FAILED))
        entry = trial.config.get("candidate", trial.config)
        line = (
            f"{self.label} {sum(c[s] for s in (DONE, PRUNED, FAILED))}/{self.total}: "
            f"{self.trial_id(trial)} {candidate_label(entry)} failed"
        )
        self._say(trials, line, (trial, FAILED))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """One line saying what Ray does about a trial that lost its node or worker (it runs
        the trial again from its last checkpoint); the retry is counted for the summary.

        Ray itself logs "Trial task failed for trial <Ray id>" with a traceback, which names no
        trial of ours and looks fatal; this line says which trial, and that the search goes on.
        """
        tid = self.trial_id(trial)
        count = self._count_retry(tid)
        self._retried += 1
        epoch = (trial.last_result or {}).get("epoch")
        where = f" at epoch {epoch}" if epoch is not None else ""
        has_checkpoint = getattr(trial, "checkpoint", None) is not None
        start = (
            f"from its epoch-{epoch} checkpoint"
            if has_checkpoint and epoch is not None
            else "from its last checkpoint"
            if has_checkpoint
            else "from the start"
        )
        limit = f" of {self.max_retries}" if self.max_retries > 0 else ""
        line = (
            f"{self.label} {tid} lost its node or worker{where}; retrying {start} "
            f"(retry {count}{limit})"
        )
        self._say(trials, line, (trial, RUNNING))

    def _count_retry(self, tid: str) -> int:
        """Add one retry of ``tid`` to :attr:`retries_file`; its count so far."""
        if not self.retries_file:
            return 1
        path = Path(self.retries_file)
        counts = read_retries(path)
        counts[tid] = counts.get(tid, 0) + 1
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(counts, indent=1, sort_keys=True))
        return counts[tid]

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Replace the block by one closing status line."""
        line = f"{self.label}: {self.status(trials)}"
        if self.tty and self._drawn:
            self.echo(UP_AND_CLEAR.format(n=self._drawn) + line)
        else:
            self.echo(line)
        self._drawn = 0
