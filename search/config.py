"""The search configuration: YAML → validated frozen dataclasses, ``key=value`` overrides.

A config is read with ``yaml.safe_load``, overrides such as ``search.n_trials=64`` or
``attack.eps=4/255`` are applied to the raw mapping, and one converter turns it into
:class:`SearchConfig`. Every unknown key and every bad value raises :class:`ConfigError` (a
``ValueError``) naming the path of the value, the value and what is allowed, e.g.
``search.encoders[1]: unknown encoder 'resnet19'; choose from resnet18, ...``; nothing is started
before the whole config is valid. The resolved config (defaults filled in, fractions evaluated)
is written next to the results and reads back to the same object, which is how a rerun of the same
command is recognised as a resume.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tasks.registry import TASK_KEYS, canonical_tasks, get_task

log = logging.getLogger(__name__)

Sampler = Literal["tpe", "random", "nsga2", "grid"]
Objective = Literal["vulnerability", "pareto"]
Stage1Metric = Literal["vuln", "clean_error", "grad_bound", "grad_bound_all"]
Scheme = Literal["uniform", "mtrobust", "optimal", "searched"]
Norm = Literal["linf", "l2"]

WEIGHT_SCHEMES: tuple[str, ...] = typing.get_args(Scheme)
SAME_ENCODER = "same"
"""``stage1.encoder`` value meaning "train the trial's own (searched) encoder in stage 1"."""


class ConfigError(ValueError):
    """A bad config value; the message starts with the value's path (``search.encoders[1]``)."""


# --------------------------------------------------------------------------------------------
# Schema


@dataclass(frozen=True)
class DataConfig:
    """The data every trial trains and is attacked on (``tasks.data.DataSpec``).

    Attributes:
        source: ``"synthetic"`` (rendered in memory, deterministically, on every node) or the
            path of a Taskonomy folder reachable at the same path on every node.
        size: image side in pixels.
        n: number of images (synthetic) or the cap on images read (folder).
        seed: seed of the synthetic scenes.
        convention: label normalisation, ``"mtrobust"`` or ``"taskgrouping"``.
        val_fraction: fraction of buildings held out for evaluation and attacks.
    """

    source: str = "synthetic"
    size: int = 64
    n: int = 256
    seed: int = 0
    convention: Literal["mtrobust", "taskgrouping"] = "mtrobust"
    val_fraction: float = 0.2


@dataclass(frozen=True)
class SpaceConfig:
    """What is searched, and how (the ``search:`` section).

    Attributes:
        main: the main task whose robustness is optimised.
        pool: candidate auxiliary tasks (task keys); ``None`` = every other task.
        min_aux: fewest auxiliary tasks in a candidate (0 allows the single-task model).
        max_aux: most auxiliary tasks in a candidate; ``None`` = the pool size.
        encoders: target encoder(s) of stage 2; several make the encoder a searched choice.
        objective: ``"vulnerability"`` (minimise the main task's relative vulnerability) or
            ``"pareto"`` (also minimise its clean error: a Pareto front, NSGA-II by default).
        sampler: Optuna sampler: ``tpe``, ``random``, ``nsga2`` or ``grid`` (the exhaustive
            mode: every configuration of the space once).
        n_trials: stage-1 trials; ``None`` = the size of the space (required finite: grid).
        seed: seed of the sampler; also of the trials unless ``trial_seed`` is set.
        trial_seed: seed of data order, model initialisation and attack noise in every trial
            (the same in every trial, so trials differ by their configuration only); ``None`` =
            ``seed``. Set it to vary the sampler while keeping the trials' random numbers (or
            the reverse: the same proposals retrained with other seeds).
    """

    main: str = "d"
    pool: str | None = None
    min_aux: int = 0
    max_aux: int | None = None
    encoders: tuple[str, ...] = ("resnet50",)
    objective: Objective = "vulnerability"
    sampler: Sampler | None = None
    n_trials: int | None = 16
    seed: int = 0
    trial_seed: int | None = None


@dataclass(frozen=True)
class WeightingConfig:
    """How the task losses are weighted (the ``weighting:`` section).

    Attributes:
        schemes: one or several of ``uniform`` (every task 1/M, the paper's baseline),
            ``mtrobust`` (main 1, the auxiliaries share ``aux_lambda`` equally, Mao et al.),
            ``optimal`` (main 1, the paper's weights of supplement App. B; auxiliaries s, d, n,
            D, E only) and ``searched`` (main 1, each auxiliary a searched weight in
            ``weight_range``). Several schemes make the scheme a searched choice.
        aux_lambda: total auxiliary weight of the ``mtrobust`` scheme.
        weight_range: ``[low, high]`` of a searched auxiliary weight (log-uniform), relative to
            the main task's weight of 1.
    """

    schemes: tuple[Scheme, ...] = ("uniform",)
    aux_lambda: float = 0.1
    weight_range: tuple[float, float] = (0.01, 1.0)


