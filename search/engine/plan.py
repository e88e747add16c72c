"""What a search will cost, computed without running anything (``--dry-run``).

The one cost model of the project: a trial costs its epochs times its encoder's relative cost
(:attr:`rts.models.EncoderSpec.cost`, ResNet18 = 1), in ResNet18-epoch units.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from rts.search.config.convert import resolve
from rts.search.config.schema import (
    SAME_ENCODER,
    SearchConfig,
    reuses_stage1,
    stage_resources,
    trains_in_full,
)
from rts.search.config.studies import study_configs
from rts.search.engine.halving import expected_epochs, rung_epochs
from rts.search.engine.space import Space

log = logging.getLogger(__name__)


GPU_IMAGES_PER_S = 979.0
"""Training images per second of one ResNet18-epoch unit on one H100 at 256 px (ResNet18 + 5
decoders, bf16 + channels_last, batch 64; toolchain-facts.md): the GPU-hour estimate's rate."""


def gpu_hours(cfg: SearchConfig, plan: Plan) -> float:
    """Training GPU-hours of ``plan`` on one H100: units × training images × pixels / rate.

    Pixels scale with ``(size / 256)²``; attacks and evaluation are not counted.
    """
    images = cfg.data.n * (1 - cfg.data.val_fraction) * (cfg.data.size / 256) ** 2
    return plan.units_expected * images / GPU_IMAGES_PER_S / 3600


def _hours(h: float) -> str:
    return f"about {h:.0f}" if h >= 10 else f"about {h:.1f}" if h >= 0.1 else "under 0.1"


def encoder_cost(name: str) -> float:
    """Relative epoch cost of encoder ``name`` (:attr:`rts.models.EncoderSpec.cost`)."""
    from rts.models import get_encoder

    return get_encoder(name).cost


def trial_units(epochs: float, encoder: str) -> float:
    """Compute of ``epochs`` training epochs on ``encoder``, in ResNet18-epoch units."""
    return epochs * encoder_cost(encoder)


def exhaustive_cost(space: Space, epochs: int) -> tuple[int, float]:
    """Configurations and ResNet18-epoch units of training every configuration of ``space``
    for ``epochs`` epochs on its target encoder."""
    per_encoder = space.size // len(space.encoders)
    units = sum(per_encoder * trial_units(epochs, e) for e in space.encoders)
    return space.size, units


def encoder_costs(cfg: SearchConfig, stage: int) -> dict[str, float]:
    """Relative epoch cost of each encoder a trial of ``stage`` may train."""
    s1 = cfg.stage1.encoder
    names = cfg.search.encoders if stage == 2 or s1 == SAME_ENCODER else (s1,)
    return {e: encoder_cost(e) for e in names}


def mean_cost(costs: dict[str, float]) -> float:
    """The mean epoch cost of a trial drawing its encoder from ``costs`` uniformly."""
    return sum(costs.values()) / len(costs)


def stage1_epochs_per_trial(cfg: SearchConfig) -> float:
    """Expected epochs of one stage-1 trial (ASHA's rungs; all epochs without pruning)."""
    s1 = cfg.stage1
    scheduler = s1.scheduler if s1.design == "sampler" else "fifo"  # a design is not pruned
    return asha_expected_epochs(s1.epochs, s1.grace_period, s1.reduction_factor, scheduler)


def stage1_trial_count(cfg: SearchConfig) -> int:
    """Stage-1 trials: ``n_trials``, at most the space size for the grid sampler; a design's
    size for ``stage1.design``."""
    if cfg.stage1.design != "sampler":
        return len(Space.from_config(cfg).design(cfg.stage1.design))
    n = cfg.search.n_trials or Space.from_config(cfg).size
    if cfg.sampler == "grid":
        n = min(n, Space.from_config(cfg).size)
    return n


@dataclass(frozen=True)
class Plan:
    """What a search will do, computed without running anything (``--dry-run``)."""

    configurations: int
    continuous: bool
    subsets: int
    stage1_trials: int
    stage1_epochs_max: int
    stage1_epochs_expected: float
    stage2_trials_max: int
    estimated_trials: int
    exhaustive_configs: int
    exhaustive_units: float
    units_expected: float


def asha_expected_epochs(epochs: int, grace: int, factor: int, scheduler: str = "asha") -> float:
    """Expected epochs of one stage-1 trial: ASHA lets about ``1/factor`` of the trials past
    each rung (``grace · factor^k`` epochs) and the rest stop there."""
    if scheduler != "asha":
        return float(epochs)
    return expected_epochs(rung_epochs(epochs, grace, factor), factor)


