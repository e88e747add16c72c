"""``rts attack RUN --eps 4/255,8/255 --norm linf,l2``: sweep a search run's budgets.

Argument checks and printing only; the sweep itself is :mod:`rts.search.results.sweep`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rts.cli.attack import check_args

if TYPE_CHECKING:
    from rts.search.config.schema import SearchConfig
    from rts.search.results.sweep import SweepJob, SweepSettings

SINGLE_ONLY = {
    "chain": None,
    "tasks": None,
    "weights": None,
    "eval_tasks": None,
    "n": None,
    "out": None,
    "split": "val",
}
"""Options of one checkpoint that a sweep does not take, with their defaults: a sweep attacks
what the search attacked, on its images, and writes into the run folder."""


def sweep(args: argparse.Namespace, root: Path) -> int:
    """Attack the run's stage-2 models at every budget they lack; print a line per result."""
    given = [k for k, default in SINGLE_ONLY.items() if getattr(args, k) != default]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise ValueError(
            f"{flag} applies to one checkpoint; a sweep of the search run {root} attacks what "
            "its search attacked (attack.target, attack.images) and writes to the run folder"
        )
    from rts.search.results.sweep import SweepSettings, format_plan, plan_sweep, run_config

    cfg = run_config(root, args.data)
    a = cfg.attack
    defaults = {
        "attack": ",".join(a.ensemble),
        "eps": None,
        "norm": a.norm,
        "steps": a.steps,
        "batch_size": cfg.stage2.batch_size,
        "seed": cfg.trial_seed,
    }
    parsed = check_args(args, defaults)
    settings = SweepSettings(
        budgets=parsed["budgets"],
        attacks=parsed["attacks"],
        steps=args.steps if args.steps is not None else a.steps,
        step_size=parsed["step_size"],
        options=parsed["options"],
        batch_size=args.batch_size,
        seed=args.seed,
    )
    trial_ids = [t.strip() for t in args.trials.split(",") if t.strip()] if args.trials else None
    jobs = plan_sweep(root, cfg, settings, trial_ids)
    print(format_plan(jobs))
    if args.dry_run or not any(j.todo for j in jobs):
        return 0
    return _attack(args, root, cfg, settings, jobs)


def _attack(
    args: argparse.Namespace,
    root: Path,
    cfg: SearchConfig,
    settings: SweepSettings,
    jobs: Sequence[SweepJob],
) -> int:
    """Run the planned jobs under a progress bar; upload to the run's URI if it has one."""
    from tqdm.auto import tqdm

    from rts.models import resolve_device
    from rts.search.engine.paths import RunPaths
    from rts.search.engine.storage import is_uri, sync_up
    from rts.search.engine.trial import attack_probe, trial_datasets
    from rts.search.results.sweep import run_sweep

    todo = [j for j in jobs if j.todo]
    images = len(attack_probe(todo[0].spec, trial_datasets(todo[0].spec)[1]))
    total = images * sum(len(j.todo) for j in todo)
    with tqdm(total=total, unit="img", desc="sweep", disable=args.no_progress) as bar:
        added = run_sweep(
            root,
            cfg,
            settings,
            todo,
            device=resolve_device(args.device),
            progress=bar.update,
            echo=tqdm.write,
        )
    paths = RunPaths(root)
    print(f"added {added} row(s) to {paths.attacks}")
    if is_uri(args.checkpoint):
        sync_up(root, str(args.checkpoint).rstrip("/"))
        print(f"uploaded to {args.checkpoint}")
    return 0