@dataclass(frozen=True)
class Stage1Config:
    """Stage 1, the surrogate: cheap models trained a few epochs, pruned by ASHA.

    Attributes:
        encoder: surrogate encoder, or ``"same"`` to train the trial's own encoder (needed when
            several encoders are searched: a fixed surrogate cannot rank encoders).
        epochs: epochs of a trial that is not pruned (ASHA's ``max_t``); 0 = a zero-training
            screen: every trial is only evaluated at initialisation (``scheduler: fifo``; useful
            with ``metric: grad_bound_all``, the one metric that differs between task subsets
            before training).
        decoder_width: decoder width of the surrogate model; ``None`` = the model default.
        batch_size: training batch size.
        lr: learning rate.
        scheduler: ``asha`` (prune on the primary metric) or ``fifo`` (no pruning).
        grace_period: epochs every trial gets before ASHA may stop it.
        reduction_factor: ASHA keeps about 1/reduction_factor of the trials at each rung.
        metric: what ranks stage-1 trials (lower is better), for ASHA's pruning, the sampler's
            objective and the choice of stage-2 candidates: ``vuln`` (the main task's relative
            vulnerability to the cheap attack), ``clean_error`` (its clean error),
            ``grad_bound`` (first-order bound of the attacked tasks' loss, no attack) or
            ``grad_bound_all`` (the same for the whole weighted training loss).
    """

    encoder: str = "resnet18"
    epochs: int = 3
    decoder_width: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    scheduler: Literal["asha", "fifo"] = "asha"
    grace_period: int = 1
    reduction_factor: int = 2
    metric: Stage1Metric = "vuln"


@dataclass(frozen=True)
class Stage2Config:
    """Stage 2, the target: the best stage-1 candidates trained in full and strongly attacked.

    Attributes:
        top_k: distinct stage-1 configurations carried over (not counting the single-task
            model).
        epochs: full training epochs.
        decoder_width: decoder width of the target model; ``None`` = the model default.
        batch_size: training batch size.
        lr: learning rate.
        uniform_twins: also train a uniform-weight twin of every non-uniform candidate, so the
            summary can say what the weights bought.
        baseline: also train the single-task model (of every encoder among the candidates), so
            the summary can say what the auxiliary tasks bought; ``false`` saves a full training
            when only the ranking matters.
    """

    top_k: int = 3
    epochs: int = 10
    decoder_width: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    uniform_twins: bool = True
    baseline: bool = True


@dataclass(frozen=True)
class AttackConfig:
    """The attacks (the ``attack:`` section); ``eps`` accepts fractions such as ``8/255``.

    Attributes:
        eps: perturbation budget in pixel units ([0, 1] images).
        norm: ``linf`` or ``l2``.
        step_size: step size; ``None`` = the attack's default (eps/4 for PGD).
        target: attacked tasks: ``main`` (a single-task attack on the main task, the paper's
            default) or ``all`` (a multi-task attack on every task of the model).
        images: validation images attacked per evaluation (the same ones in every trial).
        cheap: stage-1 attack, run after every epoch.
        cheap_steps: its steps.
        ensemble: stage-2 attacks.
        steps: steps of each stage-2 attack.
        aggregate: ``worst`` (per image, the strongest attack of the ensemble) or ``mean``.
    """

    eps: float = 8 / 255
    norm: Norm = "linf"
    step_size: float | None = None
    target: Literal["main", "all"] = "main"
    images: int = 64
    cheap: str = "pgd"
    cheap_steps: int = 3
    ensemble: tuple[str, ...] = ("pgd", "apgd", "wgd")
    steps: int = 25
    aggregate: Literal["worst", "mean"] = "worst"


@dataclass(frozen=True)
class ResourcesConfig:
    """Resources of one trial and failure handling (the ``resources:`` section).

    Attributes:
        cpus_per_trial: CPUs reserved per trial (also torch's thread count in the trial).
        gpus_per_trial: GPUs per trial, fractional allowed (0.5 = two trials share a GPU).
        max_concurrent: most trials at once; ``None`` = as many as the resources allow.
        max_failures: retries of a failed trial (0: a failure is recorded, the search goes on).
        device: ``auto`` (a GPU when the trial has one), ``cpu`` or ``cuda[:i]``.
    """

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    max_failures: int = 0
    device: str = "auto"


