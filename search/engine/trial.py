"""One trial of the search, without Ray: what it trains (:class:`TrialSpec`) and how it talks back.

A trial function has the signature ``trial_fn(spec, session) -> None``: it trains ``spec``
epoch by epoch and calls ``session.report(metrics, write_checkpoint)`` after every epoch. Ray
stays at the edge (:mod:`.trainable` builds the session from ``ray.tune``), so trial
functions run and test without Ray. :func:`run_trial` is the real one (models + attacks);
:func:`load_trial_fn` loads a user's own (``search.trial_fn: module:function``); the tests'
stand-ins (``tests/search/fake_trial.py``) plug in the same way.

Every trial of a search uses the same seed for data order, initialisation and attack noise, and
is attacked on the same validation images: common random numbers, so two trials differ by their
configuration and not by luck, which is what makes early (stage-1) rankings predictive.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rts.search.config.schema import (
    AttackConfig,
    ConfigError,
    DataConfig,
    ReplayConfig,
    SearchConfig,
    stage_resources,
    trains_in_full,
)
from rts.search.engine.space import Candidate
from rts.tasks.registry import canonical_tasks

log = logging.getLogger(__name__)

WriteCheckpoint = Callable[[Path], None]
"""Writes a trial's resumable state into the given (empty) folder."""


class TrialDiverged(RuntimeError):
    """A trial produced a non-finite loss or metric; it is recorded as failed."""


@dataclass(frozen=True)
class TrialSpec:
    """Everything one trial needs, as primitives (it crosses Ray and is stored with results).

    Attributes:
        stage: 1 (surrogate: cheap attack after every epoch) or 2 (target: attack ensemble at
            the end).
        candidate: the configuration under test (tasks, weights, target encoder).
        encoder: the encoder this trial trains (the surrogate in stage 1).
        epochs: epochs to train (the stage's budget; ASHA may stop stage 1 earlier).
        decoder_width: decoder width, ``None`` = the model default.
        batch_size: training batch size.
        lr: learning rate.
        data: the data spec.
        attack: the attack settings (eps, norm, step size, attacked tasks, images, aggregate).
        attacks: attacks run by this trial (stage 1: the cheap one; stage 2: the ensemble).
        attack_steps: steps of each attack.
        seed: seed of data order, initialisation and attack noise (the same in every trial).
        device: ``auto``, ``cpu`` or ``cuda[:i]``.
        threads: torch CPU threads (the trial's CPUs).
        data_tasks: tasks whose labels are loaded (main + the whole pool), so that every trial
            of a worker process shares one copy of the data; ``""`` = :attr:`tasks`.
        output_init: the decoders' output map (:func:`rts.models.apply_output_init`).
        replay: the tables a replayed trial is answered from (``replay:``), else ``None``.
        full_epochs: epochs of a full training (``stage2.epochs``): a replayed trial's epoch
            ``e`` is the fraction ``e / full_epochs`` of training.
    """

    stage: int
    candidate: Candidate
    encoder: str
    epochs: int
    decoder_width: int | None
    batch_size: int
    lr: float
    data: DataConfig
    attack: AttackConfig
    attacks: tuple[str, ...]
    attack_steps: int
    seed: int
    device: str = "auto"
    threads: int = 1
    data_tasks: str = ""
    output_init: str = "default"
    replay: ReplayConfig | None = None
    full_epochs: int = 0

    @property
    def tasks(self) -> str:
        """The tasks the model is trained on (registry order)."""
        return self.candidate.tasks

    @property
    def main(self) -> str:
        """The main task."""
        return self.candidate.main

    @property
    def attacked(self) -> str:
        """The attacked tasks: the main task alone (``attack.target: main``) or all of them."""
        return self.main if self.attack.target == "main" else self.tasks


class Reporter(Protocol):
    """``report(metrics, write_checkpoint=None)``: one epoch's metrics and optional state."""

    def __call__(
        self, metrics: Mapping[str, Any], write_checkpoint: WriteCheckpoint | None = None
    ) -> None: ...


@dataclass(frozen=True)
class TrialSession:
    """How a trial function talks to whatever runs it.

    Attributes:
        trial_id: the runner's id of this trial.
        report: called once per epoch with the metrics (``epoch`` included) and a function that
            writes the resumable state; may stop the trial by raising (Ray does when ASHA prunes).
        resume_dir: the folder of the last state written, when the trial is resumed, else None.
    """

    trial_id: str
    report: Reporter
    resume_dir: Path | None = None


