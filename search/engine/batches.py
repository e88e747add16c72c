"""Deterministic stage 1 (``search.deterministic: true``): batches of proposals, rung barriers,
tells in a fixed order; the driver owns the loop.

Asynchronous stage 1 (:class:`~.searcher.StudySearcher` + ASHA) lets the sampler propose from
whatever has finished at that instant and ASHA judge a trial against whatever its rung holds at
that instant, so the answer depends on timing. Here the same config gives the same tables at any
concurrency, on an idle or a loaded machine, with or without interruptions:

1. **Batches of proposals.** Optuna (ask/tell on the run's journal-backed study) proposes
   ``search.batch`` candidates at a time; a batch sees the told results of the finished batches
   and its own earlier proposals (running), never a half-finished batch. Before every ask the
   sampler is rebuilt with a seed drawn from ``(search.seed, trial number)``, so a proposal is a
   function of the study's content alone, not of a sampler's memory.
2. **Rung barriers.** A batch trains rung by rung (:func:`rts.search.engine.halving.rung_epochs`),
   each rung one Ray Tune experiment over fixed configs that stops its trials at the rung's epoch;
   once every trial of the rung has reported, :func:`~rts.search.engine.halving.continuing`
   decides who goes on (synchronous successive halving, ties broken by candidate key), and those
   continue from their checkpoints in the next rung's experiment.
3. **Tells in a fixed order.** After the last rung the batch's trials are told to Optuna by
   number (COMPLETE, PRUNED with their intermediate values, or FAIL, as the asynchronous
   searcher does).
4. **Records.** Every finished rung and batch is written atomically (:mod:`.records`), the batch
   record with the journal's length after its tells.

Resume: the journal is cut back to the length the last batch record names (dropping the asks of
an unfinished batch), the unfinished batch is proposed again (the same candidates: same content,
same seeds), its recorded rungs are read back, an interrupted rung's experiment is restored by
Ray (its trials continue from their last checkpoints), and the rest runs. Nothing finished is
trained again, and the tables come out as if nothing had happened.

A candidate proposed again is not run twice: a repeat of a finished trial is told that trial's
outcome at once, a repeat of one in the same batch is told its outcome with the batch, and the
sampler is asked again (:func:`~rts.search.engine.samplers.draw`, shared with the asynchronous
searcher).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from rts.search.config.schema import SearchConfig
from rts.search.engine.experiment import run_fixed
from rts.search.engine.halving import continuing, rung_epochs
from rts.search.engine.paths import RunPaths, stage_trial_id
from rts.search.engine.plan import stage1_trial_count
from rts.search.engine.records import (
    BatchRecord,
    Member,
    Outcome,
    RecordedResult,
    RungResult,
    batch_path,
    read_batches,
    read_rung,
    recorded_results,
    rung_path,
    rung_results,
    write_batch,
    write_rung,
)
from rts.search.engine.samplers import (
    REPEAT_OF,
    SamplerRecipe,
    draw,
    open_study,
    outcome_of,
    tell_outcome,
)
from rts.search.engine.session import Echo
from rts.search.engine.space import Space, candidate_key
from rts.search.engine.storage import delete_tree
from rts.search.engine.trainable import RESUME_KEY
from rts.search.engine.trial import TrialFn
from rts.tasks.io import atomic_write_bytes

log = logging.getLogger(__name__)

STUDY = "stage1"
"""The Optuna study's name in the run's journal (as in asynchronous mode)."""


@dataclass(frozen=True)
class Proposal:
    """A batch's candidates: the trials to run, and the repeats told with the batch."""

    members: list[Member]
    trials: dict[int, optuna.Trial]  # member number -> its study trial
    twins: list[tuple[optuna.Trial, int]]  # (study trial, member number it repeats)


