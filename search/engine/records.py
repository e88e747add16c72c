"""Durable records of a deterministic stage 1: one JSON file per finished rung and batch.

A rung record (``stages/stage1/batch<b>-rung<k>.json``) holds what every trial of the rung
reported (the rows of its epochs), its failure and its last checkpoint; a batch record
(``batch<b>.json``) the outcome told to Optuna for each trial and the length of the Optuna journal
after the batch's tells. Both are written atomically after the work they describe, so a driver
killed at any moment finds every finished rung and batch on disk and repeats none of them. The
stage-1 results are read back from the rung records (:func:`recorded_results`) in the shape of
Ray's ``Result``, so the results layer tables them like an asynchronous stage.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rts.search.engine.faults import TrialFailure, drop_failure_rows, result_failure
from rts.search.engine.paths import trial_config
from rts.search.engine.rows import reported_rows
from rts.search.engine.space import candidate_key
from rts.search.engine.storage import posix_name
from rts.tasks.io import atomic_write_text

RAY_BOOKKEEPING = frozenset(
    {
        "timestamp",
        "checkpoint_dir_name",
        "done",
        "training_iteration",
        "trial_id",
        "date",
        "time_this_iter_s",
        "pid",
        "node_ip",
        "time_since_restore",
        "iterations_since_restore",
        "should_checkpoint",
    }
)
"""Columns of Ray's per-trial results that a record leaves out (Ray's own bookkeeping)."""


@dataclass(frozen=True)
class Member:
    """One trial of a batch: its number in stage 1 (proposal order, 1-based), its candidate
    config (:meth:`Candidate.to_config`) and the candidate's key."""

    number: int
    config: dict[str, Any]
    key: tuple


@dataclass(frozen=True)
class RungResult:
    """What one trial did in one rung (a rung record holds one per trial).

    Attributes:
        number: the trial's number.
        key: its candidate's key.
        rung: the rung (1-based).
        config: its candidate config.
        rows: one dict per reported epoch (metrics, ``epoch``, ``time_total_s`` counted from the
            trial's start, ``node_id``, ``hostname``).
        failure: one-line reason when the trial failed, else ``""``.
        checkpoint: its last checkpoint (a folder or URI), ``""`` if none.
        ray_trial_id: Ray's id of the trial in this rung's experiment.
    """

    number: int
    key: tuple
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    rung: int = 1
    failure: str = ""
    checkpoint: str = ""
    ray_trial_id: str = ""

    def value(self, epoch: int, metric: str) -> float:
        """The trial's ``metric`` at ``epoch`` (the last report of it), NaN if none."""
        for row in reversed(self.rows):
            if row.get("epoch") == epoch:
                v = row.get(metric)
                return float(v) if isinstance(v, int | float) else math.nan
        return math.nan

    @property
    def end_time(self) -> float:
        """Trial time at its last report (seconds since the trial's start)."""
        times = [r["time_total_s"] for r in self.rows if "time_total_s" in r]
        return float(times[-1]) if times else 0.0


@dataclass(frozen=True)
class Outcome:
    """What Optuna is told for a trial: state name, objective values, intermediate values."""

    state: str
    values: list[float] | None = None
    steps: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchRecord:
    """A finished batch: its trials' outcomes (by number, with their keys), the journal's
    length after they were told, and how many rungs it ran."""

    batch: int
    keys: dict[int, tuple]
    outcomes: dict[int, Outcome]
    journal_bytes: int
    rungs: int = 1


@dataclass(frozen=True)
class RecordedResult:
    """One stage-1 trial read back from the rung records, with the attributes of Ray's
    ``Result`` that :func:`rts.search.results.collect.collect_stage` reads.

    ``path`` ends in ``trial_<number>_<Ray id>`` (the trial's number gives its ``trial_id``).
    """

    path: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    metrics_dataframe: pd.DataFrame
    error: BaseException | None = None
    checkpoint: Any = None


def rung_path(folder: Path, batch: int, rung: int) -> Path:
    """The record of rung ``rung`` of batch ``batch``."""
    return folder / f"batch{batch:04d}-rung{rung}.json"


def batch_path(folder: Path, batch: int) -> Path:
    """The record of finished batch ``batch``."""
    return folder / f"batch{batch:04d}.json"


