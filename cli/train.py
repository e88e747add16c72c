"""``rts train``: train one multi-task model and write its checkpoints and per-epoch metrics.

``rts train --tasks sdn --main s --encoder resnet18 --epochs 3 --data synthetic --out RUN``
trains a hard-sharing model (:func:`models.build_model` + :func:`models.train`) and writes to RUN:

* ``config.yaml``: the resolved settings (every option, defaults included);
* ``epoch_XXX.pt``: checkpoints after the epochs of ``--checkpoint-epochs`` and the last one;
* ``last.pt``: the latest state with optimizer / weighting / RNG (``--resume`` continues it);
* ``metrics.parquet``: one row per epoch (train loss, validation loss and error, weights).

Every option can also come from a YAML file (``--config FILE``, keys as the long options with
``_`` or ``-``); options on the command line win over the file. Arguments are checked before
torch is imported, so typos fail in well under a second.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rts.cli.attack import parse_weights
from rts.tasks.registry import parse_tasks

WEIGHTING_SCHEMES = ("uniform", "manual", "optimal", "mtrobust", "gradnorm", "uncertainty")
SCHEDULE_NAMES = ("code", "supplement")
PRECISIONS = ("auto", "fp32", "bf16")
CONVENTIONS = ("mtrobust", "taskgrouping")
REQUIRED = ("tasks", "out")


def _int(minimum: int) -> Callable[[Any, str], int]:
    def convert(value: Any, name: str) -> int:
        if isinstance(value, bool):
            value = None
        try:
            number = int(value)
            if isinstance(value, float) and number != value:
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be an integer, got {value!r}") from None
        if number < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {number}")
        return number

    return convert


def _float(positive: bool = False) -> Callable[[Any, str], float]:
    def convert(value: Any, name: str) -> float:
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or number < 0 or (positive and number == 0):
            bound = "> 0" if positive else ">= 0"
            raise ValueError(f"{name} must be a number {bound}, got {value!r}")
        return number

    return convert


def _choice(choices: tuple[str, ...]) -> Callable[[Any, str], str]:
    def convert(value: Any, name: str) -> str:
        if value not in choices:
            raise ValueError(f"unknown {name} {value!r}; choose from {', '.join(choices)}")
        return value

    return convert


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value.strip()


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def _int_list(value: Any, name: str) -> list[int]:
    """``"50,100"``, ``[50, 100]`` or ``""`` (none) → a list of integers >= 1."""
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        items = [v for v in str(value).replace(" ", "").split(",") if v]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError(f"{name} must be a comma-separated list of epochs, got {value!r}")
    return [_int(1)(v, name) for v in items]


def _weights(value: Any, name: str) -> dict[str, float]:
    if isinstance(value, Mapping):
        return {str(k): _float()(v, f"{name}.{k}") for k, v in value.items()}
    return parse_weights(_text(value, name)) or {}


def _path(value: Any, name: str) -> Path:
    return Path(_text(value, name)).expanduser()


# name → (converter, default, help). ``None`` defaults mean "not set" (the library decides).
OPTIONS: dict[str, tuple[Callable[[Any, str], Any], Any, str]] = {
    "tasks": (_text, None, "tasks to train, e.g. 'sdn' or 's,d,n' (required)"),
    "main": (_text, None, "main task (default: the first of --tasks)"),
    "encoder": (_text, "resnet18", "encoder: resnet18/34/50/101/152, wide_resnet50_2, xception"),
    "epochs": (_int(1), 150, "epochs of the schedule (default 150, the paper's)"),
    "data": (_text, "synthetic", "'synthetic' or a Taskonomy folder (default synthetic)"),
    "size": (_int(1), None, "image size in pixels (default 64)"),
    "n": (_int(1), None, "synthetic images (default 256)"),
    "data_seed": (_int(0), None, "seed of the synthetic data (default 0)"),
    "convention": (_choice(CONVENTIONS), None, "label decoding: mtrobust (default), taskgrouping"),
    "val_fraction": (_float(), None, "share of buildings held out for validation (0.2)"),
    "out": (_path, None, "run folder for checkpoints and metrics (required)"),
    "weighting": (_choice(WEIGHTING_SCHEMES), "uniform", "loss weighting (default uniform)"),
    "weights": (_weights, None, "manual weights, e.g. 's=1,d=0.1,n=0'"),
    "lam": (_float(), 0.1, "mtrobust: total weight of the auxiliaries (default 0.1)"),
    "alpha": (_float(), 1.5, "gradnorm: asymmetry alpha (default 1.5)"),
    "weighting_lr": (_float(True), 0.025, "gradnorm/uncertainty: Adam lr of the weights"),
    "schedule": (_choice(SCHEDULE_NAMES), "code", "code (Adam 1e-3; default) or supplement"),
    "lr": (_float(True), None, "initial learning rate (default: the schedule's)"),
    "momentum": (_float(), None, "SGD momentum (default: the schedule's)"),
    "weight_decay": (_float(), None, "weight decay (default: the schedule's, 0)"),
    "milestones": (_int_list, None, "epochs where lr drops 10x, e.g. '120,140' ('' = none)"),
    "batch_size": (_int(1), 32, "batch size (default 32)"),
    "decoder_width": (_int(1), 256, "decoder base width (default 256 = MTRobust; 16 is tiny)"),
    "encoder_weights": (_path, None, "local encoder state_dict to start from (weights_only)"),
    "seed": (_int(0), 0, "seed of init, shuffling and flips (default 0)"),
    "checkpoint_epochs": (_int_list, [], "also checkpoint after these epochs, e.g. '50,100'"),
    "device": (_text, "auto", "auto, cpu or cuda[:i] (default auto)"),
    "precision": (_choice(PRECISIONS), "auto", "auto (bf16 on CUDA, fp32 on CPU), fp32, bf16"),
    "threads": (_int(1), None, "torch CPU threads (default: torch's)"),
    "flip": (_bool, True, "random horizontal flips (default on)"),
    "resume": (_bool, False, "continue the run in --out from its last.pt"),
    "progress": (_bool, True, "progress bar (default on)"),
}
_FLAGS = {"flip": "--no-flip", "progress": "--no-progress", "resume": "--resume"}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Declare ``rts train``."""
    p = subparsers.add_parser(
        "train",
        help="train a multi-task model",
        description=(
            "Train a hard-sharing multi-task model (one encoder, one decoder per task) and "
            "write config.yaml, epoch_XXX.pt checkpoints, last.pt and metrics.parquet to --out. "
            "Options may also come from a YAML file (--config); the command line wins."
        ),
    )
    p.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="YAML file of options")
    for name, (_, _default, text) in OPTIONS.items():
        if name in _FLAGS:
            flag = _FLAGS[name]
            p.add_argument(
                flag,
                dest=name,
                action="store_const",
                const=flag == "--resume",
                default=argparse.SUPPRESS,
                help=text,
            )
            continue
        p.add_argument(
            "--" + name.replace("_", "-"), dest=name, default=argparse.SUPPRESS, help=text
        )
    p.set_defaults(func=run)
    return p


