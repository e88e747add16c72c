"""YAML → validated frozen dataclasses, ``key=value`` overrides, and back.

A config is read with ``yaml.safe_load``, overrides such as ``search.n_trials=64`` or
``attack.eps=4/255`` are applied to the raw mapping, and one converter turns it into the
dataclass. Every unknown key and every bad value raises :class:`ConfigError` (a ``ValueError``)
naming the path of the value, the value and what is allowed, e.g. ``search.encoders[1]: unknown
encoder 'resnet19'; choose from resnet18, ...``. The resolved config (defaults filled in, fractions
evaluated) is written next to the results and reads back to the same object, which is how a
rerun of the same command is recognised as a resume. ``rts train`` uses the same converter.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import types
import typing
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from rts.search.config.schema import (
    DEFAULT_SAMPLER_EPOCHS,
    REPLAY_TRIAL_FN,
    RESULT_NEUTRAL_SECTIONS,
    SAME_ENCODER,
    ConfigError,
    SearchConfig,
    main_tasks,
    space_size,
)
from rts.search.config.validate import validate
from rts.tasks.parsing import parse_fraction
from rts.tasks.registry import canonical_tasks
from rts.tasks.weights import parse_weights

T = TypeVar("T")


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
    raw = apply_overrides(read_yaml(path) if path is not None else {}, overrides)
    cfg = from_dict(raw)
    if check:
        validate(cfg)
    return cfg


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (``yaml.safe_load``; an empty file is ``{}``)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: not valid YAML ({first})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config is a mapping of keys, got {_kind(raw)}")
    return raw


_OVERRIDE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*)=(.*)$")


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``raw`` with every ``path=value`` override applied (``value`` parsed as YAML)."""
    out = _plain(raw)
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
    return convert(raw, SearchConfig)


def convert(raw: Mapping[str, Any], cls: type[T]) -> T:
    """Convert a raw mapping into the frozen dataclass ``cls`` (any config schema: the search's,
    ``rts train``'s); unknown keys and wrong types raise :class:`ConfigError` naming the path."""
    return _convert_dataclass(cls, raw, "")


def to_dict(cfg: SearchConfig) -> dict[str, Any]:
    """The config as plain YAML-safe data (tuples become lists); :func:`from_dict` inverts it."""
    return _plain(dataclasses.asdict(cfg))


def dump_config(cfg: SearchConfig) -> str:
    """The resolved config as YAML text (what ``config.yaml`` next to the results holds)."""
    return yaml.safe_dump(to_dict(resolve(cfg)), sort_keys=False)


def resolve(cfg: SearchConfig) -> SearchConfig:
    """``cfg`` with the derived defaults written out (pool, max_aux, sampler, n_trials).

    A one-item ``search.main`` list becomes its letter; with several main tasks, pool, max_aux
    and n_trials stay as written (each study resolves its own: :mod:`.studies`).
    """
    cfg = _resolve_stage1(_resolve_replay(cfg))
    space = cfg.search
    mains = main_tasks(space)
    if len(mains) == 1 and not isinstance(space.main, str):
        space = dataclasses.replace(space, main=mains[0])
        cfg = dataclasses.replace(cfg, search=space)
    if len(mains) > 1:
        pool = None if space.pool is None else canonical_tasks(space.pool)
        return dataclasses.replace(
            cfg,
            search=dataclasses.replace(
                space, pool=pool, sampler=cfg.sampler, trial_seed=cfg.trial_seed
            ),
        )
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


def _resolve_stage1(cfg: SearchConfig) -> SearchConfig:
    """``stage1.epochs`` written out: a fixed design left at the default trains with stage 2's
    recipe (so stage 2 reuses it); the sampler gets :data:`DEFAULT_SAMPLER_EPOCHS`."""
    s1, s2 = cfg.stage1, cfg.stage2
    if s1.epochs is not None:
        return cfg
    if s1.design == "sampler":
        return dataclasses.replace(
            cfg, stage1=dataclasses.replace(s1, epochs=DEFAULT_SAMPLER_EPOCHS)
        )
    full = dataclasses.replace(
        s1,
        encoder=SAME_ENCODER,
        epochs=s2.epochs,
        decoder_width=s2.decoder_width,
        batch_size=s2.batch_size,
        lr=s2.lr,
        output_init=s2.output_init,
        scheduler="fifo",
    )
    return dataclasses.replace(cfg, stage1=full)


def _resolve_replay(cfg: SearchConfig) -> SearchConfig:
    """A ``replay:`` config answers trials from its tables (``search.trial_fn`` set to the
    replay unless given) read by absolute paths (Ray runs trials in other folders)."""
    if cfg.replay is None:
        return cfg
    tables = {
        float(f): str(Path(p).expanduser().resolve()) if "://" not in p else p
        for f, p in cfg.replay.tables.items()
    }
    replay = dataclasses.replace(cfg.replay, tables=tables)
    space = cfg.search
    if space.trial_fn is None:
        space = dataclasses.replace(space, trial_fn=REPLAY_TRIAL_FN)
    return dataclasses.replace(cfg, replay=replay, search=space)


def diff_configs(a: SearchConfig, b: SearchConfig) -> list[str]:
    """Paths whose values differ between two configs, ignoring :data:`RESULT_NEUTRAL_SECTIONS`,
    as ``"path: old -> new"`` strings."""
    flat_a = _flatten(to_dict(resolve(a)))
    flat_b = _flatten(to_dict(resolve(b)))
    out = []
    for key in sorted(set(flat_a) | set(flat_b)):
        if any(key == s or key.startswith(s + ".") for s in RESULT_NEUTRAL_SECTIONS):
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


RETIRED = {
    "resources.max_failures": "replaced by resources.max_retries (retries of infrastructure "
    "faults only; a trial's own error is never retried)",
}
"""Keys of earlier versions, accepted (with a warning) and ignored, so their runs resume."""


def _convert_dataclass(cls: type, raw: Any, path: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a mapping of keys, got {_kind(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        where = f"{path}.{key}" if path else str(key)
        if where in RETIRED:
            warnings.warn(f"{where}: {RETIRED[where]}; ignored", stacklevel=2)
            continue
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
        listed = isinstance(value, list | tuple) or (isinstance(value, str) and "," in value)
        tuples = [a for a in inner if typing.get_origin(a) is tuple]
        return _convert(value, tuples[0] if listed and tuples else inner[0], path)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(str(a) for a in args)
            raise ConfigError(f"{path}: unknown value {value!r}; choose from {choices}")
        return value
    if origin is dict:
        if isinstance(value, str):  # "s=1,d=0.1": the one weights syntax
            try:
                value = parse_weights(value)
            except ValueError as exc:
                raise ConfigError(f"{path}: {exc}") from None
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {_kind(value)}")
        return {
            _convert(k, args[0], path): _convert(v, args[1], f"{path}.{k}")
            for k, v in value.items()
        }
    if origin is tuple:
        if isinstance(value, str):  # "a,b" on the command line; "" = empty
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, int | float) and not isinstance(value, bool):
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
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)  # an item of a comma-separated list
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
    try:
        return parse_fraction(value)
    except ValueError:
        raise ConfigError(
            f"{path}: expected a number or a fraction such as 8/255, got {value!r}"
        ) from None


def _plain(value: Any) -> Any:
    """A deep copy as plain YAML data: mappings become dicts, tuples lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string"}.get(type(value), f"{value!r}")
