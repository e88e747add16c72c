"""What a search found and what it cost: :class:`Summary`, built once, printed and saved."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rts.search.engine.plan import exhaustive_cost, mode_text
from rts.search.engine.space import Space
from rts.search.results.pareto import pareto_ranks


@dataclass(frozen=True)
class Summary:
    """What the search found and what it cost (printed at the end, saved as ``summary.json``).

    Attributes:
        main: main task.
        recommended_trial: stage-2 trial of the recommendation (lowest worst-case main-task
            vulnerability), ``""`` if stage 2 produced nothing.
        recommended_aux: its auxiliary tasks (``""`` = train the main task alone).
        recommended_weights: its weights (JSON).
        recommended_encoder: its encoder.
        vuln: its main-task vulnerability under the stage-2 attacks (aggregate).
        clean_error: its main-task clean error.
        baseline_vuln: the single-task baseline's vulnerability (same encoder).
        baseline_clean_error: the baseline's clean error.
        uniform_vuln: the uniform-weight twin's vulnerability (NaN if the recommendation is
            uniform already or the twin was not trained).
        best_uniform_aux: the most robust uniform-weight multi-task candidate of stage 2.
        best_uniform_vuln: its vulnerability.
        stage1_trials, stage1_completed, stage1_pruned, stage1_failed: stage-1 counts.
        stage2_trials, stage2_failed: stage-2 counts.
        cost_units: compute spent, in ResNet18-epoch equivalents (stage 1 + stage 2).
        exhaustive_units: what training every configuration fully with the target encoder
            would cost in the same units.
        exhaustive_configs: number of configurations an exhaustive search trains.
        wall_s: summed trial wall time of both stages.
        exhaustive_wall_s: estimated wall time of the exhaustive search (mean stage-2 trial
            time × configurations).
        aggregate: how the attack ensemble is combined (``worst`` or ``mean``).
        attacks: the stage-2 attacks.
        pareto: stage-2 Pareto front (trial id, aux, vuln, clean error) in Pareto mode.
        mode: how stage 1 ran: ``deterministic`` (batches, rung barriers: a rerun gives the same
            tables) or ``asynchronous`` (Ray Tune's OptunaSearch and ASHA).
        batch: proposals per stage-1 batch in deterministic mode (0 otherwise).
    """

    main: str
    recommended_trial: str
    recommended_aux: str
    recommended_weights: str
    recommended_encoder: str
    vuln: float
    clean_error: float
    baseline_vuln: float
    baseline_clean_error: float
    uniform_vuln: float
    best_uniform_aux: str
    best_uniform_vuln: float
    stage1_trials: int
    stage1_completed: int
    stage1_pruned: int
    stage1_failed: int
    stage2_trials: int
    stage2_failed: int
    cost_units: float
    exhaustive_units: float
    exhaustive_configs: int
    wall_s: float
    exhaustive_wall_s: float
    aggregate: str
    attacks: tuple[str, ...]
    pareto: tuple[tuple[str, str, float, float], ...] = field(default=())
    mode: str = "asynchronous"
    batch: int = 0

    def to_json(self) -> str:
        """The summary as JSON (NaN written as null)."""
        data = {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }
        return json.dumps(data, indent=2)


def summarize(
    stage1: pd.DataFrame,
    stage2: pd.DataFrame,
    space: Space,
    *,
    stage2_epochs: int,
    aggregate: str,
    attacks: Sequence[str],
    pareto: bool = False,
    mode: str = "asynchronous",
    batch: int = 0,
) -> Summary:
    """The summary of a finished search (see :class:`Summary`)."""
    done = (
        stage2[(stage2["status"] == "completed") & stage2["vuln"].notna()]
        if len(stage2)
        else stage2
    )
    nan = math.nan
    rec: Mapping[str, Any] = {}
    if len(done):
        rec = done.sort_values(["vuln", "clean_error", "trial_id"], kind="stable").iloc[0]
    enc = str(rec.get("encoder", space.encoders[0])) if len(rec) else space.encoders[0]

    def pick(mask: pd.Series) -> Mapping[str, Any]:
        sub = done[mask]
        return sub.sort_values(["vuln", "trial_id"]).iloc[0] if len(sub) else {}

    base = pick((done["aux"] == "") & (done["encoder"] == enc)) if len(done) else {}
    twin: Mapping[str, Any] = {}
    if len(rec) and rec["scheme"] != "uniform":
        twin = pick(
            (done["aux"] == rec["aux"]) & (done["scheme"] == "uniform") & (done["encoder"] == enc)
        )
    best_u = pick((done["scheme"] == "uniform") & (done["aux"] != "")) if len(done) else {}
    configs, units = exhaustive_cost(space, stage2_epochs)
    stage2_wall = done["wall_s"].dropna() if len(done) else pd.Series(dtype=float)
    front: tuple = ()
    if pareto and len(done):
        ranks = pareto_ranks(
            list(zip(done["vuln"], done["clean_error"].fillna(math.inf), strict=True))
        )
        front = tuple(
            (str(r["trial_id"]), str(r["aux"]), float(r["vuln"]), float(r["clean_error"]))
            for (_, r), rank in zip(done.iterrows(), ranks, strict=True)
            if rank == 0
        )
        front = tuple(sorted(front, key=lambda t: t[2]))

    def count(df: pd.DataFrame, status: str) -> int:
        return int((df["status"] == status).sum()) if len(df) else 0

    both = pd.concat([stage1, stage2], ignore_index=True)
    return Summary(
        main=space.main,
        recommended_trial=str(rec.get("trial_id", "")) if len(rec) else "",
        recommended_aux=str(rec.get("aux", "")) if len(rec) else "",
        recommended_weights=str(rec.get("weights", "")) if len(rec) else "",
        recommended_encoder=enc,
        vuln=float(rec["vuln"]) if len(rec) else nan,
        clean_error=float(rec["clean_error"]) if len(rec) else nan,
        baseline_vuln=float(base["vuln"]) if len(base) else nan,
        baseline_clean_error=float(base["clean_error"]) if len(base) else nan,
        uniform_vuln=float(twin["vuln"]) if len(twin) else nan,
        best_uniform_aux=str(best_u["aux"]) if len(best_u) else "",
        best_uniform_vuln=float(best_u["vuln"]) if len(best_u) else nan,
        stage1_trials=len(stage1),
        stage1_completed=count(stage1, "completed"),
        stage1_pruned=count(stage1, "pruned"),
        stage1_failed=count(stage1, "failed"),
        stage2_trials=len(stage2),
        stage2_failed=count(stage2, "failed"),
        cost_units=float(both["cost_units"].sum()) if len(both) else 0.0,
        exhaustive_units=units,
        exhaustive_configs=configs,
        wall_s=float(both["wall_s"].sum(skipna=True)) if len(both) else 0.0,
        exhaustive_wall_s=float(stage2_wall.mean() * configs) if len(stage2_wall) else nan,
        aggregate=aggregate,
        attacks=tuple(attacks),
        pareto=front,
        mode=mode,
        batch=batch,
    )


def weights_text(weights_json: str) -> str:
    """``"uniform"`` or ``"d=1, s=0.1"`` for a weights JSON object."""
    weights = json.loads(weights_json) if weights_json else {}
    if not weights or max(weights.values()) - min(weights.values()) <= 1e-9:
        return "uniform"
    return ", ".join(f"{k}={v:.3g}" for k, v in weights.items())


def _tasks_label(main: str, aux: str) -> str:
    return f"{main} + {{{', '.join(aux)}}}" if aux else f"{main} alone"


def _pct(new: float, old: float) -> str:
    if math.isnan(new) or math.isnan(old) or old == 0:
        return "n/a"
    return f"{(new - old) / abs(old) * 100:+.1f}%"


def format_summary(s: Summary, run_dir: str | Path | None = None) -> str:
    """The summary as the text ``rts search`` prints (Markdown-friendly)."""
    lines = [f"## Search summary: main task {s.main!r}", ""]
    if not s.recommended_trial:
        lines.append("No stage-2 trial completed: no recommendation (see the failure column).")
    else:
        label = _tasks_label(s.main, s.recommended_aux)
        if s.recommended_aux:
            lines.append(
                f"Recommended auxiliary set: {{{', '.join(s.recommended_aux)}}} "
                f"(train {label}, encoder {s.recommended_encoder}, weights "
                f"{weights_text(s.recommended_weights)}; trial {s.recommended_trial})"
            )
        else:
            lines.append(
                f"Recommended: no auxiliary task; the single-task model of {s.main!r} was the "
                f"most robust candidate (encoder {s.recommended_encoder}, trial "
                f"{s.recommended_trial})"
            )
        attack = f"{s.aggregate} case of {', '.join(s.attacks)}"
        lines += [
            "",
            f"| model | {s.main} relative vulnerability ({attack}) | {s.main} clean error |",
            "| --- | --- | --- |",
            f"| recommended: {label} | {s.vuln:.4g} | {s.clean_error:.4g} |",
        ]
        if not math.isnan(s.baseline_vuln):
            lines.append(
                f"| single-task baseline | {s.baseline_vuln:.4g} ({_pct(s.vuln, s.baseline_vuln)} "
                f"for the recommendation) | {s.baseline_clean_error:.4g} |"
            )
        elif s.recommended_aux:
            lines.append("| single-task baseline | not trained (stage2.baseline: false) | |")
        if not math.isnan(s.uniform_vuln):
            lines.append(
                f"| same tasks, uniform weights | {s.uniform_vuln:.4g} "
                f"({_pct(s.vuln, s.uniform_vuln)} for the recommendation) | |"
            )
        if s.best_uniform_aux and s.best_uniform_aux != s.recommended_aux:
            lines.append(
                f"| best uniform-weight alternative: {_tasks_label(s.main, s.best_uniform_aux)} "
                f"| {s.best_uniform_vuln:.4g} | |"
            )
        elif s.best_uniform_aux == s.recommended_aux and s.best_uniform_aux:
            lines.append("| (the recommendation is also the best uniform-weight candidate) | | |")
    if s.pareto:
        lines += ["", "Pareto front (vulnerability vs clean error):"]
        lines += [
            f"- {t}: {_tasks_label(s.main, a)}: vuln {v:.4g}, clean error {c:.4g}"
            for t, a, v, c in s.pareto
        ]
    ratio = s.cost_units / s.exhaustive_units if s.exhaustive_units else math.nan
    lines += [
        "",
        f"Trials: stage 1 {s.stage1_trials} ({s.stage1_completed} completed, {s.stage1_pruned} "
        f"pruned, {s.stage1_failed} failed); stage 2 {s.stage2_trials} ({s.stage2_failed} "
        "failed).",
        f"Compute: {s.cost_units:.1f} ResNet18-epoch units, {ratio:.1%} of an exhaustive search "
        f"({s.exhaustive_configs} configurations, {s.exhaustive_units:.1f} units); trial wall "
        f"time {s.wall_s:.0f} s"
        + (
            f" vs about {s.exhaustive_wall_s:.0f} s exhaustive."
            if not math.isnan(s.exhaustive_wall_s)
            else "."
        ),
    ]
    lines.append(f"Mode: {mode_text(s.mode, s.batch)}.")
    if run_dir is not None:
        lines.append(f"Results: {run_dir}")
    return "\n".join(lines)