def run_batched_stage1(
    cfg: SearchConfig,
    paths: RunPaths,
    trial_fn: TrialFn,
    echo: Echo,
    callbacks: Sequence[Any] = (),
) -> list[RecordedResult]:
    """Run or resume the deterministic stage 1 (see the module docstring); ``callbacks`` (Ray
    Tune's) are added to every rung's experiment.

    Returns:
        One result per stage-1 trial, by trial number.

    Raises:
        SearchInterrupted: a rung stopped early; call again to resume.
    """
    total = stage1_trial_count(cfg)
    size = cfg.search.batch
    n_batches = math.ceil(total / size)
    s1 = cfg.stage1
    rungs = rung_epochs(s1.epochs, s1.grace_period, s1.reduction_factor, s1.scheduler)
    space = Space.from_config(cfg)
    done = covered(read_batches(paths.batches), paths.journal)
    study = study_at(cfg, paths.journal, done[-1].journal_bytes if done else None)
    if done:
        echo(f"stage 1: resuming after batch {len(done)} of {n_batches}")
    else:
        echo(
            f"stage 1: {total} trials in {n_batches} batch(es) of {size}, rungs at epochs "
            f"{', '.join(map(str, rungs))}, {cfg.sampler} sampler, "
            f"{'successive halving' if len(rungs) > 1 else 'no pruning'} on {s1.metric} "
            "(deterministic)"
        )
    for batch in range(len(done) + 1, n_batches + 1):
        first = (batch - 1) * size + 1
        count = min(size, total - first + 1)
        proposal = propose(study, cfg, space, first, count, total, done)
        results = run_batch(
            cfg, paths, trial_fn, batch, n_batches, proposal.members, rungs, done, echo, callbacks
        )
        outcomes = {r.number: outcome(r, cfg) for r in results}
        tell_batch(study, proposal, outcomes)
        record = BatchRecord(
            batch,
            {m.number: tuple(m.key) for m in proposal.members},
            outcomes,
            paths.journal.stat().st_size,
            rungs=max(r.rung for r in results),
        )
        write_batch(batch_path(paths.batches, batch), record)
        done.append(record)
        _sync(paths)
        states = [o.state for o in outcomes.values()]
        echo(
            f"stage 1 batch {batch}/{n_batches}: {states.count('COMPLETE')} completed, "
            f"{states.count('PRUNED')} pruned, {states.count('FAIL')} failed"
        )
    return collect_results(paths, done)


def collect_results(paths: RunPaths, done: Sequence[BatchRecord]) -> list[RecordedResult]:
    """Every trial of the finished batches, from the rung records each batch ran."""
    parts: list[RungResult] = []
    for record in done:
        for rung in range(1, record.rungs + 1):
            parts.extend(read_rung(rung_path(paths.batches, record.batch, rung)) or [])
    return recorded_results(parts, paths.experiment(1))


def covered(done: list[BatchRecord], journal: Path) -> list[BatchRecord]:
    """The finished batches whose tells the journal holds (a prefix of ``done``).

    A journal can be older than the batch records: with a URI storage the remote journal replaces
    the local one at a restart, and a driver killed in an upload may have left a batch record
    without the journal that goes with it. The batches beyond the journal are proposed and told
    again (the same candidates; their rungs are read back from their records, not trained).
    """
    size = journal.stat().st_size if journal.exists() else 0
    kept = list(itertools.takewhile(lambda r: r.journal_bytes <= size, done))
    if len(kept) < len(done):
        log.warning(
            "%s holds %d of %d finished batches; telling the rest again",
            journal,
            len(kept),
            len(done),
        )
    return kept


def study_at(cfg: SearchConfig, journal: Path, journal_bytes: int | None) -> optuna.Study:
    """The stage-1 study in ``journal``, cut back to its first ``journal_bytes`` bytes (the state
    after the last finished batch; ``None``: a new study)."""
    if journal_bytes is None:
        journal.unlink(missing_ok=True)
    else:
        data = journal.read_bytes()
        if len(data) < journal_bytes:
            raise ValueError(f"{journal} is shorter than {journal_bytes} bytes")
        if len(data) > journal_bytes:
            log.info("dropping the asks of an unfinished batch from %s", journal)
            atomic_write_bytes(journal, data[:journal_bytes])
    return open_study(journal, 2 if cfg.search.objective == "pareto" else 1)


def propose(
    study: optuna.Study,
    cfg: SearchConfig,
    space: Space,
    first: int,
    count: int,
    total: int,
    done: Sequence[BatchRecord],
) -> Proposal:
    """Ask the sampler for ``count`` distinct new candidates, numbered from ``first``.

    A repeat is answered and redrawn, :data:`~rts.search.engine.samplers.MAX_REDRAWS` times by the
    sampler, then as often at random (a model-based sampler can settle on a few candidates
    while untried ones remain); only a last repeat after that is run.
    """
    known: dict[tuple, int] = {}
    outcomes: dict[int, Outcome] = {}
    for record in done:
        for number, key in record.keys.items():
            known.setdefault(key, number)
        outcomes.update(record.outcomes)
    members: list[Member] = []
    trials: dict[int, optuna.Trial] = {}
    twins: list[tuple[optuna.Trial, int]] = []

    def twin_of(key: Any) -> Member | None:
        return next((m for m in members if m.key == key), None)

    def answer(trial: optuna.Trial, key: Any) -> None:
        if key in known:  # run before: told its outcome at once
            trial.set_user_attr(REPEAT_OF, stage_trial_id(1, known[key]))
            tell_outcome(study, trial, outcomes[known[key]])
        else:  # a member of this batch: told with the batch
            twin = twin_of(key)
            trial.set_user_attr(REPEAT_OF, stage_trial_id(1, twin.number))
            twins.append((trial, twin.number))

    recipe = SamplerRecipe(cfg.sampler, space, total)
    while len(members) < count:
        got = draw(
            study,
            recipe,
            seed=cfg.search.seed,
            space=space,
            key_of=candidate_key,
            is_known=lambda key: key in known or twin_of(key) is not None,
            on_repeat=answer,
        )
        member = Member(first + len(members), got.config, got.key)
        members.append(member)
        trials[member.number] = got.trial
    return Proposal(members, trials, twins)


