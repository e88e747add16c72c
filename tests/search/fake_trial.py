"""Cheap stand-ins for the real trial: deterministic metrics from the configuration, no torch.

They exercise the whole orchestration (Ray Tune, Optuna, ASHA, resume, failures, the two
stages, the results table) in seconds, and measure the search's own overhead per trial. The
metrics follow a known oracle: each auxiliary task ``k`` moves the main task's vulnerability by
``MARGINAL[k]`` (scaled by its weight relative to the main task), every epoch of training
lowers it by the same amount for every configuration, so rankings are the same at every epoch
and the best configuration of a space is known in closed form (:func:`fake_vulnerability`).
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rts.search.engine.space import Candidate
from rts.search.engine.trial import TrialSession, TrialSpec

MARGINAL = {
    "s": -0.20,
    "d": 0.10,
    "D": -0.05,
    "n": 0.15,
    "k": -0.10,
    "K": 0.05,
    "e": 0.20,
    "E": -0.15,
    "p": 0.08,
    "r": -0.02,
    "A": 0.12,
}
"""Marginal vulnerability of each auxiliary task in the fake oracle (negative = more robust)."""

FAKE_SKILL = 0.8
"""Main-task skill every fake model reports: they all "learned", so no skill flag is raised."""

ENCODER_FACTOR = {"resnet18": 1.0, "resnet34": 1.05, "resnet50": 1.1}
"""Multiplicative vulnerability factor of an encoder in the fake oracle (others: 1.0)."""


def fake_vulnerability(candidate: Candidate, encoder: str, epoch: int | None = None) -> float:
    """The fake main-task vulnerability of ``candidate`` trained on ``encoder``.

    ``epoch=None`` is the converged value; after ``epoch`` epochs it is that plus ``0.3/epoch``
    (epoch 0, before training, is 2.0 for every configuration).
    """
    if epoch == 0:
        return 2.0
    w = candidate.weight_map
    base = 1.0 + sum(MARGINAL[k] * w[k] / w[candidate.main] for k in candidate.aux)
    base *= ENCODER_FACTOR.get(encoder, 1.0)
    return base + (0.3 / epoch if epoch else 0.0)


def fake_grad_bound_all(candidate: Candidate, encoder: str) -> float:
    """Fake whole-loss gradient bound: the converged vulnerability at every epoch, so a
    zero-training screen on it (``stage1.epochs: 0``) ranks like the converged truth."""
    return 0.5 * fake_vulnerability(candidate, encoder)


def fake_clean_error(candidate: Candidate, epoch: int | None = None) -> float:
    """Fake clean error: falls with training and rises with every auxiliary (a trade-off)."""
    e = 1.0 if epoch == 0 else 0.2 + 0.05 * len(candidate.aux)
    return e + (0.2 / epoch if epoch else 0.0)


@dataclass(frozen=True)
class FakeTrial:
    """A trial function with fake metrics (see the module docstring).

    Attributes:
        sleep_s: seconds slept per epoch (simulated training).
        jitter_s: up to this many seconds more per epoch, drawn from an unseeded generator, so
            that the order in which concurrent trials report changes from run to run.
        fail_on: auxiliary task; a trial training it raises ``RuntimeError`` at epoch 1.
        nan_on: auxiliary task; a trial training it reports a NaN loss at epoch 1.
        log_path: file that gets one JSON line per event (``start``, ``epoch``, with the Ray
            node it ran on), to check what ran, resumed or stopped, and where.
        noise: standard deviation of a deterministic Gaussian error added to the stage-1
            metrics (``vuln``, ``grad_bound``, ``grad_bound_all``; a fixed draw per candidate,
            epoch and seed): a surrogate that predicts the converged oracle imperfectly. Stage-2
            values stay exact, so the truth is known; 0 = perfect surrogates.
        seed_noise: standard deviation of a deterministic Gaussian error added to the stage-2
            ``vuln`` per (candidate, training seed): the training-seed noise that
            ``stage2.seeds`` averages out.
    """

    sleep_s: float = 0.0
    jitter_s: float = 0.0
    fail_on: str | None = None
    nan_on: str | None = None
    log_path: str | None = None
    noise: float = 0.0
    seed_noise: float = 0.0

    def __call__(self, spec: TrialSpec, session: TrialSession) -> None:
        """Report ``spec.epochs`` epochs of fake metrics, resuming from the last state."""
        cand = spec.candidate
        start = 0
        if session.resume_dir is not None:
            state = json.loads((session.resume_dir / "state.json").read_text())
            start = int(state["epoch"])
        self._log(session.trial_id, "start", start, spec)
        if start == 0 and spec.stage == 1:
            session.report(self._metrics(spec, 0), _state_writer(0))
        for epoch in range(start + 1, spec.epochs + 1):
            if self.sleep_s or self.jitter_s:
                time.sleep(self.sleep_s + random.SystemRandom().uniform(0.0, self.jitter_s))
            if self.fail_on is not None and self.fail_on in cand.aux:
                raise RuntimeError(f"injected fault: auxiliary task {self.fail_on!r}")
            metrics = self._metrics(spec, epoch)
            if self.nan_on is not None and self.nan_on in cand.aux:
                metrics["train_loss"] = math.nan
            self._log(session.trial_id, "epoch", epoch, spec)
            session.report(metrics, _state_writer(epoch))

    def _metrics(self, spec: TrialSpec, epoch: int) -> dict[str, Any]:
        cand = spec.candidate
        vuln = fake_vulnerability(cand, spec.encoder, epoch)
        if self.seed_noise and spec.stage == 2:
            vuln += self.seed_noise * surrogate_error(cand, spec.seed, 0, "seed")
        clean = fake_clean_error(cand, epoch)
        out: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": 1.0 / (1 + epoch),
            "clean_error": clean,
            "vuln": vuln,
            "grad_bound": 0.5 * vuln,
            "grad_bound_all": fake_grad_bound_all(cand, spec.encoder),
            "skill": FAKE_SKILL,
            "spread": 1.0,
        }
        if self.noise and spec.stage == 1:
            for key in ("vuln", "grad_bound", "grad_bound_all"):
                out[key] += self.noise * surrogate_error(cand, spec.seed, epoch, key)
        for k in cand.tasks:
            out[f"clean_{k}"] = clean
            out[f"skill_{k}"] = FAKE_SKILL
        if spec.stage == 2 and epoch == spec.epochs:
            rows = []
            for i, name in enumerate(spec.attacks):
                v = vuln * (1.0 - 0.05 * i)
                out[f"vuln_{name}"] = v
                rows.append(
                    {"attack": name, "attacked": cand.main, "task": cand.main, "rel_vuln": v}
                )
            out["vuln"] = max(out[f"vuln_{name}"] for name in spec.attacks)
            out["attack_rows"] = json.dumps(rows)
            out["image_rows"] = json.dumps(fake_image_rows(out, spec.attacks))
        elif spec.stage == 2:
            del out["vuln"]  # stage 2 attacks only the final model
        return out

    def _log(self, trial_id: str, event: str, epoch: int, spec: TrialSpec) -> None:
        if self.log_path is None:
            return
        line = json.dumps(
            {
                "trial_id": trial_id,
                "event": event,
                "epoch": epoch,
                "stage": spec.stage,
                "aux": spec.candidate.aux,
                "pid": os.getpid(),
                "node": _node_id(),
            }
        )
        with open(self.log_path, "a", encoding="utf-8") as fh:  # one short append: atomic
            fh.write(line + "\n")


def _node_id() -> str:
    """The Ray node this process runs on; ``""`` outside Ray."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return ""
    return ray.get_runtime_context().get_node_id()


