"""Semantic checks of a converted config against the registries and ranges.

Every failure is one :class:`ConfigError` naming the value's path, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

from rts.search.config.schema import (
    DEFAULT_SAMPLER_EPOCHS,
    SAME_ENCODER,
    WEIGHT_SCHEMES,
    AttackConfig,
    ConfigError,
    DataConfig,
    ResourcesConfig,
    SearchConfig,
    TrackingConfig,
    stage_resources,
)
from rts.search.config.studies import study_configs
from rts.tasks.registry import TASK_KEYS, canonical_tasks, get_task


def validate(cfg: SearchConfig, *, require_data: bool = True) -> None:
    """Check every value against the registries and ranges; raise :class:`ConfigError`.

    ``require_data=False`` (a dry run, which reads no data) accepts a data folder that does not
    exist here; :func:`missing_data` says so in one line.
    """
    _check_name(cfg.name)
    _check_data(cfg.data, require_data)
    if isinstance(cfg.search.main, str):
        _check_study(cfg)
    else:
        _check_mains(cfg.search.main)
        for main, study in zip(cfg.search.main, study_configs(cfg), strict=True):
            try:
                _check_study(study)
            except ConfigError as exc:
                raise ConfigError(f"search.main={main!r}: {exc}") from None
    _check_attack(cfg.attack)
    _check_resources(cfg.resources)
    for stage in (1, 2):  # the top level passed: a failure here is the stage's own value
        _check_resources(stage_resources(cfg, stage), f"stage{stage}.resources")
    _check_tracking(cfg.tracking)
    if cfg.replay is not None:
        _check_replay(cfg)


def _check_replay(cfg: SearchConfig) -> None:
    """The replay's tables exist and parse, and name the main task and every pool task."""
    from rts.search.config.replay import read_replay

    r = cfg.replay
    if not r.tables:
        _fail("replay.tables", "name at least the full-training table: {1.0: PATH}")
    for fraction in r.tables:
        if not 0 < fraction <= 1:
            _fail("replay.tables", f"fractions of training must be in (0, 1], got {fraction}")
    if 1.0 not in r.tables:
        _fail("replay.tables", f"needs the full-training values (key 1.0), got {sorted(r.tables)}")
    if r.skip_rows < 0:
        _fail("replay.skip_rows", f"must be >= 0, got {r.skip_rows}")
    letters = [c for c in r.columns if c != "_"]
    for i, key in enumerate(r.columns):
        if key != "_":
            _check_task(f"replay.columns[{i}]", key)
    if len(set(letters)) != len(letters) or not letters:
        _fail(
            "replay.columns",
            f"one distinct task letter per task column ('_' skips one), got {list(r.columns)}",
        )
    if cfg.weighting.schemes != ("uniform",):
        _fail(
            "weighting.schemes",
            "a replay holds one value per task set: use [uniform], got "
            f"{list(cfg.weighting.schemes)}",
        )
    for main, study in zip(
        (cfg.search.main,) if isinstance(cfg.search.main, str) else cfg.search.main,
        study_configs(cfg) if not isinstance(cfg.search.main, str) else (cfg,),
        strict=True,
    ):
        missing = [k for k in main + study.pool if k not in letters]
        if missing:
            _fail(
                "replay.columns",
                f"has no column for task(s) {''.join(missing)!r} of the search (main {main!r}, "
                f"pool {study.pool!r}); columns are {list(r.columns)}",
            )
    read_replay(r)  # raises ConfigError naming a file that does not parse


def _check_study(cfg: SearchConfig) -> None:
    """The checks of one main task's search (its space, weighting and stages)."""
    _check_space(cfg)
    _check_weighting(cfg)
    _check_stages(cfg)


def _check_mains(mains: tuple[str, ...]) -> None:
    """A list of main tasks: known task keys, each once."""
    if not mains:
        _fail("search.main", f"name at least one main task; choose from {TASK_KEYS}")
    for i, key in enumerate(mains):
        if len(key) != 1:
            _fail(f"search.main[{i}]", f"one task key, got {key!r}; choose from {TASK_KEYS}")
        _check_task(f"search.main[{i}]", key)
    twice = sorted({k for k in mains if mains.count(k) > 1})
    if twice:
        _fail("search.main", f"lists {twice[0]!r} twice: {list(mains)}")


def _fail(path: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"{path}: {message}")


