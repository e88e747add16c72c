"""``rts attack RUN_OR_CHECKPOINT``: attack a trained model with an ensemble, per task.

Loads the checkpoint (a file, or a run folder holding ``last.pt`` / ``epoch_XXX.pt``), the
validation split of the data it was trained on (its ``data`` meta; ``--data`` overrides it), runs
the attacks (:func:`attacks.evaluate.attack_per_image`) and prints the table and each task's
skill. The full table is written atomically to ``attack.parquet`` in the run folder (or
``--out``), the resolved settings to ``attack.json`` beside it. ``--chain d,dD,dDn`` attacks the
growing sets of Definition 3 on the same images and also writes ``chain.parquet`` (the paper's
Figure 1, with bootstrap intervals: :mod:`attacks.chain`).

Given the folder of an ``rts search`` run, it sweeps budgets without retraining
(:func:`sweep`): ``--eps 4/255,8/255 --norm linf,l2`` attacks every stage-2 model
and appends the missing rows to the run's tables.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rts.tasks.weights import parse_weights

if TYPE_CHECKING:
    from rts.search.config.schema import SearchConfig
    from rts.search.results.sweep import SweepJob, SweepSettings

OUTPUT = "attack.parquet"
SETTINGS = "attack.json"
CHAIN = "chain.parquet"
"""= :data:`rts.attacks.chain.CHAIN_FILE` (not imported here: ``rts --help`` stays fast)."""
CHECKPOINT_DEFAULTS = {
    "attack": "pgd,apgd,wgd",
    "eps": "8/255",
    "norm": "linf",
    "steps": 25,
    "batch_size": 16,
    "seed": 0,
}
"""Defaults for one checkpoint; a run folder's sweep takes the run's own (:func:`sweep`)."""
SHOWN = (
    "attack",
    "attacked",
    "task",
    "clean_error",
    "adv_error",
    "relative_vulnerability",
    "adv_vulnerability",
)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Declare ``rts attack``."""
    p = subparsers.add_parser(
        "attack",
        help="attack a trained model and report per-task vulnerability",
        description=(
            "Attack a trained multi-task model with one or more attacks on one or more attacked "
            "task sets, and report each task's clean and adversarial error, its relative "
            "vulnerability and the adversarial vulnerability. The 'worst' rows are the "
            f"per-image worst case over the attacks. Writes {OUTPUT} (and {SETTINGS}) to the "
            "run folder or --out."
        ),
    )
    p.add_argument(
        "checkpoint",
        help=(
            "checkpoint file, run folder (with last.pt), or the folder of an `rts search` run "
            "(sweeps its stage-2 models); a URI (s3://...) is downloaded first"
        ),
    )
    p.add_argument(
        "--attack",
        default=None,
        help=(
            "comma-separated attacks: fgsm, pgd, mim, apgd, wgd (default pgd,apgd,wgd; "
            "a search run: its ensemble)"
        ),
    )
    p.add_argument(
        "--eps",
        default=None,
        help=(
            "budget in [0,1] pixel units (default 8/255); a search run takes a list, "
            "4/255,8/255, each under every --norm, or norm:eps items (linf:8/255,l2:0.5)"
        ),
    )
    p.add_argument(
        "--steps", type=int, default=None, help="steps of each attack (default 25; a run: its)"
    )
    p.add_argument(
        "--norm",
        default=None,
        help=(
            "linf, l2 or the compat l2-batch (default linf); a search run takes a list, "
            "linf,l2 (default: its norm)"
        ),
    )
    p.add_argument(
        "--trials",
        default=None,
        help="a search run: the stage-2 trials to sweep, e.g. s2-0001,s2-0003 (default all)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="a search run: print what the sweep would attack and what is there, attack nothing",
    )
    p.add_argument(
        "--step-size",
        default=None,
        help=(
            "step size of the fixed-step attacks only (pgd, mim, wgd; default eps/4, the paper's "
            "2/255 at 8/255); APGD keeps its own schedule (2*eps, halved), set it with "
            "--option apgd.step_size=S"
        ),
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="ATTACK.OPTION=VALUE",
        help=(
            "one attack's own option, repeatable: pgd.step_size=1/255, wgd.gamma=-1, "
            "wgd.select=cyclic, wgd.balance=gradient, apgd.rho=0.75, mim.decay=1 (see docs)"
        ),
    )
    p.add_argument(
        "--tasks",
        default=None,
        help="attacked task sets, comma-separated, e.g. 's,sd' (default: all the model's tasks)",
    )
    p.add_argument(
        "--chain",
        default=None,
        help=(
            "Definition 3: attacked sets each adding one task, e.g. d,dD,dDn,dDnE,sdDnE; "
            f"prints each set's adversarial vulnerability and its increments, writes {CHAIN}"
        ),
    )
    p.add_argument(
        "--eval-tasks", default=None, help="tasks to report (default: all the model's tasks)"
    )
    p.add_argument(
        "--weights", default=None, help="attack weights, e.g. 's=1,d=0.1' (default uniform)"
    )
    p.add_argument(
        "--gamma", default=None, help="WGD's exponent γ, any sign (= --option wgd.gamma=G)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per attack call (16; a search run: its stage-2 batch size)",
    )
    p.add_argument("--n", type=int, default=None, help="attack only the first N images")
    p.add_argument(
        "--split", choices=("val", "train"), default="val", help="data split (default val)"
    )
    p.add_argument(
        "--data",
        default=None,
        help="data source ('synthetic' or a Taskonomy folder); default: the checkpoint's",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i] (default auto)")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the random starts (default 0; a search run: its trial seed)",
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default: run folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint file: ``path`` itself, or in a run folder ``last.pt`` / the latest epoch."""
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint or run folder at {path}")
    if (path / "last.pt").is_file():
        return path / "last.pt"
    epochs = sorted(path.glob("epoch_*.pt"))
    if epochs:
        return epochs[-1]
    found = sorted(p.name for p in path.glob("*.pt"))
    raise ValueError(
        f"run folder {str(path)!r} has no last.pt or epoch_XXX.pt"
        + (f" (it has {', '.join(found)}; pass one of them)" if found else "")
    )


def _weights(text: str | None) -> dict[str, float] | None:
    if text is None:
        return None
    try:
        return parse_weights(text)
    except ValueError as exc:
        raise ValueError(f"--weights: {exc}") from None


def option(args: argparse.Namespace, name: str, defaults: Mapping[str, Any]) -> Any:
    """``args.<name>``, or its default in ``defaults`` when not given."""
    value = getattr(args, name)
    return defaults[name] if value is None else value


def check_args(
    args: argparse.Namespace, defaults: Mapping[str, Any] = CHECKPOINT_DEFAULTS
) -> dict[str, Any]:
    """Validate the cheap arguments before loading anything; the parsed values.

    ``defaults`` fill what was not given (:data:`CHECKPOINT_DEFAULTS`, or a run's own).
    """
    from rts.attacks.options import positive
    from rts.attacks.registry import (
        fixed_step_attacks,
        get_attack,
        parse_attacks,
        parse_budgets,
        parse_option_items,
    )

    attacks = parse_attacks(option(args, "attack", defaults))
    if option(args, "eps", defaults) is None:
        raise ValueError("a sweep of a search run needs --eps, e.g. --eps 4/255,8/255,16/255")
    budgets = parse_budgets(option(args, "eps", defaults), option(args, "norm", defaults))
    for name in attacks:
        for norm in dict.fromkeys(n for n, _ in budgets):
            if norm not in get_attack(name).norms:
                raise ValueError(
                    f"attack {name!r} does not support norm {norm!r}; it supports "
                    f"{', '.join(get_attack(name).norms)}"
                )
    for flag in ("steps", "batch_size"):
        value = option(args, flag, defaults)
        if value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.n is not None and args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    step_size = None
    if args.step_size is not None:
        step_size = positive("--step-size", args.step_size)
        if not set(attacks) & set(fixed_step_attacks()):
            raise ValueError(
                f"--step-size applies to the fixed-step attacks ({', '.join(fixed_step_attacks())})"
                f" only and --attack runs none of them; use --option {attacks[0]}.step_size=S"
            )
    options = parse_option_items(args.option)
    if args.gamma is not None:
        if "gamma" in options.get("wgd", {}):
            raise ValueError("--gamma and --option wgd.gamma both set WGD's gamma; give one")
        options.setdefault("wgd", {}).update(get_attack("wgd").parse_options({"gamma": args.gamma}))
    not_run = [a for a in options if a not in attacks]
    if not_run:
        raise ValueError(
            f"options for attack(s) {', '.join(not_run)} that --attack does not run "
            f"({', '.join(attacks)})"
        )
    if args.chain is not None and args.tasks is not None:
        raise ValueError("--chain and --tasks both name the attacked sets; give one")
    return {
        "attacks": attacks,
        "budgets": budgets,
        "step_size": step_size,
        "weights": _weights(args.weights),
        "options": options,
    }


SWEEP_ONLY = ("trials", "dry_run")
"""Options that only a search run's sweep takes."""


def check_single(args: argparse.Namespace, parsed: Mapping[str, Any], path: Path) -> None:
    """One checkpoint takes one budget and none of the sweep's options."""
    given = [f"--{o.replace('_', '-')}" for o in SWEEP_ONLY if getattr(args, o)]
    if len(parsed["budgets"]) > 1 or given:
        what = given[0] if given else "a list of --eps / --norm"
        raise ValueError(
            f"{what} sweeps the folder of an `rts search` run (with trials.parquet); "
            f"{path} is a checkpoint: give one --eps and one --norm"
        )


def run(args: argparse.Namespace) -> int:
    """Attack, print the table (and the chain), write ``attack.parquet`` and ``attack.json``;
    sweep a search run's models (:func:`sweep`)."""
    parsed = check_args(args)
    from rts.search.engine.storage import fetch
    from rts.search.results.sweep import is_search_run

    path = fetch(args.checkpoint)  # a URI is downloaded first
    if is_search_run(path):
        return sweep(args, path)
    check_single(args, parsed, path)
    return attack_checkpoint(args, parsed, resolve_checkpoint(path))


def attack_checkpoint(args: argparse.Namespace, parsed: Mapping[str, Any], ckpt: Path) -> int:
    """Attack one checkpoint with one budget (:func:`check_args`'s ``parsed`` values)."""
    ((norm, eps),) = parsed["budgets"]
    steps, seed, batch_size = (
        option(args, name, CHECKPOINT_DEFAULTS) for name in ("steps", "seed", "batch_size")
    )
    import dataclasses

    from tqdm.auto import tqdm

    from rts.attacks.chain import chain_table, format_chain, parse_chain
    from rts.attacks.evaluate import attack_per_image, parse_task_sets, robustness_table
    from rts.attacks.registry import get_attack
    from rts.attacks.skill import format_skill, model_skill
    from rts.models import load_checkpoint, resolve_device
    from rts.tasks.data import DataSpec, load_data
    from rts.tasks.io import atomic_path, atomic_write_text

    device = resolve_device(args.device)
    model, meta = load_checkpoint(ckpt, map_location=device)
    if args.chain is not None:
        sets = parse_chain(args.chain, model.tasks)
    else:
        sets = parse_task_sets(args.tasks, model.tasks)
    for keys in sets:
        missing = [k for k in keys if k not in model.tasks]
        if missing:
            raise ValueError(
                f"attacked task(s) {', '.join(missing)} not in the model; "
                f"the model has tasks {', '.join(model.tasks)}"
            )
    spec_fields = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    spec = DataSpec(**spec_fields)
    if args.data is not None:
        spec = dataclasses.replace(spec, source=args.data)
    train_set, val_set = load_data(spec, model.tasks)
    data = val_set if args.split == "val" else train_set
    if len(data) == 0:
        raise ValueError(f"the {args.split} split of {spec.source!r} is empty")
    total = min(len(data), args.n) if args.n else len(data)
    data = data.head(total)

    with tqdm(total=total, unit="img", desc="attack", disable=args.no_progress) as bar:
        per_image = attack_per_image(
            model,
            data,
            parsed["attacks"],
            ["".join(k) for k in sets],
            eps=eps,
            steps=steps,
            norm=norm,
            step_size=parsed["step_size"],
            weights=parsed["weights"],
            eval_tasks=args.eval_tasks,
            batch_size=batch_size,
            seed=seed,
            attack_options=parsed["options"],
            progress=bar.update,
        )
    table = robustness_table(per_image)
    skills = model_skill(per_image, train_set, data, batch_size=batch_size)
    out_dir = args.out if args.out is not None else ckpt.parent
    with atomic_path(out_dir / OUTPUT) as tmp:
        table.to_parquet(tmp, index=False)
    chain = None
    if args.chain is not None:
        chain = chain_table(per_image, sets, seed=seed)
        with atomic_path(out_dir / CHAIN) as tmp:
            chain.to_parquet(tmp, index=False)
    settings = {
        "checkpoint": str(ckpt),
        "attacks": list(parsed["attacks"]),
        "eps": eps,
        "steps": steps,
        "norm": norm,
        "step_size": parsed["step_size"],
        "step_rules": {a: get_attack(a).step_rule for a in parsed["attacks"]},
        "tasks": ["".join(k) for k in sets],
        "chain": args.chain is not None,
        "eval_tasks": args.eval_tasks,
        "weights": parsed["weights"],
        "attack_options": parsed["options"],
        "split": args.split,
        "n": total,
        "data": dataclasses.asdict(spec),
        "seed": seed,
        "device": str(device),
        "skill": skills,
    }
    atomic_write_text(out_dir / SETTINGS, json.dumps(settings, indent=2) + "\n")
    print(
        f"{ckpt}: {total} {args.split} images, "
        f"eps={option(args, 'eps', CHECKPOINT_DEFAULTS)} ({eps:.5f}), "
        f"{norm}, {steps} steps"
    )
    print(format_skill(skills))
    print(table[list(SHOWN)].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"wrote {out_dir / OUTPUT}")
    if chain is not None:
        print()
        print(format_chain(chain))
        print(f"wrote {out_dir / CHAIN}")
    return 0


# ------------------------------------------------------------------------------------------
# A search run: sweep its stage-2 models over budgets (rts attack RUN --eps ... --norm ...)


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
