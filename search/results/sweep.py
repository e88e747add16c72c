"""Sweeps without retraining: a run's stage-2 models attacked again at other budgets.

``rts attack RUN --eps 4/255,8/255,16/255 --norm linf,l2`` re-attacks every completed stage-2
checkpoint of a search run (or the ``--trials`` chosen) the way the search attacked it (its
attacked tasks, images, attacks, steps, seed and options; the step size keeps the run's ratio
step/eps) at each budget, and appends the rows to the run's ``attacks.parquet`` (and the main
task's per-image errors to ``images.parquet``), keyed by :data:`~.tables.ATTACK_KEY`.
A budget already there is skipped, the search's own included, so a rerun adds nothing and a new
eps adds only its rows. Every new row carries :data:`~.tables.SWEEP_COLUMNS`: the
task's skill on the attacked images and its vulnerability with a 95 % bootstrap interval.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rts.attacks.registry import Budget, format_eps
from rts.search.config.convert import load_config
from rts.search.config.schema import SearchConfig
from rts.search.engine.paths import RunPaths
from rts.search.engine.space import decode
from rts.search.engine.trial import TrialSpec, build_spec
from rts.search.results.summary import format_interval, short_label
from rts.search.results.tables import (
    ATTACK_KEY,
    BUDGET_COLUMNS,
    IMAGE_COLUMNS,
    IMAGE_KEY,
    append_missing,
    at_budget,
    read_parquet,
    with_budget,
    write_parquet,
)

Echo = Callable[[str], None]


@dataclass(frozen=True)
class SweepSettings:
    """What a sweep runs beyond the run's own attack settings.

    Attributes:
        budgets: ``(norm, eps)`` pairs (:func:`rts.attacks.registry.parse_budgets`).
        attacks: the attacks (default: the run's ensemble).
        steps: steps of each attack (default: the run's).
        step_size: the fixed-step attacks' step at every budget; ``None`` keeps the run's ratio
            ``attack.step_size / attack.eps`` (each attack's own rule when the run set none).
        options: each attack's own options, winning over the run's ``attack.options``.
        batch_size: images per attack call; ``None`` = the run's stage-2 batch size.
        seed: seed of the random starts; ``None`` = the run's trial seed (the search's numbers).
    """

    budgets: tuple[Budget, ...]
    attacks: tuple[str, ...]
    steps: int
    step_size: float | None = None
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    batch_size: int | None = None
    seed: int | None = None


@dataclass(frozen=True)
class SweepJob:
    """One stage-2 model and the budgets it still lacks.

    Attributes:
        trial_id: the stage-2 trial.
        label: its short name (``"d+sn"``).
        checkpoint: its ``last.pt``.
        spec: the trial's spec (tasks, attacked tasks, images, seed) rebuilt from the run.
        todo: budgets to attack.
        done: requested budgets already in ``attacks.parquet``.
    """

    trial_id: str
    label: str
    checkpoint: Path
    spec: TrialSpec
    todo: tuple[Budget, ...]
    done: tuple[Budget, ...]


def is_search_run(path: Path) -> bool:
    """Whether ``path`` is the folder of an ``rts search`` run (it has ``trials.parquet``)."""
    return path.is_dir() and RunPaths(path).trials.is_file()


def run_config(root: Path, data_source: str | None = None) -> SearchConfig:
    """The run's resolved config; ``data_source`` moves its data (``--data``)."""
    cfg = load_config(RunPaths(root).config, check=False)
    if data_source is None:
        return cfg
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source=data_source))