@dataclass(frozen=True)
class SearchConfig:
    """A whole search: ``rts search CONFIG`` reads one of these.

    Attributes:
        name: run name; results go to ``<storage>/<name>/`` (``runs/<name>/`` by default).
    """

    name: str = "search"
    data: DataConfig = field(default_factory=DataConfig)
    search: SpaceConfig = field(default_factory=SpaceConfig)
    weighting: WeightingConfig = field(default_factory=WeightingConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    attack: AttackConfig = field(default_factory=AttackConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    @property
    def trial_seed(self) -> int:
        """The seed of every trial: ``search.trial_seed``, else ``search.seed``."""
        s = self.search
        return s.seed if s.trial_seed is None else s.trial_seed

    @property
    def pool(self) -> str:
        """The auxiliary pool, resolved (registry order)."""
        return resolved_pool(self.search)

    @property
    def sampler(self) -> str:
        """The sampler, resolved (``nsga2`` for the Pareto objective, else ``tpe``)."""
        if self.search.sampler is not None:
            return self.search.sampler
        return "nsga2" if self.search.objective == "pareto" else "tpe"

    @property
    def max_aux(self) -> int:
        """The largest auxiliary subset, resolved."""
        if self.search.max_aux is None:
            return len(self.pool)
        return self.search.max_aux


RESULT_NEUTRAL_SECTIONS = ("resources",)
"""Sections that may change between a run and its resume: they do not change any result."""


# --------------------------------------------------------------------------------------------
# Loading, overrides, conversion


def load_config(
    path: str | Path | None = None, overrides: Sequence[str] = (), *, check: bool = True
) -> SearchConfig:
    """Read a YAML config, apply ``key=value`` overrides, convert and validate it.

    Args:
        path: YAML file; ``None`` starts from the defaults.
        overrides: ``section.key=value`` strings; values are parsed as YAML
            (``search.encoders=[resnet18,resnet50]``); ``a.b[1]=x`` sets one list item.
        check: also run the semantic checks of :func:`validate` (registries, ranges).

    Raises:
        ConfigError: unknown key, bad type or bad value, naming its path.
        FileNotFoundError: ``path`` does not exist.
    """
    raw: Any = {}
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"{path}: not valid YAML ({first})") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a config is a mapping of sections, got {_kind(raw)}")
    raw = apply_overrides(raw, overrides)
    cfg = from_dict(raw)
    if check:
        validate(cfg)
    return cfg


_OVERRIDE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*)=(.*)$")


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``raw`` with every ``path=value`` override applied (``value`` parsed as YAML)."""
    out = _deepcopy(raw)
    for item in overrides:
        m = _OVERRIDE.match(item)
        if not m:
            raise ConfigError(
                f"bad override {item!r}; write key=value with a dotted key, e.g. search.n_trials=64"
            )
        key, text = m.groups()
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        parts = re.findall(r"[A-Za-z_][A-Za-z0-9_]*|\[\d+\]", key)
        node: Any = out
        where = ""
        for part, nxt in itertools.pairwise([*parts, None]):
            index = int(part[1:-1]) if part.startswith("[") else None
            here = f"{where}{part}" if index is not None or not where else f"{where}.{part}"
            if nxt is None:
                _set(node, part if index is None else index, value, here)
            else:
                node = _child(node, part if index is None else index, nxt.startswith("["), here)
            where = here
    return out


def _child(node: Any, key: str | int, want_list: bool, where: str) -> Any:
    """The container at ``node[key]``, created (as a dict or list) when missing."""
    if isinstance(key, int):
        if not isinstance(node, list) or key >= len(node):
            raise ConfigError(f"{where}: no such list item")
        return node[key]
    if not isinstance(node, dict):
        raise ConfigError(f"{where}: cannot set a key inside a {_kind(node)}")
    if node.get(key) is None:
        node[key] = [] if want_list else {}
    return node[key]


def _set(node: Any, key: str | int, value: Any, where: str) -> None:
    if isinstance(key, int):
        if not isinstance(node, list) or key >= len(node):
            raise ConfigError(f"{where}: no such list item")
        node[key] = value
    elif isinstance(node, dict):
        node[key] = value
    else:
        raise ConfigError(f"{where}: cannot set a key inside a {_kind(node)}")


def from_dict(raw: Mapping[str, Any]) -> SearchConfig:
    """Convert a raw mapping (parsed YAML) into a :class:`SearchConfig`; types only, no registry
    checks. Unknown keys and wrong types raise :class:`ConfigError` with the value's path."""
    return _convert_dataclass(SearchConfig, raw, "")