def resolve_options(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults ← ``--config`` YAML ← command line, each value checked; torch is not imported."""
    raw: dict[str, Any] = {}
    config = getattr(args, "config", None)
    if config is not None:
        raw.update(_read_config(Path(config)))
    raw.update({k: v for k, v in vars(args).items() if k in OPTIONS})
    opts: dict[str, Any] = {}
    for name, (convert, default, _) in OPTIONS.items():
        value = raw.get(name)
        opts[name] = default if value is None else convert(value, "--" + name.replace("_", "-"))
    for name in REQUIRED:
        if opts[name] is None:
            raise ValueError(f"--{name} is required (on the command line or in --config)")
    order = parse_tasks(opts["tasks"])
    opts["main"] = parse_tasks(opts["main"]) if opts["main"] else order[0]
    outside = [k for k in opts["main"] if k not in order]
    if outside:
        raise ValueError(f"--main {opts['main']!r} is not among --tasks {order!r}")
    opts["tasks"] = order
    if opts["weighting"] == "manual" and not opts["weights"]:
        raise ValueError("--weighting manual needs --weights, e.g. 's=1,d=0.1'")
    if opts["weights"] and opts["weighting"] != "manual":
        raise ValueError(f"--weights is only used with --weighting manual, not {opts['weighting']}")
    late = [e for e in opts["checkpoint_epochs"] if e > opts["epochs"]]
    if late:
        raise ValueError(f"--checkpoint-epochs {late} are after the last epoch {opts['epochs']}")
    if opts["data"] != "synthetic" and not Path(opts["data"]).expanduser().is_dir():
        raise FileNotFoundError(f"data folder not found: {opts['data']} (or use 'synthetic')")
    if opts["encoder_weights"] is not None and not opts["encoder_weights"].is_file():
        raise FileNotFoundError(f"encoder weights file not found: {opts['encoder_weights']}")
    last = opts["out"] / "last.pt"
    if last.exists() and not opts["resume"]:
        raise ValueError(
            f"{opts['out']} already holds a run (last.pt); pass --resume to continue it "
            "or choose another --out"
        )
    return opts


def _read_config(path: Path) -> dict[str, Any]:
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of options, got {type(raw).__name__}")
    out = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in OPTIONS:
            raise ValueError(
                f"{path}: unknown option {key!r}; choose from {', '.join(sorted(OPTIONS))}"
            )
        out[name] = value
    return out


def run(args: argparse.Namespace) -> int:
    """Train, print the per-epoch table, and say where the files are."""
    opts = resolve_options(args)

    import dataclasses

    import torch
    import yaml

    from rts.models import (
        SCHEDULES,
        WeightingSpec,
        build_model,
        get_encoder,
        make_weighting,
        records_frame,
        resolve_device,
        train,
    )
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
    print(
        f"training {opts['encoder']} on {tasks} (main {opts['main']}, {opts['weighting']} "
        f"weights) for {opts['epochs']} epochs on {device}: {len(train_set)} train / "
        f"{len(val_set)} val images of {data_spec.source}",
        file=sys.stderr,
    )
    records = train(
        model,
        train_set,
        val_set,
        weighting,
        schedule,
        device,
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
    frame = records_frame(records)
    shown = ["epoch", "seconds"] + [
        c for c in frame.columns if c.split("/")[0] in ("train_loss", "val_error", "weight")
    ]
    print(frame[shown].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    checkpoints = sorted(p.name for p in out.glob("epoch_*.pt"))
    print(f"wrote {out}: {', '.join(checkpoints)}, last.pt, metrics.parquet, config.yaml")
    return 0
