"""``rts train``'s configuration: one frozen dataclass, read like the search's config.

Options come from a YAML file (``--config``; keys as the long options, ``-`` or ``_``), then the
command-line flags, then ``key=value`` overrides, all through the search's converter
(:func:`rts.search.config.convert.convert`), so types, unknown keys and error messages work the
same way (``epochs: expected an integer, got 'two'``). Names that live in a registry (encoders,
weighting schemes, schedules, label conventions, precisions) are checked against the registry.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rts.search.config.convert import apply_overrides, convert, read_yaml
from rts.search.config.schema import ConfigError
from rts.tasks.registry import parse_tasks


@dataclass(frozen=True)
class TrainConfig:
    """One ``rts train`` run. ``None`` means "not set": the library's default applies."""

    tasks: str = ""
    main: str | None = None
    encoder: str = "resnet18"
    epochs: int = 150
    data: str = "synthetic"
    size: int | None = None
    n: int | None = None
    data_seed: int | None = None
    convention: str | None = None
    val_fraction: float | None = None
    out: str = ""
    weighting: str = "uniform"
    weights: dict[str, float] | None = None
    lam: float = 0.1
    alpha: float = 1.5
    weighting_lr: float = 0.025
    schedule: str = "code"
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    milestones: tuple[int, ...] | None = None
    batch_size: int = 32
    decoder_width: int = 256
    output_init: str = "default"
    encoder_weights: str | None = None
    seed: int = 0
    checkpoint_epochs: tuple[int, ...] = ()
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    flip: bool = True
    resume: bool = False
    progress: bool = True


TRAIN_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrainConfig))


def load_train_config(
    path: str | Path | None, flags: Mapping[str, Any], overrides: Sequence[str] = ()
) -> TrainConfig:
    """Defaults ← YAML ``path`` ← ``flags`` (parsed command-line values) ← ``key=value``
    overrides; converted and validated without importing torch unless a registry is needed."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = {str(k).replace("-", "_"): v for k, v in read_yaml(path).items()}
    raw.update(flags)
    cfg = convert(apply_overrides(raw, overrides), TrainConfig)
    validate_train(cfg)
    return cfg


def _fail(key: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"{key}: {message}")


def _choose(key: str, value: str, names: Sequence[str]) -> None:
    if value not in names:
        _fail(key, f"unknown value {value!r}; choose from {', '.join(sorted(names))}")


def validate_train(cfg: TrainConfig) -> None:
    """Check ranges, task keys and registry names; raise :class:`ConfigError` naming the key.

    Cheap checks run first, so a typo fails before torch is imported.
    """
    if not cfg.tasks:
        _fail("tasks", "is required, e.g. tasks=sdn (--tasks sdn)")
    if not cfg.out:
        _fail("out", "is required: the run folder (--out runs/m)")
    tasks = parse_tasks(cfg.tasks)
    if cfg.main is not None and parse_tasks(cfg.main) not in tasks:
        _fail("main", f"{cfg.main!r} is not among tasks {tasks!r}")
    for key in ("epochs", "batch_size", "decoder_width", "size", "n", "threads"):
        value = getattr(cfg, key)
        if value is not None and value < 1:
            _fail(key, f"must be >= 1, got {value}")
    for key in ("seed", "data_seed"):
        value = getattr(cfg, key)
        if value is not None and value < 0:
            _fail(key, f"must be >= 0, got {value}")
    for key in ("lr", "weighting_lr"):
        value = getattr(cfg, key)
        if value is not None and not value > 0:
            _fail(key, f"must be a number > 0, got {value}")
    if cfg.val_fraction is not None and not 0 <= cfg.val_fraction < 1:
        _fail("val_fraction", f"must be in [0, 1), got {cfg.val_fraction}")
    late = [e for e in cfg.checkpoint_epochs if e > cfg.epochs]
    if late:
        _fail("checkpoint_epochs", f"{late} are after the last epoch {cfg.epochs}")
    if cfg.weighting == "manual" and not cfg.weights:
        _fail("weights", "weighting manual needs weights, e.g. weights=s=1,d=0.1")
    if cfg.weights and cfg.weighting != "manual":
        _fail("weights", f"only used with weighting manual, not {cfg.weighting}")
    if cfg.data != "synthetic" and not Path(cfg.data).expanduser().is_dir():
        raise FileNotFoundError(f"data folder not found: {cfg.data} (or use 'synthetic')")
    if cfg.encoder_weights is not None and not Path(cfg.encoder_weights).expanduser().is_file():
        raise FileNotFoundError(f"encoder weights file not found: {cfg.encoder_weights}")
    if (Path(cfg.out).expanduser() / "last.pt").exists() and not cfg.resume:
        _fail("out", f"{cfg.out} already holds a run (last.pt); pass --resume or another --out")
    _check_registries(cfg)


def _check_registries(cfg: TrainConfig) -> None:
    from rts.models import ENCODERS, OUTPUT_INITS, SCHEDULES
    from rts.models.train import Precision
    from rts.models.weighting import WEIGHTINGS
    from rts.tasks.encoding import CONVENTIONS

    _choose("encoder", cfg.encoder, list(ENCODERS))
    _choose("weighting", cfg.weighting, list(WEIGHTINGS))
    _choose("schedule", cfg.schedule, list(SCHEDULES))
    _choose("output_init", cfg.output_init, OUTPUT_INITS)
    _choose("precision", cfg.precision, typing.get_args(Precision))
    if cfg.convention is not None:
        _choose("convention", cfg.convention, CONVENTIONS)
    if cfg.weights:
        tasks = parse_tasks(cfg.tasks)
        from rts.tasks.weights import parse_weights

        try:
            parse_weights(cfg.weights, tasks)
        except ValueError as exc:
            _fail("weights", str(exc))
