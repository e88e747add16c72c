"""The search space: what a candidate is (:class:`Candidate`) and how a study trial proposes one
(:meth:`Space.define`, Optuna define-by-run). Samplers are in :mod:`.samplers`.

A point of the space is a :class:`Candidate`: the main task, a subset of the auxiliary pool, a
weighting scheme with its weights, and an encoder. The define-by-run function asks, in order:

1. which auxiliaries: with ``search.encoding: per_task`` (the default) one yes/no parameter
   ``aux_<task>`` per pool task; with ``subset``, how many (``n_aux``, an integer in
   ``[min_aux, max_aux]``), then which ones (``aux_<n>``: a categorical over the subsets of
   that size, each a task string such as ``"sD"``). Splitting by size lets TPE learn whether
   *more* tasks help (the paper's RQ1) separately from *which* tasks help, and keeps every
   subset of a given size equally likely under random sampling. The grid sampler instead
   enumerates one categorical ``aux`` over every subset, so the exhaustive mode visits each
   combination exactly once;
2. the weighting scheme (only when several are configured), then for ``searched`` one weight per
   *chosen* auxiliary (``w_<task>``, log-uniform, relative to the main task's weight of 1, the
   scale of the paper's "optimal" weights);
3. the encoder (only when several are configured).

Task subsets travel as strings, weights as a JSON object, so Optuna can store every parameter.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rts.tasks.registry import canonical_tasks

if TYPE_CHECKING:  # optuna/ray are imported where they are used
    import optuna

    from rts.search.config.schema import SearchConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """One configuration of the space: what a trial trains.

    Attributes:
        main: main task key.
        aux: auxiliary tasks in registry order (``""`` = the single-task model).
        scheme: weighting scheme (``uniform``, ``mtrobust``, ``searched``).
        weights: loss weights aligned with :attr:`tasks` (as the scheme defines them).
        encoder: the target encoder of this configuration.
    """

    main: str
    aux: str
    scheme: str
    weights: tuple[float, ...]
    encoder: str

    @property
    def tasks(self) -> str:
        """Main and auxiliary tasks in registry order (``"sdD"``)."""
        return canonical_tasks(self.main + self.aux)

    @property
    def weight_map(self) -> dict[str, float]:
        """``{task: weight}``."""
        return dict(zip(self.tasks, self.weights, strict=True))

    @property
    def weights_json(self) -> str:
        """The weights as a JSON object (how they are stored in results)."""
        return json.dumps(self.weight_map)

    @property
    def is_uniform(self) -> bool:
        """Whether every task has the same weight."""
        return max(self.weights) - min(self.weights) <= 1e-9

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Identity used to deduplicate candidates: tasks, rounded weights, encoder."""
        rounded = json.dumps([round(w, 4) for w in self.weights])
        return (self.main, self.aux, rounded, self.encoder)

    def to_config(self) -> dict[str, Any]:
        """The trial-config entries that identify this candidate (read by :func:`decode`)."""
        return {
            "main": self.main,
            "aux": self.aux,
            "scheme": self.scheme,
            "weights": self.weights_json,
            "encoder": self.encoder,
        }

    def uniform_twin(self) -> Candidate:
        """The same tasks and encoder with uniform weights."""
        n = len(self.tasks)
        return Candidate(self.main, self.aux, "uniform", (1.0 / n,) * n, self.encoder)


