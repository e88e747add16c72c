"""The replay trial function: answer a trial from a table of measured results, not training.

With a ``replay:`` section (:class:`rts.search.config.schema.ReplayConfig`) every trial of the
search looks its task set up in the tables instead of training, so the real pipeline (Ray Tune,
Optuna, ASHA, both stages, resume, the tables, summary, ``rts analyze`` and ``rts report``) runs
unchanged on measurements made elsewhere: Standley et al.'s published Taskonomy losses, or your
own past runs. A search policy can so be judged on real results in seconds.

Epoch ``e`` of a trial is the fraction ``e / stage2.epochs`` of a full training; after it the
trial reports the value measured at the largest fraction of the tables not above that (before
the first measured fraction, the first measurement stands in), so stage 1 at ``stage2.epochs /
5`` epochs reads the 20 % table and a full training the full one. The compute charged is the
epochs reported, as for a real trial. The value (lower is better) is reported as ``vuln`` and
``clean_error`` (what the stages rank by); a stage-2 trial also reports it as the one "attack"
``replay``. A task set the table lacks at the fraction asked fails the trial, naming it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rts.search.config.replay import ReplayTables, read_replay
from rts.search.engine.trial import TrialSession, TrialSpec

REPLAY_ATTACK = "replay"
"""The "attack" name of a replayed stage-2 value in the attacks table."""


class NotMeasured(RuntimeError):
    """The replay's tables hold no value for a trial's task set at the fraction asked."""


def replay_fraction(fractions: tuple[float, ...], epoch: int, full_epochs: int) -> float:
    """The measured fraction answering ``epoch`` of ``full_epochs``: the largest one not above
    ``epoch / full_epochs`` (the smallest before it)."""
    at = epoch / full_epochs
    below = [f for f in fractions if f <= at + 1e-9]
    return max(below) if below else min(fractions)


def replay_value(tables: ReplayTables, spec: TrialSpec, epoch: int) -> float:
    """The main task's value of ``spec``'s task set after ``epoch`` epochs.

    Raises:
        NotMeasured: the tables lack that task set at that fraction.
    """
    fraction = replay_fraction(tables.fractions, epoch, spec.full_epochs)
    value = tables.value(spec.tasks, spec.main, fraction)
    if math.isnan(value):
        raise NotMeasured(
            f"replay: task set {spec.tasks!r} (main {spec.main!r}) was not measured at "
            f"{fraction:g} of training"
        )
    return value


def replay_trial(spec: TrialSpec, session: TrialSession) -> None:
    """Report ``spec.epochs`` epochs of measured values (see the module docstring); resumes
    after the last epoch reported."""
    if spec.replay is None:
        raise ValueError("replay_trial needs a config with a replay: section")
    tables = read_replay(spec.replay)
    start = 0
    if session.resume_dir is not None and (session.resume_dir / "replay.json").exists():
        start = int(json.loads((session.resume_dir / "replay.json").read_text())["epoch"])
    for epoch in range(start + 1, spec.epochs + 1):
        value = replay_value(tables, spec, epoch)
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": value,
            "clean_error": value,
            "vuln": value,
            f"clean_{spec.main}": value,
            "replay_fraction": replay_fraction(tables.fractions, epoch, spec.full_epochs),
        }
        if spec.stage == 2 and epoch == spec.epochs:
            metrics[f"vuln_{REPLAY_ATTACK}"] = value
            rows = [
                {
                    "attack": REPLAY_ATTACK,
                    "attacked": spec.main,
                    "task": spec.main,
                    "relative_vulnerability": value,
                }
            ]
            metrics["attack_rows"] = json.dumps(rows)
        session.report(metrics, _state_writer(epoch))


def _state_writer(epoch: int):
    def write(folder: Path) -> None:
        (folder / "replay.json").write_text(json.dumps({"epoch": epoch}))

    return write