TrialFn = Callable[[TrialSpec, TrialSession], None]


def build_spec(cfg: SearchConfig, candidate: Candidate, stage: int) -> TrialSpec:
    """The spec of ``candidate`` in ``stage`` under ``cfg``.

    A stage-1 trial that trains with stage 2's recipe (:func:`trains_in_full`) gets stage 2's
    spec, attacks included, so that stage 2 can reuse it as it is (``stage2.reuse``).
    """
    threads = max(1, int(stage_resources(cfg, stage).cpus_per_trial))
    if stage == 1 and trains_in_full(cfg):
        stage = 2
    if stage == 1:
        st = cfg.stage1
        encoder = candidate.encoder if st.encoder == "same" else st.encoder
        attacks, steps = (cfg.attack.cheap,), cfg.attack.cheap_steps
    elif stage == 2:
        st = cfg.stage2
        encoder = candidate.encoder
        attacks, steps = tuple(cfg.attack.ensemble), cfg.attack.steps
    else:
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    return TrialSpec(
        stage=stage,
        candidate=candidate,
        encoder=encoder,
        epochs=st.epochs,
        decoder_width=st.decoder_width,
        batch_size=st.batch_size,
        lr=st.lr,
        data=cfg.data,
        attack=cfg.attack,
        attacks=attacks,
        attack_steps=steps,
        seed=cfg.trial_seed,
        device=cfg.resources.device,
        threads=threads,
        data_tasks=canonical_tasks(candidate.main + cfg.pool),
        output_init=st.output_init,
        replay=cfg.replay,
        full_epochs=cfg.stage2.epochs,
    )


# --------------------------------------------------------------------------------------------
# The real trial: models.train with a report after every epoch, attacks.evaluate_robustness

_DATA_CACHE: dict[tuple, tuple[Any, Any]] = {}
_TRIVIAL_CACHE: dict[tuple, dict[str, float]] = {}


def trial_datasets(spec: TrialSpec) -> tuple[Any, Any]:
    """Train and validation sets with the labels of ``spec.data_tasks``, loaded once per
    process (a reused Ray actor runs many trials of the same search)."""
    from rts.tasks.data import load_data

    tasks = spec.data_tasks or spec.tasks
    key = (spec.data, tasks)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        workers = spec.data.workers
        workers = min(4, spec.threads) if workers is None else workers
        _DATA_CACHE[key] = load_data(data_spec(spec.data), tasks, workers=workers)
    return _DATA_CACHE[key]


def data_spec(data: DataConfig) -> Any:
    """The :class:`rts.tasks.data.DataSpec` of ``data`` (its fields, but how many workers
    decode, which is not part of what the data are)."""
    from rts.tasks.data import DataSpec

    fields = dataclasses.asdict(data)
    fields.pop("workers")
    return DataSpec(**fields)


def attack_probe(spec: TrialSpec, val_set: Any) -> Any:
    """The images every trial is attacked on: the first ``attack.images`` of ``val_set``."""
    n = len(val_set) if spec.attack.images is None else min(len(val_set), spec.attack.images)
    return val_set.head(n)


def _trivial_errors(spec: TrialSpec, train_set: Any, val_set: Any) -> dict[str, float]:
    """Error of the trivial predictor (training-split mean) on the validation split, per task;
    computed once per process and data (what every trial's skill is measured against)."""
    from rts.attacks.skill import trivial_val_errors

    tasks = spec.data_tasks or spec.tasks
    key = (spec.data, tasks)
    if key not in _TRIVIAL_CACHE:
        _TRIVIAL_CACHE.clear()
        _TRIVIAL_CACHE[key] = trivial_val_errors(train_set, val_set, tasks)
    return _TRIVIAL_CACHE[key]


def load_trial_fn(name: str) -> TrialFn:
    """The trial function named ``"module:function"`` (``search.trial_fn``).

    Raises:
        ConfigError: the module does not import or has no such callable.
    """
    import importlib

    module, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        raise ConfigError(f"search.trial_fn: cannot import {module!r} ({exc})") from None
    except AttributeError:
        raise ConfigError(f"search.trial_fn: module {module!r} has no {attr!r}") from None
    if not callable(fn):
        raise ConfigError(f"search.trial_fn: {name!r} is not callable")
    return fn