MODES = ("deterministic", "asynchronous", "design")
"""How stage 1 runs (``search.deterministic`` true / false)."""


def mode_name(deterministic: bool, design: str = "sampler") -> str:
    """``"deterministic"`` or ``"asynchronous"`` (a sampler's stage 1), or ``"design"`` (a fixed
    stage-1 design, ``stage1.design``: no sampler, no pruning, whatever the mode)."""
    if design != "sampler":
        return MODES[2]
    return MODES[0] if deterministic else MODES[1]


def mode_text(mode: str, batch: int | None = None) -> str:
    """One line saying what ``mode`` promises (for the dry run, the summary and the report)."""
    if mode == MODES[2]:
        return (
            "fixed design (stage 1 trains a fixed set of candidates: no sampler, no pruning): "
            "the same config gives the same tables, with any concurrency, load or interruptions"
        )
    if mode == MODES[0]:
        size = f"batches of {batch}" if batch else "batches"
        return (
            f"deterministic (stage 1 proposes in {size} and prunes at rung barriers): the same "
            "config gives the same tables, with any concurrency, load or interruptions"
        )
    return (
        "asynchronous (the study searcher and ASHA act on the order trials report in): "
        "more throughput, but a rerun can choose differently; search.deterministic: true "
        "reproduces"
    )


def stage2_trainings(cfg: SearchConfig, space: Space, n1: int) -> int:
    """Stage 2's full trainings at most: the top k, their twins and the baseline(s).

    When stage 2 reuses stage 1's trials (:func:`~rts.search.config.schema.reuses_stage1`),
    ``top_k`` counts sets not yet trained and a design's single-task trial is the baseline:
    the reused trials are charged once, in stage 1.
    """
    s2 = cfg.stage2
    top = min(s2.top_k, space.size)
    twins = s2.top_k if s2.uniform_twins and set(space.schemes) - {"uniform"} else 0
    baselines = len(space.encoders) if s2.baseline else 0
    if reuses_stage1(cfg) and cfg.stage1.design != "sampler":
        top = min(s2.top_k, max(space.size - n1, 0))
        baselines = 0  # the design's first trial: the main task alone, trained in full
    return top + twins + baselines


def plan_search(cfg: SearchConfig) -> Plan:
    """The search-space size, trial counts and compute estimate of ``cfg``."""
    cfg = resolve(cfg)
    space = Space.from_config(cfg)
    n1 = stage1_trial_count(cfg)
    s1 = cfg.stage1
    per_trial = stage1_epochs_per_trial(cfg)
    n2 = stage2_trainings(cfg, space, n1)
    configs, units = exhaustive_cost(space, cfg.stage2.epochs)
    s1_cost = mean_cost(encoder_costs(cfg, 1))
    s2_cost = mean_cost(encoder_costs(cfg, 2))
    return Plan(
        configurations=space.size,
        continuous=space.continuous,
        subsets=len(space.subsets()),
        stage1_trials=n1,
        stage1_epochs_max=n1 * s1.epochs,
        stage1_epochs_expected=n1 * per_trial,
        stage2_trials_max=n2,
        estimated_trials=n1 + n2,
        exhaustive_configs=configs,
        exhaustive_units=units,
        units_expected=n1 * per_trial * s1_cost + n2 * cfg.stage2.epochs * s2_cost,
    )


