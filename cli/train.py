"""``rts train``: train one multi-task model and write its checkpoints and per-epoch metrics.

``rts train --tasks sdn --main s --encoder resnet18 --epochs 3 --data synthetic --out RUN``
trains a hard-sharing model (:func:`models.build_model` + :func:`models.train`) and writes to RUN:

* ``config.yaml``: the resolved settings (every option, defaults included);
* ``epoch_XXX.pt``: checkpoints after the epochs of ``--checkpoint-epochs`` and the last one;
* ``last.pt``: the latest state with optimizer / weighting / RNG (``--resume`` continues it);
* ``metrics.parquet``: one row per epoch (train loss, validation loss and error, weights).

Every option can also come from a YAML file (``--config FILE``, keys as the long options with
``_`` or ``-``) or a ``key=value`` override after the flags (``rts train --tasks sd --out r
epochs=3``): the file, then the flags, then the overrides win, all read by the search's config
converter (:mod:`rts.search.config.train`). Arguments are checked before torch is imported, so
typos fail in well under a second.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rts.search.config.train import TRAIN_KEYS, TrainConfig, load_train_config

HELP: dict[str, str] = {
    "tasks": "tasks to train, e.g. 'sdn' or 's,d,n' (required)",
    "main": "main task (default: the first of --tasks)",
    "encoder": "a registered encoder (default resnet18; a wrong name lists them)",
    "epochs": "epochs of the schedule (default 150, the paper's)",
    "data": "'synthetic' or a Taskonomy folder (default synthetic)",
    "size": "image size in pixels (default 64)",
    "n": "synthetic images (default 256)",
    "data_seed": "seed of the synthetic data (default 0)",
    "convention": "label decoding convention (default mtrobust)",
    "val_fraction": "share of buildings held out for validation (0.2)",
    "out": "run folder for checkpoints and metrics (required)",
    "weighting": "a registered loss weighting (default uniform)",
    "weights": "manual weights, e.g. 's=1,d=0.1,n=0'",
    "lam": "mtrobust: total weight of the auxiliaries (default 0.1)",
    "alpha": "gradnorm: asymmetry alpha (default 1.5)",
    "weighting_lr": "gradnorm/uncertainty: Adam lr of the weights",
    "schedule": "a registered schedule: code (Adam 1e-3; default), supplement, ...",
    "lr": "initial learning rate (default: the schedule's)",
    "momentum": "SGD momentum (default: the schedule's)",
    "weight_decay": "weight decay (default: the schedule's, 0)",
    "milestones": "epochs where lr drops 10x, e.g. '120,140' ('' = none)",
    "batch_size": "batch size (default 32)",
    "decoder_width": "decoder base width (default 256 = MTRobust; 16 is tiny)",
    "output_init": "decoders' output map: default, or standardise (start at the labels' mean)",
    "encoder_weights": "local encoder state_dict to start from (weights_only)",
    "seed": "seed of init, shuffling and flips (default 0)",
    "checkpoint_epochs": "also checkpoint after these epochs, e.g. '50,100'",
    "device": "auto, cpu or cuda[:i] (default auto)",
    "precision": "auto (bf16 on CUDA, fp32 on CPU), fp32, bf16",
    "threads": "torch CPU threads (default: torch's)",
    "flip": "random horizontal flips (default on)",
    "resume": "continue the run in --out from its last.pt",
    "progress": "progress bar (default on)",
}
"""Help per option; the options themselves are the fields of :class:`TrainConfig`."""

_FLAGS = {"flip": ("--no-flip", False), "progress": ("--no-progress", False)}
_FLAGS["resume"] = ("--resume", True)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Declare ``rts train``: one flag per :class:`TrainConfig` field, plus overrides."""
    p = subparsers.add_parser(
        "train",
        help="train a multi-task model",
        description=(
            "Train a hard-sharing multi-task model (one encoder, one decoder per task) and "
            "write config.yaml, epoch_XXX.pt checkpoints, last.pt and metrics.parquet to --out. "
            "Options may also come from a YAML file (--config) and key=value overrides; "
            "the file, then the flags, then the overrides win."
        ),
    )
    p.add_argument("--config", type=Path, default=None, help="YAML file of options")
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="overrides, e.g. epochs=3 lr=1e-4"
    )
    for name in TRAIN_KEYS:
        if name in _FLAGS:
            flag, const = _FLAGS[name]
            p.add_argument(
                flag,
                dest=name,
                action="store_const",
                const=const,
                default=argparse.SUPPRESS,
                help=HELP[name],
            )
        else:
            p.add_argument(
                "--" + name.replace("_", "-"),
                dest=name,
                default=argparse.SUPPRESS,
                help=HELP[name],
            )
    p.set_defaults(func=run)
    return p