def run_trial(spec: TrialSpec, session: TrialSession) -> None:
    """Train ``spec`` epoch by epoch and report clean and adversarial metrics after each.

    Every epoch reports the weighted training loss, the clean error ``f_i`` of every task on the
    validation split (``clean_<task>``; ``clean_error`` = the main task's) and the resumable
    state (``last.pt`` of :func:`models.train`). Stage 1 also runs the cheap attack after every
    epoch, and once before training (epoch 0; all a trial of ``epochs == 0`` does); stage 2 runs
    the attack ensemble after the last epoch. Attacks use the first ``attack.images`` validation
    images and the trial seed, so every trial is attacked on the same images with the same
    random starts.

    Reported attack metrics: ``vuln`` (the main task's vulnerability under the stage's attack,
    the ensemble aggregated per ``attack.aggregate``, summarised by ``attack.statistic``),
    ``vuln_<attack>`` (per attack), ``n_undefined`` (images with clean error 0, left out of the
    ratio statistics), ``rv_<task>`` (every task's relative vulnerability under the aggregate),
    ``grad_bound`` (Lemma 2's first-order bound ``eps·E‖∂x L'‖_q`` of the attacked tasks, no
    attack), ``grad_bound_all`` (the same for the whole weighted training loss) and, in stage 2,
    ``vuln_low``/``vuln_high`` (the 95 % bootstrap interval of ``vuln`` over images),
    ``attack_rows`` (the full ``evaluate_robustness`` table as JSON) and ``image_rows`` (the main
    task's per-image clean and adversarial errors per attack, for paired comparisons).
    """
    import torch

    from rts.models import (
        DEFAULT_DECODER_WIDTH,
        SCHEDULES,
        WeightingSpec,
        apply_output_init,
        build_model,
        resolve_device,
        train,
    )
    from rts.models import evaluate as clean_evaluate

    torch.set_num_threads(spec.threads)
    device = resolve_device(spec.device)
    train_set, val_set = trial_datasets(spec)
    trivial = _trivial_errors(spec, train_set, val_set)
    probe = attack_probe(spec, val_set)
    width = spec.decoder_width or DEFAULT_DECODER_WIDTH
    model = build_model(spec.encoder, spec.tasks, decoder_width=width, seed=spec.seed)
    apply_output_init(model, train_set, spec.output_init, seed=spec.seed)
    model.to(device)
    weights = spec.candidate.weight_map
    resume = None
    if session.resume_dir is not None and (session.resume_dir / "last.pt").exists():
        resume = session.resume_dir / "last.pt"

    with tempfile.TemporaryDirectory(prefix="rts-trial-") as work:
        out_dir = Path(work)

        def write_state(folder: Path) -> None:
            shutil.copy2(out_dir / "last.pt", folder / "last.pt")

        if resume is None and spec.stage == 1:
            _, errors = clean_evaluate(model, val_set, batch_size=spec.batch_size)
            metrics = {"epoch": 0, **_clean_metrics(errors, spec.main, trivial)}
            metrics.update(attack_metrics(model, probe, spec))
            metrics["spread"] = main_spread(model, probe, spec.main)
            session.report(metrics)
        if spec.epochs == 0:  # a zero-training screen: the evaluation at initialisation only
            return
        schedule = dataclasses.replace(SCHEDULES["code"], lr=spec.lr).scaled(spec.epochs)

        def on_epoch(record: Any) -> bool:
            metrics: dict[str, Any] = {
                "epoch": record.epoch,
                "lr": record.lr,
                "train_loss": sum(
                    weights[k] * v for k, v in record.train_loss.items() if weights.get(k)
                ),
                **_clean_metrics(record.val_error, spec.main, trivial),
            }
            if spec.stage == 1 or record.epoch == spec.epochs:
                metrics.update(attack_metrics(model, probe, spec))
                metrics["spread"] = main_spread(model, probe, spec.main)
            session.report(metrics, write_state)
            return True

        train(
            model,
            train_set,
            val_set,
            WeightingSpec("manual", weights=weights),
            schedule,
            device,
            on_epoch,
            epochs=spec.epochs,
            batch_size=spec.batch_size,
            seed=spec.seed,
            out_dir=out_dir,
            resume_from=resume,
            # The data spec lets `rts attack CHECKPOINT` attack the same held-out images.
            meta={
                "search_stage": spec.stage,
                "main": spec.main,
                "data": dataclasses.asdict(data_spec(spec.data)),
            },
        )