def scheme_weights(
    main: str,
    aux: str,
    scheme: str,
    *,
    aux_lambda: float = 0.1,
    searched: Mapping[str, float] | None = None,
) -> tuple[float, ...]:
    """Loss weights of ``main + aux`` (registry order) under ``scheme``, as the scheme defines
    them (not renormalised, so they match the paper's settings).

    * ``uniform``: every task ``1/M`` (the paper's baseline).
    * ``mtrobust``: main 1, the auxiliaries share ``aux_lambda`` equally (Mao et al.'s
      ``mt_lambda``).
    * ``optimal``: main 1, each auxiliary the paper's "optimal" weight (supplement App. B).
    * ``searched``: main 1, auxiliary ``k`` gets ``searched[k]``.

    The fixed schemes come from :func:`models.static_weights`, the one place they are defined.
    """
    from rts.models import static_weights

    tasks = canonical_tasks(main + aux)
    if scheme == "searched":
        if searched is None or any(k not in searched for k in aux):
            raise ValueError(f"searched weights need a weight for every auxiliary of {aux!r}")
        manual = {k: 1.0 if k == main else float(searched[k]) for k in tasks}
        weights = static_weights("manual", tasks, weights=manual)
    elif scheme in ("uniform", "mtrobust", "optimal"):
        weights = static_weights(scheme, tasks, main=main, lam=aux_lambda)
    else:
        raise ValueError(
            f"unknown weighting scheme {scheme!r}; choose from uniform, mtrobust, optimal, searched"
        )
    return tuple(float(weights[k]) for k in tasks)


