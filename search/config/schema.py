"""The search configuration's schema: frozen dataclasses, one per YAML section.

Closed sets are ``Literal`` types; names that live in a registry (encoders, attacks, tasks) are
checked by :mod:`rts.search.config.validate` against the registry itself.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Literal

from rts.tasks.registry import TASK_KEYS, canonical_tasks

Sampler = Literal["tpe", "random", "nsga2", "grid", "gp"]


Objective = Literal["vulnerability", "pareto"]


Stage1Metric = Literal["vuln", "clean_error", "grad_bound", "grad_bound_all"]


Scheme = Literal["uniform", "mtrobust", "optimal", "searched"]


Norm = Literal["linf", "l2"]


WEIGHT_SCHEMES: tuple[str, ...] = typing.get_args(Scheme)


SAME_ENCODER = "same"
"""``stage1.encoder`` value meaning "train the trial's own (searched) encoder in stage 1"."""


class ConfigError(ValueError):
    """A bad config value; the message starts with the value's path (``search.encoders[1]``)."""


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
        cache_dir: node-local folder where the decoded data is written once per node and
            memory-mapped by every trial on it (``rts.tasks.cache``); ``null`` = each trial
            process decodes and holds its own copy.
        cache: ``false``: a folder is not decoded into memory at all (nor into ``cache_dir``):
            every batch is read from its PNG files, by ``workers`` DataLoader processes (for a
            folder larger than memory or the node's disk).
        workers: processes decoding a folder's batches when ``cache`` is ``false``, threads
            decoding it once otherwise (0: in the trial's process); ``null`` = ``min(4,
            resources.cpus_per_trial)``. The data are the same for any number.
    """

    source: str = "synthetic"
    size: int = 64
    n: int = 256
    seed: int = 0
    convention: Literal["mtrobust", "taskgrouping"] = "mtrobust"
    val_fraction: float = 0.2
    cache_dir: str | None = "~/.cache/rts/data"
    cache: bool = True
    workers: int | None = None


@dataclass(frozen=True)
class SpaceConfig:
    """What is searched, and how (the ``search:`` section).

    Attributes:
        main: the main task whose robustness is optimised; or a list of them (``[s, d, D,
            n, E]``): one study per main task in one run folder (:mod:`.studies`), each with
            the pool less its own main task.
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
        encoding: how samplers see an auxiliary subset: ``subset`` (its size, then one
            categorical over the subsets of that size) or ``per_task`` (one yes/no parameter per
            pool task, ``aux_s``, ``aux_D``, …, within ``min_aux``..``max_aux`` by construction),
            which lets TPE learn what each task does across subsets: the default, measured
            better (README, search efficiency at scale).
        trial_fn: ``"module:function"``: your own trial function, used instead of the built-in
            training and attacks (a plug-in point: another model family, your training code, a
            simulator). It is called as ``function(spec, session)`` in every trial
            (:mod:`rts.search.engine.trial` documents the contract); ``None`` = the built-in one.
        deterministic: ``true``: the same config gives the same tables, whatever the
            concurrency, the machine's load or interruptions: stage 1 proposes in batches of
            ``batch`` candidates, each batch seeing only the batches finished before it, and
            prunes at rung barriers (synchronous successive halving) instead of in arrival
            order. ``false``: the asynchronous study searcher + ASHA (more
            throughput on a large cluster; the answer can depend on timing).
        batch: candidates proposed together per stage-1 batch in deterministic mode (part of
            the result, unlike ``resources.max_concurrent``: at most this many trials run at
            once in stage 1).
    """

    main: str | tuple[str, ...] = "d"
    pool: str | None = None
    min_aux: int = 0
    max_aux: int | None = None
    encoders: tuple[str, ...] = ("resnet50",)
    objective: Objective = "vulnerability"
    sampler: Sampler | None = None
    n_trials: int | None = 16
    seed: int = 0
    trial_seed: int | None = None
    trial_fn: str | None = None
    encoding: Literal["subset", "per_task"] = "per_task"
    deterministic: bool = False
    batch: int = 4


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
class StageResources:
    """One stage's own resources (``stage1.resources``, ``stage2.resources``); a ``None`` field
    takes the top-level ``resources:`` value.

    Attributes:
        cpus_per_trial: CPUs reserved per trial of this stage (also torch's thread count).
        gpus_per_trial: GPUs per trial of this stage, fractional allowed.
        max_concurrent: most trials of this stage at once.
    """

    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None


@dataclass(frozen=True)
class Stage1Config:
    """Stage 1, the surrogate: cheap models trained a few epochs, pruned by ASHA.

    Attributes:
        encoder: surrogate encoder, or ``"same"`` to train the trial's own encoder (needed when
            several encoders are searched: a fixed surrogate cannot rank encoders).
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
        epochs: epochs of a trial that is not pruned (ASHA's ``max_t``); 0 = a zero-training
            screen: every trial is only evaluated at initialisation (``scheduler: fifo``; useful
            with ``metric: grad_bound_all``, the one metric that differs between task subsets
            before training).
            ``None`` (the default) = 3 for the ``sampler`` design, and for a
            fixed design (``pairs``, ``triples``) training *in full with stage 2's recipe*
            (its encoder, epochs, width, batch size, lr, output init and attacks), so that stage
            2 reuses those trials instead of retraining them (``stage2.reuse``). Written out by
            :func:`rts.search.config.convert.resolve`.
        model: ``none`` (stage 2 takes the best stage-1 trials) or a task-effect model fitted on
            the completed stage-1 trials' metric: ``hoa`` (Standley et al.'s higher-order
            approximation: a set's value is the mean of its pairs' values, the default),
            ``additive`` or ``pairwise`` (ridge regressions); stage 2 then takes the subsets it
            predicts best among every subset of the space, tried or not
            (``rts.search.results.effects``; uniform weights, the first encoder). The default,
            ``pairs`` in full with ``hoa`` and stage 2 training the 2 best-predicted sets not
            yet trained, was chosen on Standley et al.'s published tables (README, "Search
            quality on real results").
        output_init: ``default`` (the heads' own init) or ``standardise`` (every head starts at
            its training labels' mean and moves in units of their spread,
            :mod:`rts.models.output`; what makes the synthetic toy's depth heads trainable).
        resources: this stage's trial resources, overriding ``resources:`` (cheap surrogates
            can share a GPU that stage 2's full models each get alone).
        design: which candidates stage 1 trains: ``sampler`` (the sampler's ``n_trials``
            proposals), ``pairs`` (the main task alone and with each pool task: 1 + P trials,
            Standley et al.'s pairs, for ``model: additive``) or ``triples`` (also with every
            two pool tasks, for ``model: pairwise``), uniform weights and the first encoder, no
            pruning; the effect model then predicts every subset from them. Default ``pairs``.
    """

    encoder: str = "resnet18"
    epochs: int | None = None
    decoder_width: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    scheduler: Literal["asha", "fifo"] = "asha"
    grace_period: int = 1
    reduction_factor: int = 2
    metric: Stage1Metric = "vuln"
    model: Literal["none", "hoa", "additive", "pairwise"] = "hoa"
    output_init: str = "default"
    resources: StageResources = field(default_factory=StageResources)
    design: Literal["sampler", "pairs", "triples"] = "pairs"


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
        output_init: as :attr:`Stage1Config.output_init`.
        seeds: training seeds per stage-2 model (``search.trial_seed``, ``+1``, …): every
            finalist and the baseline is trained ``seeds`` times; the tables keep one row per
            seed, the recommendation and its interval use the mean over seeds (paired over the
            same seeds and images). One seed's ranking can be training noise.
        resources: as :attr:`Stage1Config.resources`.
        reuse: stage-1 trials trained in full with this stage's recipe (a design with
            ``stage1.epochs`` left at its default, or the same encoder, epochs, width, batch
            size, lr, output init and attacks) join stage 2 as they are, not retrained, and
            ``top_k`` counts only candidates not yet trained in full: stage 2 fully trains the
            best-predicted (or best-ranked) sets not yet trained, and the recommendation is
            made among everything trained in full. ``false``: retrain them.
    """

    top_k: int = 2
    epochs: int = 10
    decoder_width: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    uniform_twins: bool = True
    baseline: bool = True
    output_init: str = "default"
    seeds: int = 1
    resources: StageResources = field(default_factory=StageResources)
    reuse: bool = True


@dataclass(frozen=True)
class ReplayConfig:
    """Answer trials from a table of measured results instead of training (``replay:``).

    The whole pipeline (Ray Tune, Optuna, ASHA, both stages, resume, tables, summary,
    ``rts analyze``/``rts report``) runs on it in seconds, with compute charged per epoch as
    for real trials: a way to test a search policy on your own measurements (docs/search.md).
    A trial of ``epochs`` epochs reports, after epoch ``e``, the value measured at the largest
    fraction of training ``<= e / stage2.epochs`` (:mod:`rts.search.engine.replay`).

    Attributes:
        tables: fraction of a full training (``stage2.epochs``) → file of the values measured
            there; ``1.0`` is required. A file is one row per trained network and one column
            per task holding the network's value of that task (lower is better), empty where
            the network did not learn the task: a row's filled cells are its task set.
            ``.txt``/``.tsv``: tab-separated without header (Standley et al.'s files); ``.csv``
            with a header; ``.parquet``.
        columns: the task letter of each task column, in file order (``[s, d, n, k, e]``);
            ``_`` skips a column. Never guessed from the file.
        skip_rows: data rows skipped at the top of every file (Standley's first line holds
            half-size single-task networks: 1).
    """

    tables: dict[float, str] = field(default_factory=dict)
    columns: tuple[str, ...] = ()
    skip_rows: int = 0


REPLAY_TRIAL_FN = "rts.search.engine.replay:replay_trial"
"""``search.trial_fn`` of a config with a ``replay:`` section (set by ``resolve``)."""


@dataclass(frozen=True)
class StepOptions:
    """Options of a fixed-step attack (``attack.options.pgd``); ``None`` = the attack's default.

    Attributes:
        step_size: this attack's step size (wins over ``attack.step_size``).
        random_start: whether it starts from a random point of the ball.
    """

    step_size: float | None = None
    random_start: bool | None = None


@dataclass(frozen=True)
class MimOptions(StepOptions):
    """``attack.options.mim``: :class:`StepOptions` plus the momentum ``decay``."""

    decay: float | None = None


@dataclass(frozen=True)
class ApgdOptions(StepOptions):
    """``attack.options.apgd``: its *initial* step (default 2·eps), start, and ``rho``."""

    rho: float | None = None


@dataclass(frozen=True)
class WgdOptions(StepOptions):
    """``attack.options.wgd``: the WGD reading (``gamma``, ``select``, ``balance``;
    docs/attacks.md, "WGD")."""

    gamma: float | None = None
    select: str | None = None
    balance: str | None = None


@dataclass(frozen=True)
class AttackOptions:
    """Each attack's own options (``attack.options: {pgd: {step_size: 1/255}, wgd: {gamma:
    -1}}``), checked against the attack registry by :mod:`rts.search.config.validate`."""

    pgd: StepOptions = field(default_factory=StepOptions)
    mim: MimOptions = field(default_factory=MimOptions)
    apgd: ApgdOptions = field(default_factory=ApgdOptions)
    wgd: WgdOptions = field(default_factory=WgdOptions)

    def of(self, attack: str) -> dict[str, typing.Any]:
        """The options set for ``attack`` (``{}`` for an attack without options)."""
        values = getattr(self, attack, None)
        if values is None:
            return {}
        return {k: v for k, v in dataclasses.asdict(values).items() if v is not None}


@dataclass(frozen=True)
class AttackConfig:
    """The attacks (the ``attack:`` section); ``eps`` accepts fractions such as ``8/255``.

    Attributes:
        eps: perturbation budget in pixel units ([0, 1] images).
        norm: ``linf`` or ``l2``.
        step_size: step size of the fixed-step attacks (PGD, MIM, WGD); ``None`` = their
            default, the paper's ``eps/4``. Auto-PGD never takes it (its own schedule starts at
            ``2·eps``); set ``options.apgd.step_size`` for that.
        target: attacked tasks: ``main`` (a single-task attack on the main task, the paper's
            default) or ``all`` (a multi-task attack on every task of the model).
        images: validation images attacked per evaluation (the first ones, the same in every
            trial); ``None`` = the whole held-out split.
        cheap: stage-1 attack, run after every epoch.
        cheap_steps: its steps.
        ensemble: stage-2 attacks.
        steps: steps of each stage-2 attack.
        aggregate: ``worst`` (per image, the strongest attack of the ensemble) or ``mean``.
        statistic: what summarises the main task's per-image errors into the number trials are
            ranked by (:data:`rts.attacks.statistics.STATISTICS`): ``mean`` (the paper's mean of
            per-image relative increases), ``ratio_of_means`` (the published code's),
            ``median``, ``adv_error``. Every stage-2 value carries a 95 % bootstrap interval.
        options: each attack's own options (:class:`AttackOptions`), winning over ``step_size``.
    """

    eps: float = 8 / 255
    norm: Norm = "linf"
    step_size: float | None = None
    target: Literal["main", "all"] = "main"
    images: int | None = None
    cheap: str = "pgd"
    cheap_steps: int = 3
    ensemble: tuple[str, ...] = ("pgd", "apgd", "wgd")
    steps: int = 25
    aggregate: Literal["worst", "mean"] = "worst"
    statistic: str = "mean"
    options: AttackOptions = field(default_factory=AttackOptions)


@dataclass(frozen=True)
class ResourcesConfig:
    """Resources of one trial and failure handling (the ``resources:`` section).

    Attributes:
        cpus_per_trial: CPUs reserved per trial (also torch's thread count in the trial).
        gpus_per_trial: GPUs per trial, fractional allowed (0.5 = two trials share a GPU).
        max_concurrent: most trials at once; ``None`` = as many as the resources allow.
        max_retries: retries of a trial hit by an infrastructure fault (a lost node, a killed
            worker), each from its last checkpoint on a node still there; -1 = without limit. A
            trial that fails by itself (an exception, a NaN loss) is recorded ``failed`` and
            never retried (:mod:`rts.search.engine.faults`).
        device: ``auto`` (a GPU when the trial has one), ``cpu`` or ``cuda[:i]``.
    """

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    max_retries: int = 3
    device: str = "auto"


@dataclass(frozen=True)
class MlflowConfig:
    """``tracking.mlflow``: one MLflow run per trial (Ray's ``MLflowLoggerCallback``).

    Attributes:
        tracking_uri: MLflow tracking URI (``file:///abs/mlruns``, ``http://host:5000``);
            ``None`` = MLflow's default (``$MLFLOW_TRACKING_URI``, else ``./mlruns``).
        experiment: MLflow experiment name; ``None`` = the run's ``name``.
    """

    tracking_uri: str | None = None
    experiment: str | None = None


@dataclass(frozen=True)
class WandbConfig:
    """``tracking.wandb``: one W&B run per trial (Ray's ``WandbLoggerCallback``).

    Attributes:
        project: W&B project; ``None`` = the run's ``name``.
        group: W&B group of the trials' runs; ``None`` = the stage (``stage1``, ``stage2``).
    """

    project: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class TrackingConfig:
    """Where trials' per-epoch metrics go besides the run's tables (the ``tracking:`` section).

    Attributes:
        tensorboard: write TensorBoard event files, one folder per trial, under
            ``<run>/tensorboard/<stage>/<trial_id>`` (``tensorboard --logdir <run>/tensorboard``).
        mlflow: a mapping (``{}`` for the defaults) turns MLflow tracking on; needs the
            ``[mlflow]`` extra.
        wandb: a mapping turns Weights & Biases tracking on; needs the ``[wandb]`` extra.
    """

    tensorboard: bool = True
    mlflow: MlflowConfig | None = None
    wandb: WandbConfig | None = None


@dataclass(frozen=True)
class SearchConfig:
    """A whole search: ``rts search CONFIG`` reads one of these.

    Attributes:
        name: run name; results go to ``<storage>/<name>/`` (``runs/<name>/`` by default).
        replay: answer trials from measured results instead of training (:class:`ReplayConfig`).
    """

    name: str = "search"
    data: DataConfig = field(default_factory=DataConfig)
    search: SpaceConfig = field(default_factory=SpaceConfig)
    weighting: WeightingConfig = field(default_factory=WeightingConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    attack: AttackConfig = field(default_factory=AttackConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    replay: ReplayConfig | None = None

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


RESULT_NEUTRAL_SECTIONS = ("resources", "tracking", "stage1.resources", "stage2.resources")
"""Sections that may change between a run and its resume: they do not change any result."""


def stage_resources(cfg: SearchConfig, stage: int) -> ResourcesConfig:
    """The resources of ``stage``'s trials: ``resources:`` with ``stage<n>.resources`` over it."""
    own = (cfg.stage1 if stage == 1 else cfg.stage2).resources
    overrides = {k: v for k, v in dataclasses.asdict(own).items() if v is not None}
    return dataclasses.replace(cfg.resources, **overrides)


def main_tasks(space: SpaceConfig) -> tuple[str, ...]:
    """The main task(s) of ``search.main``, as a tuple (one for a single letter)."""
    return (space.main,) if isinstance(space.main, str) else tuple(space.main)


def is_multi(cfg: SearchConfig) -> bool:
    """Whether ``cfg`` runs several studies, one per main task (``search.main`` a list of two
    or more)."""
    return len(main_tasks(cfg.search)) > 1


def resolved_pool(space: SpaceConfig) -> str:
    """The auxiliary pool in registry order; the default is every task but the main one(s)."""
    if space.pool is None:
        return "".join(k for k in TASK_KEYS if k not in main_tasks(space))
    return canonical_tasks(space.pool)


def space_size(cfg: SearchConfig) -> int:
    """Number of distinct discrete configurations: subsets × encoders × weighting schemes.

    Searched weights are continuous; they count as one scheme here.
    """
    pool = len(cfg.pool)
    subsets = sum(math.comb(pool, k) for k in range(cfg.search.min_aux, cfg.max_aux + 1))
    return subsets * len(cfg.search.encoders) * len(cfg.weighting.schemes)


DEFAULT_SAMPLER_EPOCHS = 3
"""``stage1.epochs`` of the ``sampler`` design when left unset: a few surrogate epochs."""


def trains_in_full(cfg: SearchConfig) -> bool:
    """Whether stage-1 trials train with stage 2's recipe (resolved ``cfg``), so that stage 2
    can reuse them (``stage2.reuse``): the same encoder, epochs, decoder width, batch size, lr
    and output init, and no pruning. Such trials run stage 2's attacks too
    (:func:`rts.search.engine.trial.build_spec`)."""
    s1, s2 = cfg.stage1, cfg.stage2
    encoders = cfg.search.encoders
    same_encoder = s1.encoder == SAME_ENCODER or (len(encoders) == 1 and s1.encoder == encoders[0])
    unpruned = s1.design != "sampler" or s1.scheduler == "fifo"
    return (
        s1.epochs == s2.epochs
        and same_encoder
        and unpruned
        and (s1.decoder_width, s1.batch_size, s1.lr, s1.output_init)
        == (s2.decoder_width, s2.batch_size, s2.lr, s2.output_init)
    )


def reuses_stage1(cfg: SearchConfig) -> bool:
    """Whether stage 2 takes the stage-1 trials as they are (``stage2.reuse``, one training
    seed, stage 1 trained with stage 2's recipe: :func:`trains_in_full`)."""
    return cfg.stage2.reuse and cfg.stage2.seeds == 1 and trains_in_full(cfg)