def _clean_metrics(
    errors: Mapping[str, float], main: str, trivial: Mapping[str, float]
) -> dict[str, float]:
    """``clean_<task>``, ``skill_<task>`` (against the training mean) and the main task's
    ``clean_error`` and ``skill``."""
    from rts.attacks.skill import skills

    out = {f"clean_{k}": float(v) for k, v in errors.items()}
    out.update({f"skill_{k}": v for k, v in skills(errors, trivial).items()})
    out["clean_error"] = float(errors[main])
    out["skill"] = out.get(f"skill_{main}", math.nan)
    return out


def main_spread(model: Any, probe: Any, main: str) -> float:
    """How much the main task's prediction varies across the probe images, relative to its
    labels (:func:`rts.attacks.skill.prediction_spread`; NaN for segmentation)."""
    import torch

    from rts.attacks.skill import prediction_spread

    if main == "s" or len(probe) < 2:
        return math.nan
    x, y = next(iter(probe.batches(min(len(probe), 64))))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            pred = model(x.to(device), main)[main].float().cpu()
    finally:
        model.train(was_training)
    return prediction_spread(pred, y[main])


def attack_metrics(model: Any, probe: Any, spec: TrialSpec) -> dict[str, Any]:
    """Attack ``probe`` with the trial's attack(s); the reported metrics (see :func:`run_trial`)."""
    from rts.attacks.evaluate import WORST, evaluate_robustness
    from rts.attacks.metrics import first_order_vulnerability, input_gradients
    from rts.attacks.statistics import get_statistic, interval

    a = spec.attack
    attacked = spec.attacked
    table = evaluate_robustness(
        model,
        probe,
        list(spec.attacks),
        attacked,
        eps=a.eps,
        steps=spec.attack_steps,
        norm=a.norm,
        step_size=a.step_size,
        batch_size=spec.batch_size,
        seed=spec.seed,
        per_image=True,
        attack_options={n: a.options.of(n) for n in spec.attacks if a.options.of(n)},
    )
    table, images = table
    main_images = images[images["task"] == spec.main]
    statistic = get_statistic(a.statistic)

    def value(name: str) -> float:
        g = main_images[main_images["attack"] == name]
        return statistic(g["clean_error"].to_numpy(), g["adv_error"].to_numpy())

    out: dict[str, Any] = {}
    per_attack = {}
    for name in spec.attacks:
        per_attack[name] = value(name)
        out[f"vuln_{name}"] = per_attack[name]
    if len(spec.attacks) == 1:
        agg_name = spec.attacks[0]
    elif a.aggregate == "worst":
        agg_name = WORST
    else:
        agg_name = ""
    if agg_name:
        rows = table[table["attack"] == agg_name]
        out.update({f"rv_{r.task}": float(r.relative_vulnerability) for r in rows.itertuples()})
        out["vuln"] = value(agg_name)
        out["n_undefined"] = int(rows.loc[rows["task"] == spec.main, "n_undefined"].iloc[0])
    else:  # mean over the attacks, per task
        means = table[table["attack"] != WORST].groupby("task")["relative_vulnerability"].mean()
        out.update({f"rv_{k}": float(v) for k, v in means.items()})
        out["vuln"] = float(sum(per_attack.values()) / len(per_attack))
    x, y = next(iter(probe.batches(min(len(probe), 32))))
    device = next(model.parameters()).device
    x = x.to(device)
    y = {k: v.to(device) for k, v in y.items()}
    # Lemma 2 for the attacked tasks, and for the model's whole training loss (Theorem 4's joint
    # gradient Σ w_i r_i): at initialisation only the latter differs between task subsets.
    grads = input_gradients(model, x, y, spec.tasks)
    weights = spec.candidate.weight_map
    for column, keys in (("grad_bound", attacked), ("grad_bound_all", spec.tasks)):
        sub = {k: grads[k] for k in keys}
        total = sum(weights[k] for k in keys)
        w = {k: weights[k] / total for k in keys} if total > 0 else None
        bound = float(first_order_vulnerability(sub, w, eps=a.eps, norm=a.norm))
        out[column] = bound if math.isfinite(bound) else math.nan
    if spec.stage == 2:
        out["attack_rows"] = table.to_json(orient="records")
        out["image_rows"] = main_images.drop(columns=["attacked", "task"]).to_json(orient="records")
        if agg_name:  # the ranked number's 95 % interval over the attacked images
            g = main_images[main_images["attack"] == agg_name]
            _, out["vuln_low"], out["vuln_high"] = interval(
                g["clean_error"], g["adv_error"], a.statistic, seed=spec.seed
            )
    return out