def run_batch(
    cfg: SearchConfig,
    paths: RunPaths,
    trial_fn: TrialFn,
    batch: int,
    n_batches: int,
    members: list[Member],
    rungs: Sequence[int],
    done: Sequence[BatchRecord],
    echo: Echo,
    callbacks: Sequence[Any] = (),
) -> list[RungResult]:
    """Train a batch rung by rung; the last rung result of every member, by number."""
    metric = cfg.stage1.metric
    last: dict[int, RungResult] = {}
    checkpoints: dict[int, str] = {}
    offsets: dict[int, float] = {}
    alive = list(members)
    for k, epoch in enumerate(rungs, start=1):
        results = _rung(
            cfg,
            paths,
            trial_fn,
            batch,
            n_batches,
            k,
            (rungs[k - 2] + 1 if k > 1 else 1, epoch),
            alive,
            checkpoints,
            offsets,
            echo,
            callbacks,
        )
        for r in results:
            last[r.number] = r
            checkpoints[r.number] = r.checkpoint
            offsets[r.number] = r.end_time
        if k == len(rungs):
            break
        values = {(r.key, r.number): r.value(epoch, metric) for r in results if not r.failure}
        keep = continuing(values, reached(done, epoch), cfg.stage1.reduction_factor)
        alive = [m for m in alive if (tuple(m.key), m.number) in keep]
        if not alive:
            break
    return [last[m.number] for m in members]


def reached(done: Sequence[BatchRecord], epoch: int) -> list[tuple[float, tuple]]:
    """``(value, (key, number))`` of the finished batches' trials that reported ``epoch``."""
    out = []
    for record in done:
        for number, result in record.outcomes.items():
            value = result.steps.get(epoch)
            if value is not None and math.isfinite(value):
                out.append((value, (record.keys[number], number)))
    return out


def _rung(
    cfg: SearchConfig,
    paths: RunPaths,
    trial_fn: TrialFn,
    batch: int,
    n_batches: int,
    k: int,
    epochs: tuple[int, int],
    alive: list[Member],
    checkpoints: dict[int, str],
    offsets: dict[int, float],
    echo: Echo,
    callbacks: Sequence[Any] = (),
) -> list[RungResult]:
    """One rung of a batch (``epochs``: its first and last): read back from its record, or run
    (restore) it and record it."""
    first_epoch, epoch = epochs
    record = rung_path(paths.batches, batch, k)
    found = read_rung(record, alive)
    if found is not None:
        return found
    name = f"batch{batch:04d}-rung{k}"
    title = f"stage 1 batch {batch}/{n_batches} rung {k}"
    entries = [
        {**m.config, "member": m.number, RESUME_KEY: checkpoints.get(m.number, "")} for m in alive
    ]
    exp = f"{paths.experiment(1)}/{name}"
    for attempt in range(2):
        grid = run_fixed(
            cfg,
            paths,
            trial_fn,
            1,
            paths.experiment(1),
            name,
            entries,
            echo,
            title=title,
            label=f"stage1 b{batch} r{k}",
            stop={"epoch": epoch},
            callbacks=callbacks,
        )
        try:
            results = rung_results(
                grid, alive, experiment=exp, rung=k, time_offset=offsets, first_epoch=first_epoch
            )
            break
        except ValueError:
            if attempt:
                raise
            log.warning("%s: a stale experiment of other trials; running the rung again", exp)
            delete_tree(exp)
    write_rung(record, results)
    return results


def outcome(result: RungResult, cfg: SearchConfig) -> Outcome:
    """What Optuna is told for a trial whose last rung is ``result``
    (:func:`~rts.search.engine.samplers.outcome_of`, as the asynchronous searcher tells it)."""
    metric = cfg.stage1.metric
    steps = {}
    for row in result.rows:
        v = row.get(metric)
        if isinstance(v, int | float) and math.isfinite(v) and "epoch" in row:
            steps[int(row["epoch"])] = float(v)
    metrics = [metric, "clean_error"] if cfg.search.objective == "pareto" else [metric]
    last = result.rows[-1] if result.rows else None
    failed = bool(result.failure) or not result.rows
    return outcome_of(last, metrics, cfg.stage1.epochs, failed=failed, steps=steps)


def tell_batch(study: optuna.Study, proposal: Proposal, outcomes: dict[int, Outcome]) -> None:
    """Tell the batch's trials by number, then the repeats among them."""
    for member in proposal.members:
        tell_outcome(study, proposal.trials[member.number], outcomes[member.number])
    for trial, number in proposal.twins:
        tell_outcome(study, trial, outcomes[number])


def _sync(paths: RunPaths) -> None:
    """Upload the records (and journal) of a URI storage after a batch."""
    if paths.remote:
        from rts.search.engine.storage import sync_up

        sync_up(paths.root, paths.remote)