def to_dict(cfg: SearchConfig) -> dict[str, Any]:
    """The config as plain YAML-safe data (tuples become lists); :func:`from_dict` inverts it."""
    return _plain(dataclasses.asdict(cfg))


def dump_config(cfg: SearchConfig) -> str:
    """The resolved config as YAML text (what ``config.yaml`` next to the results holds)."""
    return yaml.safe_dump(to_dict(resolve(cfg)), sort_keys=False)


def resolve(cfg: SearchConfig) -> SearchConfig:
    """``cfg`` with the derived defaults written out (pool, max_aux, sampler, n_trials)."""
    space = cfg.search
    n_trials = space.n_trials
    if n_trials is None:
        n_trials = space_size(cfg)
    return dataclasses.replace(
        cfg,
        search=dataclasses.replace(
            space,
            pool=cfg.pool,
            max_aux=cfg.max_aux,
            sampler=cfg.sampler,
            n_trials=n_trials,
            trial_seed=cfg.trial_seed,
        ),
    )


def diff_configs(a: SearchConfig, b: SearchConfig) -> list[str]:
    """Paths whose values differ between two configs, ignoring :data:`RESULT_NEUTRAL_SECTIONS`,
    as ``"path: old -> new"`` strings."""
    flat_a = _flatten(to_dict(resolve(a)))
    flat_b = _flatten(to_dict(resolve(b)))
    out = []
    for key in sorted(set(flat_a) | set(flat_b)):
        if key.split(".")[0] in RESULT_NEUTRAL_SECTIONS:
            continue
        if flat_a.get(key) != flat_b.get(key):
            out.append(f"{key}: {flat_a.get(key)!r} -> {flat_b.get(key)!r}")
    return out


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _convert_dataclass(cls: type, raw: Any, path: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a mapping of keys, got {_kind(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in fields:
            raise ConfigError(f"{where}: unknown key; choose from {', '.join(fields)}")
        kwargs[key] = _convert(value, hints[key], where)
    return cls(**kwargs)


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Convert one YAML value to the annotated type ``tp``, or raise naming ``path``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, {} if value is None else value, path)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], path)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(str(a) for a in args)
            raise ConfigError(f"{path}: unknown value {value!r}; choose from {choices}")
        return value
    if origin is tuple:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            value = [value]  # a single item where a list is expected
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, got {_kind(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{path}: expected a list of {len(args)} values, got {len(value)}")
        return tuple(
            _convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        return _float(value, path)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # a bug in the schema


def _float(value: Any, path: str) -> float:
    """A float from a number or a fraction string such as ``"8/255"``."""
    if isinstance(value, bool):
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(?:/\s*([0-9.eE+-]+)\s*)?", value)
        if m:
            try:
                num = float(m.group(1))
                den = float(m.group(2)) if m.group(2) else 1.0
                if den != 0:
                    return num / den
            except ValueError:
                pass
    raise ConfigError(f"{path}: expected a number or a fraction such as 8/255, got {value!r}")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _deepcopy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deepcopy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_deepcopy(v) for v in value]
    return value


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string"}.get(type(value), f"{value!r}")


# --------------------------------------------------------------------------------------------
# Semantic validation


def resolved_pool(space: SpaceConfig) -> str:
    """The auxiliary pool in registry order; the default is every task but the main one."""
    if space.pool is None:
        return "".join(k for k in TASK_KEYS if k != space.main)
    return canonical_tasks(space.pool)


def space_size(cfg: SearchConfig) -> int:
    """Number of distinct discrete configurations: subsets × encoders × weighting schemes.

    Searched weights are continuous; they count as one scheme here.
    """
    pool = len(cfg.pool)
    subsets = sum(math.comb(pool, k) for k in range(cfg.search.min_aux, cfg.max_aux + 1))
    return subsets * len(cfg.search.encoders) * len(cfg.weighting.schemes)


def validate(cfg: SearchConfig) -> None:
    """Check every value against the registries and ranges; raise :class:`ConfigError`."""
    _check_name(cfg.name)
    _check_data(cfg.data)
    _check_space(cfg)
    _check_weighting(cfg)
    _check_stages(cfg)
    _check_attack(cfg.attack)
    _check_resources(cfg.resources)


def _fail(path: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"{path}: {message}")


def _check_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        _fail("name", f"bad run name {name!r}; use letters, digits, '_', '-', '.'")


def _check_data(data: DataConfig) -> None:
    if data.source != "synthetic" and not Path(data.source).expanduser().is_dir():
        _fail("data.source", f"{data.source!r} is neither 'synthetic' nor an existing folder")
    if data.size < 16:
        _fail("data.size", f"must be at least 16 pixels, got {data.size}")
    if data.n < 4:
        _fail("data.n", f"must be at least 4 images, got {data.n}")
    if not 0.0 < data.val_fraction < 1.0:
        _fail("data.val_fraction", f"must be in (0, 1), got {data.val_fraction}")


def _check_task(path: str, key: str) -> None:
    try:
        get_task(key)
    except ValueError as exc:
        _fail(path, str(exc))


def _check_space(cfg: SearchConfig) -> None:
    space = cfg.search
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
        from models import OPTIMAL_AUX_WEIGHTS

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
    if s1.epochs < 0:
        _fail("stage1.epochs", f"must be >= 0 (0 = evaluate at initialisation), got {s1.epochs}")
    if s1.epochs == 0 and s1.scheduler == "asha":
        _fail(
            "stage1.epochs", "0 (a zero-training screen) has nothing to prune; set scheduler: fifo"
        )
    if s2.epochs < 1:
        _fail("stage2.epochs", f"must be >= 1, got {s2.epochs}")
    if cfg.search.objective == "pareto" and s1.metric == "clean_error":
        _fail("stage1.metric", "clean_error is already the Pareto objective's second axis")
    for name, st in (("stage1", s1), ("stage2", s2)):
        if st.batch_size < 1:
            _fail(f"{name}.batch_size", f"must be >= 1, got {st.batch_size}")
        if not st.lr > 0:
            _fail(f"{name}.lr", f"must be > 0, got {st.lr}")
        if st.decoder_width is not None and st.decoder_width < 1:
            _fail(f"{name}.decoder_width", f"must be >= 1, got {st.decoder_width}")
    if s1.scheduler == "asha" and not 1 <= s1.grace_period <= s1.epochs:
        _fail("stage1.grace_period", f"must be in [1, epochs={s1.epochs}], got {s1.grace_period}")
    if s1.reduction_factor < 2:
        _fail("stage1.reduction_factor", f"must be >= 2, got {s1.reduction_factor}")
    if s2.top_k < 0:
        _fail("stage2.top_k", f"must be >= 0, got {s2.top_k}")
    if s2.top_k == 0 and not s2.baseline:
        _fail("stage2.top_k", "0 with baseline: false leaves stage 2 nothing to train")


def _check_attack(a: AttackConfig) -> None:
    if not 0 < a.eps <= 1:  # the attacks' own rule, for every norm
        _fail("attack.eps", f"must be in (0, 1], got {a.eps}")
    if a.step_size is not None and not a.step_size > 0:
        _fail("attack.step_size", f"must be > 0, got {a.step_size}")
    if a.images < 1:
        _fail("attack.images", f"must be >= 1, got {a.images}")
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


def _check_resources(r: ResourcesConfig) -> None:
    if not r.cpus_per_trial > 0:
        _fail("resources.cpus_per_trial", f"must be > 0, got {r.cpus_per_trial}")
    if r.gpus_per_trial < 0:
        _fail("resources.gpus_per_trial", f"must be >= 0, got {r.gpus_per_trial}")
    if r.gpus_per_trial > 1 and r.gpus_per_trial != int(r.gpus_per_trial):
        _fail("resources.gpus_per_trial", f"above 1 must be whole, got {r.gpus_per_trial}")
    if r.max_concurrent is not None and r.max_concurrent < 1:
        _fail("resources.max_concurrent", f"must be >= 1, got {r.max_concurrent}")
    if r.max_failures < -1:
        _fail("resources.max_failures", f"must be >= -1 (-1 = retry forever), got {r.max_failures}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", r.device):
        _fail("resources.device", f"unknown device {r.device!r}; choose from auto, cpu, cuda[:i]")


# --------------------------------------------------------------------------------------------
# Registries of the other layers (imported lazily: they import torch)


def encoder_names() -> list[str]:
    """Registered encoder names (``models``), sorted."""
    from models import ENCODERS

    return sorted(ENCODERS)


def attack_names() -> list[str]:
    """Registered attack names (``attacks``), sorted."""
    from attacks import ATTACKS

    return sorted(ATTACKS)