def _check_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        _fail("name", f"bad run name {name!r}; use letters, digits, '_', '-', '.'")


def missing_data(data: DataConfig) -> str | None:
    """One line when ``data.source`` is a folder that does not exist here, else ``None``."""
    if data.source != "synthetic" and not Path(data.source).expanduser().is_dir():
        return f"data.source: {data.source!r} is neither 'synthetic' nor an existing folder"
    return None


def _check_data(data: DataConfig, require_data: bool = True) -> None:
    missing = missing_data(data)
    if missing and require_data:
        raise ConfigError(missing)
    if data.size < 16:
        _fail("data.size", f"must be at least 16 pixels, got {data.size}")
    if data.n < 4:
        _fail("data.n", f"must be at least 4 images, got {data.n}")
    if not 0.0 < data.val_fraction < 1.0:
        _fail("data.val_fraction", f"must be in (0, 1), got {data.val_fraction}")
    if data.workers is not None and data.workers < 0:
        _fail(
            "data.workers", f"must be >= 0 (0 = decode in the trial's process), got {data.workers}"
        )


def _check_task(path: str, key: str) -> None:
    try:
        get_task(key)
    except ValueError as exc:
        _fail(path, str(exc))


_TRIAL_FN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
MAX_SEEDS = 32
"""Most training seeds per stage-2 model (``stage2.seeds``)."""


def _check_space(cfg: SearchConfig) -> None:
    space = cfg.search
    if space.trial_fn is not None and not _TRIAL_FN.fullmatch(space.trial_fn):
        _fail("search.trial_fn", f"must be module:function, got {space.trial_fn!r}")
    if len(space.main) != 1:
        _fail("search.main", f"one task key, got {space.main!r}; choose from {TASK_KEYS}")
    _check_task("search.main", space.main)
    if space.pool is not None:
        for i, key in enumerate(k for k in space.pool if k not in ", "):
            _check_task(f"search.pool[{i}]", key)
        try:
            canonical_tasks(space.pool)
        except ValueError as exc:
            _fail("search.pool", str(exc))
        if space.main in space.pool:
            _fail("search.pool", f"holds the main task {space.main!r}; list auxiliaries only")
    pool = cfg.pool
    if space.min_aux < 0:
        _fail("search.min_aux", f"must be >= 0, got {space.min_aux}")
    if space.max_aux is not None and not space.min_aux <= space.max_aux <= len(pool):
        _fail(
            "search.max_aux",
            f"must be in [min_aux={space.min_aux}, pool size {len(pool)}], got {space.max_aux}",
        )
    if space.min_aux > len(pool):
        _fail("search.min_aux", f"exceeds the pool size {len(pool)}, got {space.min_aux}")
    if not space.encoders:
        _fail("search.encoders", "name at least one encoder")
    known = encoder_names()
    for i, name in enumerate(space.encoders):
        if name not in known:
            _fail(
                f"search.encoders[{i}]", f"unknown encoder {name!r}; choose from {', '.join(known)}"
            )
    if len(set(space.encoders)) != len(space.encoders):
        _fail("search.encoders", f"lists an encoder twice: {list(space.encoders)}")
    if space.n_trials is not None and space.n_trials < 1:
        _fail("search.n_trials", f"must be >= 1, got {space.n_trials}")
    if space.batch < 1:
        _fail(
            "search.batch", f"must be >= 1 (candidates per deterministic batch), got {space.batch}"
        )
    sampler = cfg.sampler
    if space.objective == "pareto" and sampler == "grid":
        _fail("search.sampler", "grid runs every configuration; use objective: vulnerability")
    if space.n_trials is None and sampler != "grid" and "searched" in cfg.weighting.schemes:
        _fail("search.n_trials", "searched weights make the space continuous; set n_trials")