def resolve_options(args: argparse.Namespace) -> TrainConfig:
    """The run's :class:`TrainConfig` from ``--config``, the flags and the overrides."""
    flags = {k: v for k, v in vars(args).items() if k in TRAIN_KEYS}
    # A flag's text is read like an override's value (YAML): --epochs 3 is epochs=3.
    texts = [f"{k}={v}" for k, v in flags.items() if isinstance(v, str)]
    plain = {k: v for k, v in flags.items() if not isinstance(v, str)}
    return load_train_config(args.config, plain, [*texts, *getattr(args, "overrides", [])])


def epoch_line(record: Any, epochs: int, trivial: dict[str, float]) -> str:
    """``epoch 3/10: val error d=0.0123 (skill 0.41), s=… ; train loss 0.52; 4.1 s``."""
    from rts.attacks.skill import skill

    parts = [f"{k}={v:.4g} (skill {skill(v, trivial[k]):.2f})" for k, v in record.val_error.items()]
    loss = sum(record.train_loss.values())
    return (
        f"epoch {record.epoch}/{epochs}: val error {', '.join(parts) or '-'}; "
        f"train loss {loss:.4g}; {record.seconds:.1f} s"
    )


def with_skill(frame: Any, trivial: dict[str, float], tasks: str) -> Any:
    """``frame`` (one row per epoch) with ``skill/<task>`` = 1 − val error / the trivial
    predictor's validation error (:func:`trivial_val_errors`)."""
    from rts.attacks.skill import skill

    frame = frame.copy()
    for k in tasks:
        frame[f"skill/{k}"] = [skill(v, trivial[k]) for v in frame[f"val_error/{k}"]]
    return frame


def _options(cfg: TrainConfig) -> dict[str, Any]:
    """The config as the plain values the run uses: canonical tasks, paths, lists."""
    import dataclasses

    from rts.tasks.registry import parse_tasks

    opts = dataclasses.asdict(cfg)
    opts["tasks"] = parse_tasks(cfg.tasks)
    opts["main"] = parse_tasks(cfg.main) if cfg.main else opts["tasks"][0]
    opts["out"] = Path(cfg.out).expanduser()
    opts["encoder_weights"] = (
        Path(cfg.encoder_weights).expanduser() if cfg.encoder_weights else None
    )
    opts["weights"] = dict(cfg.weights or {})
    opts["milestones"] = None if cfg.milestones is None else list(cfg.milestones)
    opts["checkpoint_epochs"] = list(cfg.checkpoint_epochs)
    return opts