def _scalar(value: Any) -> Any:
    """A JSON-able Python scalar (numpy numbers unwrapped), or ``None`` for anything else."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, bool | int | float | str):
        return value
    return None


def result_rows(df: pd.DataFrame | None) -> list[dict[str, Any]]:
    """The reported epochs of one Ray trial as JSON-able dicts (without Ray's bookkeeping)."""
    df = drop_failure_rows(df)
    if df is None or df.empty:
        return []
    keep = [c for c in df.columns if c not in RAY_BOOKKEEPING and not c.startswith("config/")]
    rows = []
    for record in df[keep].to_dict("records"):
        row = {k: _scalar(v) for k, v in record.items()}
        rows.append({k: v for k, v in row.items() if v is not None})
    return rows


def rung_results(
    results: Iterable[Any],
    members: Sequence[Member],
    *,
    experiment: str,
    rung: int,
    time_offset: Mapping[int, float],
    first_epoch: int = 1,
) -> list[RungResult]:
    """The rung's results from Ray's, one per member, in member order.

    Args:
        results: the rung experiment's results.
        members: the trials the rung ran.
        experiment: the rung experiment's folder or URI (checkpoints are recorded under it).
        rung: the rung's number.
        time_offset: trial time already spent by each member in earlier rungs.
        first_epoch: the rung's first epoch (rows Ray lost are taken from the checkpoint).

    Raises:
        ValueError: the results are not exactly the members (a stale experiment).
    """
    by_number = {m.number: m for m in members}
    out: dict[int, RungResult] = {}
    for result in results:
        entry = trial_config(result).get("candidate", {})
        number = int(entry.get("member", 0))
        member = by_number.get(number)
        if member is None or tuple(member.key) != candidate_key(entry) or number in out:
            raise ValueError(f"{experiment} holds trials of another batch")
        offset = float(time_offset.get(number, 0.0))
        rows = result_rows(reported_rows(result, first_epoch))
        for row in rows:
            if "time_total_s" in row:
                row["time_total_s"] = float(row["time_total_s"]) + offset
        checkpoint = ""
        if result.checkpoint is not None:
            trial_dir = posix_name(str(result.path))
            checkpoint = f"{experiment}/{trial_dir}/{posix_name(str(result.checkpoint.path))}"
        out[number] = RungResult(
            number=number,
            key=tuple(member.key),
            config=dict(member.config),
            rows=rows,
            rung=rung,
            failure=result_failure(result),
            checkpoint=checkpoint,
            ray_trial_id=posix_name(str(result.path)).split("_")[-1],
        )
    if set(out) != set(by_number):
        raise ValueError(f"{experiment} holds trials of another batch")
    return [out[m.number] for m in members]


def write_rung(path: Path, results: Sequence[RungResult]) -> None:
    """Write a rung record atomically."""
    data = [
        {
            "number": r.number,
            "key": list(r.key),
            "config": r.config,
            "rows": r.rows,
            "rung": r.rung,
            "failure": r.failure,
            "checkpoint": r.checkpoint,
            "ray_trial_id": r.ray_trial_id,
        }
        for r in results
    ]
    atomic_write_text(path, json.dumps({"trials": data}, indent=1))


def read_rung(path: Path, members: Sequence[Member] | None = None) -> list[RungResult] | None:
    """A rung record, or ``None`` if there is none or it is not about ``members``."""
    if not path.exists():
        return None
    data = json.loads(path.read_text())["trials"]
    out = [
        RungResult(
            number=int(d["number"]),
            key=tuple(d["key"]),
            config=dict(d["config"]),
            rows=list(d["rows"]),
            rung=int(d["rung"]),
            failure=str(d["failure"]),
            checkpoint=str(d["checkpoint"]),
            ray_trial_id=str(d["ray_trial_id"]),
        )
        for d in data
    ]
    if members is not None and [(r.number, r.key) for r in out] != [
        (m.number, tuple(m.key)) for m in members
    ]:
        return None
    return out


def write_batch(path: Path, record: BatchRecord) -> None:
    """Write a batch record atomically."""
    data = {
        "batch": record.batch,
        "journal_bytes": record.journal_bytes,
        "rungs": record.rungs,
        "trials": [
            {
                "number": n,
                "key": list(record.keys[n]),
                "state": o.state,
                "values": o.values,
                "steps": {str(k): v for k, v in o.steps.items()},
            }
            for n, o in record.outcomes.items()
        ],
    }
    atomic_write_text(path, json.dumps(data, indent=1))


def read_batches(folder: Path) -> list[BatchRecord]:
    """The records of the finished batches 1, 2, … (up to the first one missing)."""
    out = []
    while batch_path(folder, len(out) + 1).exists():
        data = json.loads(batch_path(folder, len(out) + 1).read_text())
        keys, outcomes = {}, {}
        for d in data["trials"]:
            n = int(d["number"])
            keys[n] = tuple(d["key"])
            steps = {int(k): float(v) for k, v in d["steps"].items()}
            outcomes[n] = Outcome(d["state"], d["values"], steps)
        out.append(
            BatchRecord(
                int(data["batch"]), keys, outcomes, int(data["journal_bytes"]), int(data["rungs"])
            )
        )
    return out


def recorded_results(rungs: Iterable[RungResult], experiment: str) -> list[RecordedResult]:
    """One Ray-like result per trial from all its rungs (in order), by trial number."""
    by_number: dict[int, list[RungResult]] = {}
    for r in rungs:
        by_number.setdefault(r.number, []).append(r)
    out = []
    for number, parts in sorted(by_number.items()):
        last = parts[-1]
        rows = [row for part in parts for row in part.rows]
        metrics = dict(rows[-1]) if rows else {}
        out.append(
            RecordedResult(
                path=f"{experiment}/trial_{number:04d}_{last.ray_trial_id or 'none'}",
                config=dict(last.config),
                metrics=metrics,
                metrics_dataframe=pd.DataFrame(rows),
                error=TrialFailure(last.failure) if last.failure else None,
                checkpoint=_checkpoint(last.checkpoint),
            )
        )
    return out


def _checkpoint(path: str) -> Any:
    """Ray's ``Checkpoint`` at ``path`` (``None`` for ``""``): what a reused stage-1 trial's
    model is copied from (``stage2.reuse``)."""
    if not path:
        return None
    from ray.tune import Checkpoint  # Ray out of light imports

    return Checkpoint(path)