def _check_weighting(cfg: SearchConfig) -> None:
    w = cfg.weighting
    if not w.schemes:
        _fail("weighting.schemes", f"name at least one scheme; choose from {WEIGHT_SCHEMES}")
    if len(set(w.schemes)) != len(w.schemes):
        _fail("weighting.schemes", f"lists a scheme twice: {list(w.schemes)}")
    if cfg.sampler == "grid" and "searched" in w.schemes:
        _fail(
            "weighting.schemes",
            "'searched' weights are continuous and cannot be enumerated by the grid sampler; "
            "choose from uniform, mtrobust, optimal",
        )
    if "optimal" in w.schemes:
        from rts.models import OPTIMAL_AUX_WEIGHTS

        missing = [k for k in cfg.pool if k not in OPTIMAL_AUX_WEIGHTS]
        if missing:
            _fail(
                "weighting.schemes",
                f"'optimal' weights exist for auxiliaries {', '.join(OPTIMAL_AUX_WEIGHTS)} only "
                f"(supplement App. B), but the pool has {', '.join(missing)}; choose from "
                "uniform, mtrobust, searched",
            )
    if w.aux_lambda <= 0:
        _fail("weighting.aux_lambda", f"must be > 0, got {w.aux_lambda}")
    low, high = w.weight_range
    if not 0 < low < high:
        _fail("weighting.weight_range", f"needs 0 < low < high, got [{low}, {high}]")


DESIGN_MODELS = {"pairs": ("hoa", "additive"), "triples": ("hoa", "additive", "pairwise")}
"""The effect models a stage-1 design identifies (pairwise interactions need two auxiliaries
together, so ``pairs`` fits main effects only)."""


def _check_design(cfg: SearchConfig) -> None:
    s1 = cfg.stage1
    if s1.design == "sampler":
        return
    allowed = DESIGN_MODELS[s1.design]
    if s1.model not in allowed:
        _fail(
            "stage1.design",
            f"{s1.design} trains only a design: stage 2 needs the effect model's predictions; "
            f"set stage1.model: {' or '.join(allowed)} (got {s1.model!r})",
        )
    if not cfg.pool:
        _fail("stage1.design", f"{s1.design} needs auxiliary tasks in search.pool")


def _check_stages(cfg: SearchConfig) -> None:
    s1, s2 = cfg.stage1, cfg.stage2
    known = encoder_names()
    if s1.encoder != SAME_ENCODER and s1.encoder not in known:
        _fail(
            "stage1.encoder",
            f"unknown encoder {s1.encoder!r}; choose from {SAME_ENCODER}, {', '.join(known)}",
        )
    if len(cfg.search.encoders) > 1 and s1.encoder != SAME_ENCODER:
        _fail(
            "stage1.encoder",
            f"several encoders are searched, so stage 1 must train each trial's own encoder "
            f"(a fixed surrogate cannot rank encoders); set stage1.encoder: {SAME_ENCODER}",
        )
    if s1.epochs is not None and s1.epochs < 0:
        _fail("stage1.epochs", f"must be >= 0 (0 = evaluate at initialisation), got {s1.epochs}")
    if s1.epochs == 0 and s1.scheduler == "asha":
        _fail(
            "stage1.epochs", "0 (a zero-training screen) has nothing to prune; set scheduler: fifo"
        )
    if s2.epochs < 1:
        _fail("stage2.epochs", f"must be >= 1, got {s2.epochs}")
    _check_design(cfg)
    if cfg.search.objective == "pareto" and s1.metric == "clean_error":
        _fail("stage1.metric", "clean_error is already the Pareto objective's second axis")
    for name, st in (("stage1", s1), ("stage2", s2)):
        if st.batch_size < 1:
            _fail(f"{name}.batch_size", f"must be >= 1, got {st.batch_size}")
        if not st.lr > 0:
            _fail(f"{name}.lr", f"must be > 0, got {st.lr}")
        if st.decoder_width is not None and st.decoder_width < 1:
            _fail(f"{name}.decoder_width", f"must be >= 1, got {st.decoder_width}")
        inits = output_init_names()
        if st.output_init not in inits:
            _fail(
                f"{name}.output_init",
                f"unknown output_init {st.output_init!r}; choose from {', '.join(inits)}",
            )
    epochs = s1.epochs if s1.epochs is not None else DEFAULT_SAMPLER_EPOCHS
    if s1.design == "sampler" and s1.scheduler == "asha" and not 1 <= s1.grace_period <= epochs:
        _fail("stage1.grace_period", f"must be in [1, epochs={epochs}], got {s1.grace_period}")
    if s1.reduction_factor < 2:
        _fail("stage1.reduction_factor", f"must be >= 2, got {s1.reduction_factor}")
    if s2.top_k < 0:
        _fail("stage2.top_k", f"must be >= 0, got {s2.top_k}")
    if not 1 <= s2.seeds <= MAX_SEEDS:
        _fail("stage2.seeds", f"must be an integer from 1 to {MAX_SEEDS}, got {s2.seeds!r}")
    if s2.top_k == 0 and not s2.baseline:
        _fail("stage2.top_k", "0 with baseline: false leaves stage 2 nothing to train")