def stage2_models(root: Path, trial_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Completed stage-2 trials with a checkpoint (all, or ``trial_ids`` in that order)."""
    trials = read_parquet(RunPaths(root).trials)
    done = trials[(trials["stage"] == 2) & (trials["status"] == "completed")]
    done = done[done["checkpoint"].fillna("").astype(str) != ""]
    if trial_ids is None:
        return done.reset_index(drop=True)
    known = list(done["trial_id"])
    unknown = [t for t in trial_ids if t not in known]
    if unknown:
        raise ValueError(
            f"--trials: no completed stage-2 model {unknown[0]!r} in {root}; "
            f"choose from {', '.join(known) or '(none)'}"
        )
    return done.set_index("trial_id").loc[list(trial_ids)].reset_index()


def plan_sweep(
    root: Path, cfg: SearchConfig, settings: SweepSettings, trial_ids: Sequence[str] | None = None
) -> list[SweepJob]:
    """What a sweep would attack: per stage-2 model, the budgets missing from its table."""
    have = read_table(RunPaths(root).attacks, cfg)
    jobs = []
    for row in stage2_models(root, trial_ids).itertuples():
        params = json.loads(str(row.params))
        spec = build_spec(cfg, decode(params.get("candidate", params)), 2)
        rows = _main_rows(have, str(row.trial_id), spec)
        wanted = _attack_names(settings.attacks)
        done = tuple(b for b in settings.budgets if _has(rows, b, settings.steps, wanted))
        jobs.append(
            SweepJob(
                trial_id=str(row.trial_id),
                label=short_label(spec.main, str(row.aux)),
                checkpoint=root / str(row.checkpoint) / "last.pt",
                spec=spec,
                todo=tuple(b for b in settings.budgets if b not in done),
                done=done,
            )
        )
    return jobs


def _attack_names(attacks: Sequence[str]) -> set[str]:
    """The ``attack`` values a run of ``attacks`` writes (``worst`` when several)."""
    from rts.attacks.evaluate import WORST

    return set(attacks) | ({WORST} if len(attacks) > 1 else set())


def _main_rows(have: pd.DataFrame, trial_id: str, spec: TrialSpec) -> pd.DataFrame:
    if have.empty:
        return pd.DataFrame(columns=list(ATTACK_KEY))
    mine = (have["trial_id"] == trial_id) & (have["task"] == spec.main)
    return have[mine & (have["attacked"] == spec.attacked)]


def _has(rows: pd.DataFrame, budget: Budget, steps: int, attacks: set[str]) -> bool:
    if rows.empty:
        return False
    there = rows[at_budget(rows, *budget, steps)]
    return attacks <= set(there["attack"])


def format_plan(jobs: Sequence[SweepJob]) -> str:
    """The dry run: per model, the budgets to attack and those already there."""

    def names(budgets: Sequence[Budget]) -> str:
        return ", ".join(f"{n} {format_eps(n, e)}" for n, e in budgets) or "-"

    lines = [f"{j.trial_id} {j.label}: attack {names(j.todo)}; there {names(j.done)}" for j in jobs]
    todo = sum(len(j.todo) for j in jobs)
    lines.append(f"{todo} model-budget(s) to attack, {sum(len(j.done) for j in jobs)} there")
    return "\n".join(lines)


def step_size_at(cfg: SearchConfig, settings: SweepSettings, eps: float) -> float | None:
    """The fixed-step attacks' step at ``eps``: the given one, else the run's ratio step/eps."""
    if settings.step_size is not None:
        return settings.step_size
    a = cfg.attack
    return None if a.step_size is None else a.step_size * eps / a.eps


def attack_options(cfg: SearchConfig, settings: SweepSettings) -> dict[str, dict[str, Any]]:
    """Each attack's options: the run's ``attack.options``, then the sweep's own on top."""
    out = {n: {**cfg.attack.options.of(n), **settings.options.get(n, {})} for n in settings.attacks}
    return {n: o for n, o in out.items() if o}


def sweep_tables(
    per_image: Any, trial_id: str, spec: TrialSpec, skills: Mapping[str, float], seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The attack rows (with :data:`SWEEP_COLUMNS`) and the main task's image rows of one model
    at one budget, from :func:`rts.attacks.evaluate.attack_per_image`'s values."""
    from rts.attacks.evaluate import images_table, robustness_table
    from rts.attacks.statistics import interval

    table = robustness_table(per_image)
    table.insert(0, "trial_id", trial_id)
    images = images_table(per_image)
    table["skill"] = [skills.get(k, math.nan) for k in table["task"]]
    stats = []
    for r in table.itertuples():
        g = images[(images["attack"] == r.attack) & (images["attacked"] == r.attacked)]
        g = g[g["task"] == r.task]
        stats.append(interval(g["clean_error"], g["adv_error"], spec.attack.statistic, seed=seed))
    table["vuln"], table["vuln_low"], table["vuln_high"] = zip(*stats, strict=True)
    main = images[(images["task"] == spec.main) & (images["attacked"] == spec.attacked)]
    main = main.drop(columns=["attacked", "task"]).assign(trial_id=trial_id)
    main = main.assign(norm=per_image.norm, eps=per_image.eps, steps=per_image.steps)
    return table, main[[*IMAGE_COLUMNS, *BUDGET_COLUMNS]]


def read_table(path: Path, cfg: SearchConfig) -> pd.DataFrame:
    """A run's ``attacks`` or ``images`` table, its rows without a budget given the search's
    (tables written before they had one); empty when the run has none."""
    if not path.is_file():
        return pd.DataFrame()
    return with_budget(read_parquet(path), cfg.attack.norm, cfg.attack.eps, cfg.attack.steps)


def append_rows(
    paths: RunPaths, cfg: SearchConfig, attacks: pd.DataFrame, images: pd.DataFrame
) -> int:
    """Append the rows each table lacks (atomically; images first, as ``attacks.parquet`` says
    what is done); the number of attack rows added."""
    if paths.images.is_file():
        merged, _ = append_missing(read_table(paths.images, cfg), images, IMAGE_KEY)
        write_parquet(merged, paths.images)
    merged, added = append_missing(read_table(paths.attacks, cfg), attacks, ATTACK_KEY)
    if added:
        write_parquet(merged, paths.attacks)
    return added


def run_sweep(
    root: Path,
    cfg: SearchConfig,
    settings: SweepSettings,
    jobs: Sequence[SweepJob],
    *,
    device: Any,
    progress: Callable[[int], None] | None = None,
    echo: Echo | None = None,
) -> int:
    """Attack every job's missing budgets; append after each model; the attack rows added."""
    from rts.attacks.evaluate import WORST, attack_per_image
    from rts.attacks.skill import model_skill
    from rts.models import load_checkpoint
    from rts.search.engine.trial import attack_probe, trial_datasets

    say = echo or (lambda _line: None)
    paths = RunPaths(root)
    options = attack_options(cfg, settings)
    added = 0
    for job in (j for j in jobs if j.todo):
        spec = job.spec
        seed = spec.seed if settings.seed is None else settings.seed
        model, _ = load_checkpoint(job.checkpoint, map_location=device)
        train_set, val_set = trial_datasets(spec)
        probe = attack_probe(spec, val_set)
        batch = settings.batch_size or spec.batch_size
        attacks, images, skills = [], [], None
        for norm, eps in job.todo:
            per_image = attack_per_image(
                model,
                probe,
                settings.attacks,
                [spec.attacked],
                eps=eps,
                steps=settings.steps,
                norm=norm,
                step_size=step_size_at(cfg, settings, eps),
                batch_size=batch,
                seed=seed,
                attack_options=options,
                progress=progress,
            )
            if skills is None:  # clean errors, hence skill, do not depend on the budget
                skills = model_skill(per_image, train_set, probe, batch_size=batch)
            table, main_images = sweep_tables(per_image, job.trial_id, spec, skills, seed)
            attacks.append(table)
            images.append(main_images)
            headline = WORST if len(settings.attacks) > 1 else settings.attacks[0]
            r = table[(table["task"] == spec.main) & (table["attack"] == headline)].iloc[0]
            say(
                f"{job.trial_id} {job.label} {norm} {format_eps(norm, eps)}: vuln "
                f"{format_interval(r.vuln, r.vuln_low, r.vuln_high)} ({headline}), "
                f"skill {r.skill:.2f}"
            )
        added += append_rows(paths, cfg, pd.concat(attacks), pd.concat(images))
    return added