@dataclass(frozen=True)
class Space:
    """The discrete and continuous choices of a search, and how to sample and decode them.

    Attributes:
        main: main task.
        pool: auxiliary pool (registry order).
        min_aux: fewest auxiliaries.
        max_aux: most auxiliaries.
        encoders: candidate encoders.
        schemes: candidate weighting schemes.
        aux_lambda: the ``mtrobust`` scheme's total auxiliary weight.
        weight_range: ``(low, high)`` of a searched auxiliary weight.
        grid: enumerate with one ``aux`` categorical (the exhaustive mode).
        encoding: how the sampler sees a subset: ``subset`` (a size, then one categorical over
            the subsets of that size) or ``per_task`` (one yes/no parameter ``aux_<task>`` per
            pool task, so a model-based sampler can learn what each task does).
    """

    main: str
    pool: str
    min_aux: int
    max_aux: int
    encoders: tuple[str, ...]
    schemes: tuple[str, ...] = ("uniform",)
    aux_lambda: float = 0.1
    weight_range: tuple[float, float] = (0.01, 1.0)
    grid: bool = False
    encoding: str = "subset"

    @classmethod
    def from_config(cls, cfg: SearchConfig) -> Space:
        """The space a config describes."""
        return cls(
            main=cfg.search.main,
            pool=cfg.pool,
            min_aux=cfg.search.min_aux,
            max_aux=cfg.max_aux,
            encoders=tuple(cfg.search.encoders),
            schemes=tuple(cfg.weighting.schemes),
            aux_lambda=cfg.weighting.aux_lambda,
            weight_range=tuple(cfg.weighting.weight_range),
            grid=cfg.sampler == "grid",
            encoding=cfg.search.encoding,
        )

    def subsets(self, size: int | None = None) -> list[str]:
        """Auxiliary subsets as strings, by size then registry order (``""`` = none)."""
        sizes = range(self.min_aux, self.max_aux + 1) if size is None else [size]
        out = []
        for n in sizes:
            out.extend("".join(c) for c in itertools.combinations(self.pool, n))
        return out

    @property
    def size(self) -> int:
        """Distinct discrete configurations (searched weights count once)."""
        subsets = sum(math.comb(len(self.pool), n) for n in range(self.min_aux, self.max_aux + 1))
        return subsets * len(self.encoders) * len(self.schemes)

    @property
    def continuous(self) -> bool:
        """Whether the space has continuous dimensions (searched weights)."""
        return "searched" in self.schemes

    def grid_space(self) -> dict[str, list[Any]]:
        """The grid sampler's search space: every parameter the define-by-run asks in grid mode."""
        space: dict[str, list[Any]] = {"aux": self.subsets()}
        if len(self.schemes) > 1:
            space["scheme"] = list(self.schemes)
        if len(self.encoders) > 1:
            space["encoder"] = list(self.encoders)
        return space

    def define(self, trial: optuna.Trial) -> dict[str, Any]:
        """Define-by-run: suggest one candidate on ``trial``; return its config entries."""
        if self.grid:
            aux = trial.suggest_categorical("aux", self.subsets())
        elif self.encoding == "per_task":
            aux = self._per_task(trial)
        else:
            if self.min_aux == self.max_aux:
                n_aux = self.min_aux
            else:
                n_aux = trial.suggest_int("n_aux", self.min_aux, self.max_aux)
            choices = self.subsets(n_aux)
            aux = (
                choices[0]
                if len(choices) == 1
                else trial.suggest_categorical(f"aux_{n_aux}", choices)
            )
        scheme = self.schemes[0]
        if len(self.schemes) > 1:
            scheme = trial.suggest_categorical("scheme", list(self.schemes))
        searched = None
        if scheme == "searched":
            low, high = self.weight_range
            searched = {k: trial.suggest_float(f"w_{k}", low, high, log=True) for k in aux}
        encoder = self.encoders[0]
        if len(self.encoders) > 1:
            encoder = trial.suggest_categorical("encoder", list(self.encoders))
        return self.candidate(aux, scheme, encoder, searched).to_config()

    def _per_task(self, trial: optuna.Trial) -> str:
        """One yes/no parameter per pool task, in pool order, within ``min_aux..max_aux``.

        A task is only asked while both answers keep the subset feasible: once ``max_aux``
        tasks are in, the rest are out; when the remaining tasks are all needed to reach
        ``min_aux``, they are in. The bounds hold by construction, never by repair.
        """
        chosen: list[str] = []
        for i, task in enumerate(self.pool):
            left = len(self.pool) - i
            if len(chosen) >= self.max_aux:
                break
            if len(chosen) + left <= self.min_aux:
                chosen.append(task)
                continue
            if trial.suggest_categorical(f"aux_{task}", [False, True]):
                chosen.append(task)
        return "".join(chosen)

    def design(self, kind: str) -> list[Candidate]:
        """The candidates of a stage-1 design (``stage1.design``): the main task alone, with
        each pool task (``pairs``) and with every two (``triples`` adds them); uniform-scheme
        weights of the first scheme and the first encoder, whatever ``min_aux..max_aux``."""
        subsets = ["", *self.pool]
        if kind == "triples":
            subsets += ["".join(p) for p in itertools.combinations(self.pool, 2)]
        return [self.candidate(a, self.schemes[0], self.encoders[0]) for a in subsets]

    def candidate(
        self,
        aux: str,
        scheme: str,
        encoder: str,
        searched: Mapping[str, float] | None = None,
    ) -> Candidate:
        """The candidate with auxiliaries ``aux`` (any order), weights from ``scheme``."""
        aux = canonical_tasks(aux) if aux else ""
        weights = scheme_weights(
            self.main, aux, scheme, aux_lambda=self.aux_lambda, searched=searched
        )
        return Candidate(self.main, aux, scheme, weights, encoder)

    def baseline(self, encoder: str | None = None) -> Candidate:
        """The single-task model of the main task (always trained in stage 2)."""
        return Candidate(self.main, "", "uniform", (1.0,), encoder or self.encoders[0])


def decode(config: Mapping[str, Any]) -> Candidate:
    """The candidate a trial config holds (the entries :meth:`Candidate.to_config` wrote)."""
    try:
        weights_map = json.loads(config["weights"])
        main, aux = str(config["main"]), str(config["aux"])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"trial config is not a candidate ({exc}): {dict(config)!r}") from None
    tasks = canonical_tasks(main + aux)
    if set(weights_map) != set(tasks):
        raise ValueError(f"weights {weights_map!r} do not match tasks {tasks!r}")
    weights = tuple(float(weights_map[k]) for k in tasks)
    return Candidate(main, aux, str(config["scheme"]), weights, str(config["encoder"]))


def candidate_key(config: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """The identity of the candidate a trial config holds (see :attr:`Candidate.key`)."""
    return decode(config).key