def _check_attack(a: AttackConfig) -> None:
    if not 0 < a.eps <= 1:  # the attacks' own rule, for every norm
        _fail("attack.eps", f"must be in (0, 1], got {a.eps}")
    if a.step_size is not None and not a.step_size > 0:
        _fail("attack.step_size", f"must be > 0, got {a.step_size}")
    if a.images is not None and a.images < 1:
        _fail("attack.images", f"must be >= 1 (or null: the whole held-out split), got {a.images}")
    from rts.attacks.statistics import STATISTICS

    if a.statistic not in STATISTICS:
        _fail(
            "attack.statistic",
            f"unknown statistic {a.statistic!r}; choose from {', '.join(STATISTICS)}",
        )
    if a.cheap_steps < 1:
        _fail("attack.cheap_steps", f"must be >= 1, got {a.cheap_steps}")
    if a.steps < 1:
        _fail("attack.steps", f"must be >= 1, got {a.steps}")
    known = attack_names()
    if a.cheap not in known:
        _fail("attack.cheap", f"unknown attack {a.cheap!r}; choose from {', '.join(known)}")
    if not a.ensemble:
        _fail("attack.ensemble", f"name at least one attack; choose from {', '.join(known)}")
    for i, name in enumerate(a.ensemble):
        if name not in known:
            _fail(
                f"attack.ensemble[{i}]", f"unknown attack {name!r}; choose from {', '.join(known)}"
            )
    _check_attack_options(a)


def _check_attack_options(a: AttackConfig) -> None:
    """Each attack's options by the registry's parsers; a shared step that reaches no attack."""
    from rts.attacks import ATTACKS

    for name in (f.name for f in dataclasses.fields(a.options)):
        try:
            ATTACKS[name].parse_options(a.options.of(name))
        except ValueError as exc:
            _fail(f"attack.options.{name}", str(exc))
    run = {a.cheap, *a.ensemble}
    fixed = [n for n in ATTACKS if ATTACKS[n].fixed_step]
    if a.step_size is not None and not run & set(fixed):
        _fail(
            "attack.step_size",
            f"applies to the fixed-step attacks ({', '.join(fixed)}) only and none of them runs "
            f"here ({', '.join(sorted(run))}); set attack.options.<attack>.step_size instead",
        )


def _check_resources(r: ResourcesConfig, where: str = "resources") -> None:
    if not r.cpus_per_trial > 0:
        _fail(f"{where}.cpus_per_trial", f"must be > 0, got {r.cpus_per_trial}")
    if r.gpus_per_trial < 0:
        _fail(f"{where}.gpus_per_trial", f"must be >= 0, got {r.gpus_per_trial}")
    if r.gpus_per_trial > 1 and r.gpus_per_trial != int(r.gpus_per_trial):
        _fail(f"{where}.gpus_per_trial", f"above 1 must be whole, got {r.gpus_per_trial}")
    if r.max_concurrent is not None and r.max_concurrent < 1:
        _fail(f"{where}.max_concurrent", f"must be >= 1, got {r.max_concurrent}")
    if r.max_retries < -1:
        _fail(f"{where}.max_retries", f"must be >= -1 (-1 = retry forever), got {r.max_retries}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", r.device):
        _fail(f"{where}.device", f"unknown device {r.device!r}; choose from auto, cpu, cuda[:i]")


def _check_tracking(t: TrackingConfig) -> None:
    if t.mlflow is not None and t.mlflow.experiment == "":
        _fail("tracking.mlflow.experiment", "must not be empty (null = the run's name)")
    if t.wandb is not None and t.wandb.project == "":
        _fail("tracking.wandb.project", "must not be empty (null = the run's name)")


def encoder_names() -> list[str]:
    """Registered encoder names (``models``), sorted."""
    from rts.models import ENCODERS

    return sorted(ENCODERS)


def output_init_names() -> list[str]:
    """The output initialisations of ``models`` (:data:`rts.models.output.OUTPUT_INITS`)."""
    from rts.models.output import OUTPUT_INITS

    return list(OUTPUT_INITS)


def attack_names() -> list[str]:
    """Registered attack names (``attacks``), sorted."""
    from rts.attacks import ATTACKS

    return sorted(ATTACKS)