def run(args: argparse.Namespace) -> int:
    """Train, print the per-epoch table, and say where the files are."""
    opts = _options(resolve_options(args))

    import dataclasses

    import torch
    import yaml

    from rts.attacks.skill import skill_flag
    from rts.models import (
        SCHEDULES,
        WeightingSpec,
        apply_output_init,
        build_model,
        get_encoder,
        make_weighting,
        records_frame,
        resolve_device,
        train,
    )
    from rts.search.results.tables import write_parquet
    from rts.tasks.data import DataSpec, load_data
    from rts.tasks.io import atomic_write_text

    if opts["threads"] is not None:
        torch.set_num_threads(opts["threads"])
    torch.manual_seed(opts["seed"])  # the CLI owns the process: seed globally too
    device = resolve_device(opts["device"])
    get_encoder(opts["encoder"])
    tasks = opts["tasks"]
    spec = WeightingSpec(
        scheme=opts["weighting"],
        main=opts["main"] if opts["weighting"] in ("optimal", "mtrobust") else None,
        weights=opts["weights"] or None,
        lam=opts["lam"],
        alpha=opts["alpha"],
        lr=opts["weighting_lr"],
    )
    weighting = make_weighting(spec, tasks)
    overrides = {
        k: opts[k] for k in ("lr", "momentum", "weight_decay", "milestones") if opts[k] is not None
    }
    schedule = dataclasses.replace(SCHEDULES[opts["schedule"]], **overrides)
    data_fields = {
        "source": opts["data"],
        "size": opts["size"],
        "n": opts["n"],
        "seed": opts["data_seed"],
        "convention": opts["convention"],
        "val_fraction": opts["val_fraction"],
    }
    data_spec = DataSpec(**{k: v for k, v in data_fields.items() if v is not None})

    out: Path = opts["out"]
    resume = out / "last.pt" if opts["resume"] and (out / "last.pt").exists() else None
    resolved = {k: (str(v) if isinstance(v, Path) else v) for k, v in opts.items()}
    resolved["data_spec"] = dataclasses.asdict(data_spec)
    resolved["schedule_resolved"] = {
        **dataclasses.asdict(schedule),
        "milestones": list(schedule.milestones),
    }
    resolved["device_resolved"] = str(device)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))

    train_set, val_set = load_data(data_spec, tasks, progress=opts["progress"])
    if len(val_set) == 0:
        raise ValueError(f"the validation split of {data_spec.source!r} is empty; add data")
    model = build_model(
        opts["encoder"],
        tasks,
        decoder_width=opts["decoder_width"],
        weights_path=opts["encoder_weights"],
        seed=opts["seed"],
    )
    if resume is None:  # a resumed model's output map comes back with its weights
        apply_output_init(model, train_set, opts["output_init"], seed=opts["seed"])
    print(
        f"training {opts['encoder']} on {tasks} (main {opts['main']}, {opts['weighting']} "
        f"weights) for {opts['epochs']} epochs on {device}: {len(train_set)} train / "
        f"{len(val_set)} val images of {data_spec.source}",
        file=sys.stderr,
    )
    from rts.attacks.skill import trivial_val_errors

    trivial = trivial_val_errors(train_set, val_set, tasks)

    def report(record: Any) -> None:
        from tqdm import tqdm

        tqdm.write(epoch_line(record, opts["epochs"], trivial), file=sys.stderr)

    records = train(
        model,
        train_set,
        val_set,
        weighting,
        schedule,
        device,
        report,
        epochs=opts["epochs"],
        batch_size=opts["batch_size"],
        seed=opts["seed"],
        checkpoint_epochs=sorted({*opts["checkpoint_epochs"], opts["epochs"]}),
        out_dir=out,
        resume_from=resume,
        precision=opts["precision"],
        flip=opts["flip"],
        progress=opts["progress"],
        meta={"data": dataclasses.asdict(data_spec), "main": opts["main"]},
    )
    frame = with_skill(records_frame(records), trivial, tasks)
    write_parquet(frame, out / "metrics.parquet")
    shown = ["epoch", "seconds"] + [
        c
        for c in frame.columns
        if c.split("/")[0] in ("train_loss", "val_error", "skill", "weight")
    ]
    print(frame[shown].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    flag = skill_flag(tasks, opts["main"], float(frame[f"skill/{opts['main']}"].iloc[-1]))
    if flag:
        print(flag, file=sys.stderr)
    checkpoints = sorted(p.name for p in out.glob("epoch_*.pt"))
    print(f"wrote {out}: {', '.join(checkpoints)}, last.pt, metrics.parquet, config.yaml")
    return 0