def format_plan(cfg: SearchConfig, plan: Plan) -> str:
    """The dry-run text: space size, the stages, the estimated trial count and cost."""
    from rts.attacks.registry import format_eps

    cfg = resolve(cfg)
    space = Space.from_config(cfg)
    s1, s2, a = cfg.stage1, cfg.stage2, cfg.attack
    eps = format_eps(a.norm, a.eps)
    size = f"{plan.configurations} configurations" + (
        " (plus continuous searched weights)" if plan.continuous else ""
    )
    s1_enc = "each trial's own encoder" if s1.encoder == "same" else s1.encoder
    halving = "successive halving at rung barriers" if cfg.search.deterministic else "ASHA"
    sched = (
        f"{halving} on {s1.metric} (grace {s1.grace_period}, reduction factor "
        f"{s1.reduction_factor})"
        if s1.scheduler == "asha"
        else f"no pruning, ranked by {s1.metric}"
    )
    proposer = f"{cfg.sampler} sampler"
    if s1.design != "sampler":
        proposer = (
            f"{s1.design} design (the main task alone and with each pool task"
            + (", and with every two" if s1.design == "triples" else "")
            + f"; stage 2 takes the {s1.model} model's predictions)"
        )
        sched = "no pruning"
    attacked = "the main task" if a.target == "main" else "all tasks"
    reuse = reuses_stage1(cfg) and s1.design != "sampler"
    ratio = plan.units_expected / plan.exhaustive_units if plan.exhaustive_units else math.nan
    lines = [
        f"search {cfg.name!r}: main task {space.main!r}",
        f"search space: {len(space.subsets())} auxiliary subsets of {space.pool!r} "
        f"({space.min_aux}-{space.max_aux} tasks) x {len(space.schemes)} weighting scheme(s) "
        f"{list(space.schemes)} x {len(space.encoders)} encoder(s) {list(space.encoders)} "
        f"= {size}",
        f"objective: {cfg.search.objective} (minimise the main task's relative vulnerability"
        + (" and its clean error: Pareto front)" if cfg.search.objective == "pareto" else ")"),
        f"mode: {mode_text(mode_name(cfg.search.deterministic, s1.design), cfg.search.batch)}",
        f"stage 1 (surrogate): {plan.stage1_trials} trials, {proposer}, {s1_enc}, "
        f"{s1.epochs} epochs at most, "
        + (
            "trained in full with stage 2's recipe and attacks"
            if trains_in_full(cfg)
            else f"{a.cheap}-{a.cheap_steps} on {attacked} after every epoch"
        )
        + f", {sched}: <= {plan.stage1_epochs_max} trial-epochs, about "
        f"{plan.stage1_epochs_expected:.0f} expected",
        f"stage 2 (target): top {s2.top_k}"
        + (" not yet trained" if reuse else "")
        + (" + single-task baseline" if s2.baseline and not reuse else "")
        + (" + uniform-weight twins" if s2.uniform_twins else "")
        + f": <= {plan.stage2_trials_max} trials, {s2.epochs} epochs, "
        f"{', '.join(a.ensemble)} ({a.steps} steps, eps {eps} {a.norm}, {a.aggregate} case)"
        + (" on every held-out image" if a.images is None else f" on {a.images} held-out images")
        + f", ranked by the {a.statistic} statistic"
        + (
            f"; the {plan.stage1_trials} stage-1 trials (trained in full with this recipe, "
            "baseline included) join as they are"
            if reuse
            else ""
        ),
        f"estimated trials: {plan.estimated_trials} (about {plan.units_expected:.0f} "
        f"ResNet18-epoch units, {ratio:.0%} of an exhaustive search of "
        f"{plan.exhaustive_configs} configurations = {plan.exhaustive_units:.0f} units)",
        f"GPU estimate: {_hours(gpu_hours(cfg, plan))} H100-hours of training (bf16, "
        f"{GPU_IMAGES_PER_S:.0f} ResNet18 images/s at 256 px, scaled by pixels; attacks not "
        "counted)",
        f"resources: {_resources_text(cfg)}; data: {cfg.data.source}, {cfg.data.n} images of "
        f"{cfg.data.size} px",
    ]
    return "\n".join(lines)


def _resources_text(cfg: SearchConfig) -> str:
    """``1 CPU and 0 GPU per trial``, per stage when the stages differ."""
    texts = []
    for stage in (1, 2):
        r = stage_resources(cfg, stage)
        cap = f", at most {r.max_concurrent} at once" if r.max_concurrent else ""
        texts.append(f"{r.cpus_per_trial:g} CPU and {r.gpus_per_trial:g} GPU per trial{cap}")
    if texts[0] == texts[1]:
        return texts[0]
    return f"stage 1 {texts[0]}; stage 2 {texts[1]}"


def format_studies_plan(cfg: SearchConfig) -> str:
    """The dry-run text of a run of several main tasks: each study's plan, then the sums."""
    studies = study_configs(resolve(cfg))
    parts = []
    trials, units, hours = 0, 0.0, 0.0
    for study in studies:
        plan = plan_search(study)
        parts.append(format_plan(study, plan))
        trials += plan.estimated_trials
        units += plan.units_expected
        hours += gpu_hours(study, plan)
    mains = ", ".join(s.search.main for s in studies)
    parts.append(
        f"all {len(studies)} studies (main tasks {mains}): estimated trials {trials} (about "
        f"{units:.0f} ResNet18-epoch units), GPU estimate: {_hours(hours)} H100-hours of "
        "training"
    )
    return "\n\n".join(parts)