def surrogate_error(candidate: Candidate, seed: int, epoch: int, metric: str) -> float:
    """A standard-normal draw fixed by (candidate, seed, epoch, metric): the same in every run
    and process (``random.Random`` seeded with a string is deterministic)."""
    key = f"{candidate.key}|{seed}|{epoch}|{metric}"
    return random.Random(key).gauss(0.0, 1.0)


FAKE_IMAGES = 16
"""Images a fake stage-2 trial reports per-image errors for."""


def fake_image_rows(metrics: dict[str, Any], attacks: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per-image errors whose mean of ratios is exactly each attack's ``vuln_<attack>`` (a
    zero-mean spread of ±3 % around it), and their per-image worst case."""
    rows = []
    for name in (*attacks, "worst"):
        value = metrics["vuln"] if name == "worst" else metrics[f"vuln_{name}"]
        for i in range(FAKE_IMAGES):
            clean = 0.1 + 0.02 * i
            adv = clean * (1 + value + 0.02 * ((i % 4) - 1.5))
            rows.append({"attack": name, "image": i, "clean_error": clean, "adv_error": adv})
    return rows


def _state_writer(epoch: int):
    def write(folder: Path) -> None:
        (folder / "state.json").write_text(json.dumps({"epoch": epoch}))

    return write


ENV_TRIAL = "tests.search.fake_trial:env_trial"
"""``search.trial_fn`` value of :func:`env_trial`, for tests that run ``rts search`` itself."""


def env_trial(spec: TrialSpec, session: TrialSession) -> None:
    """A :class:`FakeTrial` configured by the JSON object in ``$RTS_FAKE_TRIAL`` (read in the
    trial's process: Ray workers inherit the driver's environment)."""
    FakeTrial(**json.loads(os.environ.get("RTS_FAKE_TRIAL", "{}")))(spec, session)
