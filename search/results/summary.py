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
from rts.search.results.candidates import compare_candidates, per_candidate, recommend
from rts.search.results.pareto import pareto_ranks
from rts.search.results.recommend import Comparison, best_row
from rts.tasks.weights import format_weights


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
        uniform_low, uniform_high, best_uniform_low, best_uniform_high: their 95 % intervals.
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
        skill: the recommendation's main-task skill (1 − error / error of the training mean).
        baseline_skill: the single-task baseline's.
        skill_flags: one line per stage-2 model that has not learned its main task (skill ≤ 0,
            or a prediction that barely changes between images): their vulnerability says
            nothing, and the recommendation is not trusted if it is among them.
        statistic: the statistic ``vuln`` is (``attack.statistic``); with per-image errors
            every value, interval and test of the summary is this statistic of the same
            per-image rows (the mean of the seeds' values when there are several).
        vuln_low, vuln_high: the recommendation's simultaneous 95 % interval (over images with
            one seed, over seeds with several; :mod:`rts.attacks.simultaneous`).
        baseline_low, baseline_high: the baseline's.
        tied: stage-2 models (``"d+Dn"``) statistically tied with the recommendation (paired
            over the same images and seeds; the recommendation first).
        vs_baseline: recommendation minus baseline, with its paired simultaneous 95 % interval.
        significant: whether that interval lies below 0 (``None``: no baseline or no
            per-image errors to test with).
        verdict: the recommendation against the baseline: ``better``, ``tied`` or ``worse``
            (``""``: no test); family-wise error 5 % over the ``compared`` models.
        verdict_seeds, verdict_images: the training seeds and the images per seed the
            intervals and the verdict rest on.
        compared: the stage-2 models the verdicts were drawn among (the family).
        mode: how stage 1 ran: ``deterministic`` (batches, rung barriers: a rerun gives the same
            tables) or ``asynchronous`` (the study searcher and ASHA).
        batch: proposals per stage-1 batch in deterministic mode (0 otherwise).
        seeds: training seeds per stage-2 model (``stage2.seeds``): with more than one, every
            stage-2 value is the mean over them and its interval rests on the seeds (clusters).
        stage1_repeats: stage-1 proposals that repeated a candidate already run and were
            answered from that trial's outcome instead of trained (compute saved).
        retries: ``{trial id: times}`` Ray ran a trial again from its last checkpoint after
            losing its node or worker (infrastructure faults; the trial's results count once).
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
    skill: float = math.nan
    baseline_skill: float = math.nan
    skill_flags: tuple[str, ...] = field(default=())
    statistic: str = "mean"
    vuln_low: float = math.nan
    vuln_high: float = math.nan
    baseline_low: float = math.nan
    baseline_high: float = math.nan
    tied: tuple[str, ...] = field(default=())
    vs_baseline: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    significant: bool | None = None
    mode: str = "asynchronous"
    batch: int = 0
    seeds: int = 1
    stage1_repeats: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    uniform_low: float = math.nan
    uniform_high: float = math.nan
    best_uniform_low: float = math.nan
    best_uniform_high: float = math.nan
    verdict: str = ""
    verdict_seeds: int = 0
    verdict_images: int = 0
    compared: int = 0
    replayed: bool = False
    """The values come from a replay table (``replay:``): no attack, no skill was measured."""

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
    images: pd.DataFrame | None = None,
    statistic: str = "mean",
    seed: int = 0,
    mode: str = "asynchronous",
    batch: int = 0,
    repeats: int = 0,
    comparison: Comparison | None = None,
    retries: Mapping[str, int] | None = None,
) -> Summary:
    """The summary of a finished search (see :class:`Summary`); ``images`` (the stage-2
    per-image errors) gives the intervals, the tied set and the baseline test; ``repeats``
    counts the stage-1 proposals answered from earlier trials."""
    seeded = (
        stage2[(stage2["status"] == "completed") & stage2["vuln"].notna()]
        if len(stage2)
        else stage2
    )
    done = per_candidate(seeded)  # one row per candidate: the mean over its training seeds
    nan = math.nan
    rec, base = recommend(done, space.encoders[0])
    enc = str(rec.get("encoder", space.encoders[0])) if len(rec) else space.encoders[0]

    def pick(mask: pd.Series) -> Mapping[str, Any]:
        return best_row(done[mask], "vuln", "trial_id")

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
        ranks = pareto_ranks(done["vuln"], done["clean_error"].fillna(math.inf))
        front = tuple(
            (str(r["trial_id"]), str(r["aux"]), float(r["vuln"]), float(r["clean_error"]))
            for (_, r), rank in zip(done.iterrows(), ranks, strict=True)
            if rank == 0
        )
        front = tuple(sorted(front, key=lambda t: t[2]))

    def count(df: pd.DataFrame, status: str) -> int:
        return int((df["status"] == status).sum()) if len(df) else 0

    both = pd.concat([stage1, stage2], ignore_index=True)
    noise = _noise(
        done,
        seeded,
        images,
        aggregate,
        statistic,
        seed,
        space.main,
        {"": rec, "baseline_": base, "uniform_": twin, "best_uniform_": best_u},
        comparison,
    )
    values = {
        "vuln": _value(rec, "vuln"),
        "baseline_vuln": _value(base, "vuln"),
        "uniform_vuln": _value(twin, "vuln"),
        "best_uniform_vuln": _value(best_u, "vuln"),
    }
    values.update({k: v for k, v in noise.items() if k in values})
    noise = {k: v for k, v in noise.items() if k not in values}
    return Summary(
        main=space.main,
        recommended_trial=str(rec.get("trial_id", "")) if len(rec) else "",
        recommended_aux=str(rec.get("aux", "")) if len(rec) else "",
        recommended_weights=str(rec.get("weights", "")) if len(rec) else "",
        recommended_encoder=enc,
        vuln=values["vuln"],
        clean_error=float(rec["clean_error"]) if len(rec) else nan,
        baseline_vuln=values["baseline_vuln"],
        baseline_clean_error=float(base["clean_error"]) if len(base) else nan,
        uniform_vuln=values["uniform_vuln"],
        best_uniform_aux=str(best_u["aux"]) if len(best_u) else "",
        best_uniform_vuln=values["best_uniform_vuln"],
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
        skill=_value(rec, "skill"),
        baseline_skill=_value(base, "skill"),
        skill_flags=_skill_flags(seeded, space.main),
        statistic=statistic,
        **noise,
        seeds=int(done["n_seeds"].max()) if len(done) else 1,
        mode=mode,
        batch=batch,
        stage1_repeats=repeats,
        retries=dict(retries or {}),
    )


def _noise(
    done: pd.DataFrame,
    seeded: pd.DataFrame,
    images: pd.DataFrame | None,
    aggregate: str,
    statistic: str,
    seed: int,
    main: str,
    rows: Mapping[str, Mapping[str, Any]],
    comp: Comparison | None = None,
) -> dict[str, Any]:
    """Values, intervals, the tied set and the baseline verdict from the per-image errors
    (``done`` has one row per candidate, ``seeded`` one per trial); ``rows``: the rows whose
    value and interval to report, by field prefix (``""`` the recommendation, ``baseline_``)."""
    if comp is None:  # not given: compare here
        enc = str(done["encoder"].iloc[0]) if len(done) else ""
        comp = compare_candidates(
            done, seeded, images, aggregate=aggregate, statistic=statistic, seed=seed, encoder=enc
        )
    if comp is None:
        return {}
    table = comp.table.set_index("key")
    labels = {str(r["trial_id"]): short_label(main, str(r["aux"])) for _, r in done.iterrows()}
    out: dict[str, Any] = {
        "tied": tuple(labels[k] for k in comp.tied if k in labels),
        "verdict_seeds": comp.seeds,
        "verdict_images": comp.images,
        "compared": len(table),
    }
    for prefix, row in rows.items():
        key = str(row.get("trial_id", "")) if len(row) else ""
        if key in table.index:
            bounds = prefix or "vuln_"  # vuln_low, baseline_low, ...
            out[f"{prefix}vuln"] = float(table.loc[key, "value"])
            out[f"{bounds}low"] = float(table.loc[key, "low"])
            out[f"{bounds}high"] = float(table.loc[key, "high"])
    if comp.verdict:
        out["vs_baseline"] = comp.vs_baseline
        out["verdict"] = comp.verdict
        out["significant"] = comp.significant
    return out


def _value(row: Mapping[str, Any], column: str) -> float:
    value = row.get(column, math.nan) if len(row) else math.nan
    return float(value) if value is not None else math.nan


def _skill_flags(done: pd.DataFrame, main: str) -> tuple[str, ...]:
    """:func:`rts.attacks.skill.skill_flag` of every completed stage-2 model that needs one."""
    from rts.attacks.skill import skill_flag

    flags = []
    several = "seed" in done and done["seed"].nunique() > 1
    for _, row in done.iterrows():
        name = short_label(main, str(row["aux"]))
        if several:
            name += f" (seed {int(row['seed'])})"
        line = skill_flag(name, main, _value(row, "skill"), _value(row, "spread"))
        if line:
            flags.append(line)
    return tuple(flags)


def short_label(main: str, aux: str) -> str:
    """A model's compact name: ``"d+Dn"`` (main + auxiliaries), ``"d"`` alone."""
    return f"{main}+{aux}" if aux else main


def tasks_label(main: str, aux: str) -> str:
    return f"{main} + {{{', '.join(aux)}}}" if aux else f"{main} alone"


def format_interval(value: float, low: float, high: float) -> str:
    """``0.45 [0.31, 0.62]``, or the value alone when it has no interval."""
    if math.isnan(low) or math.isnan(high):
        return f"{value:.4g}"
    return f"{value:.4g} [{low:.3g}, {high:.3g}]"


def _pct(new: float, old: float) -> str:
    if math.isnan(new) or math.isnan(old) or old == 0:
        return "n/a"
    return f"{(new - old) / abs(old) * 100:+.1f}%"


def _rests_on(s: Summary) -> str:
    """``"3 seeds × 100 images"``: what the verdicts rest on."""
    seeds = f"{s.verdict_seeds} seed" + ("s" if s.verdict_seeds != 1 else "")
    return f"{seeds} × {s.verdict_images} images"


def verdict_lines(s: Summary) -> list[str]:
    """The recommendation against the single-task model: better, tied or worse, with the
    error rate the verdict controls and what it rests on (``[]`` without a test)."""
    if not s.verdict:
        return []
    d, lo, hi = s.vs_baseline
    how = (
        f"simultaneous 95 % interval [{lo:+.3g}, {hi:+.3g}], paired over the same images and "
        f"seeds, {s.statistic} statistic; family-wise error 5 % over the {s.compared} models "
        f"compared, which covers picking the best; resting on {_rests_on(s)}"
    )
    if s.verdict == "better":
        text = (
            f"The recommendation is significantly more robust than the single-task model "
            f"(difference {d:+.3g}, {how})."
        )
    elif s.verdict == "worse":
        text = (
            f"**Worse**: the single-task model is significantly more robust than the "
            f"recommendation (recommendation minus baseline {d:+.3g}, {how}): keep the "
            "single-task model."
        )
    else:
        text = (
            f"**Not significant**: the recommendation is not distinguishable from the "
            f"single-task model (recommendation minus baseline {d:+.3g}, {how}; the interval "
            "includes 0): treat them as tied and do not read a percentage into it."
        )
    return [text, ""]


def format_summary(s: Summary, run_dir: str | Path | None = None) -> str:
    """The summary as the text ``rts search`` prints (Markdown-friendly)."""
    lines = [f"## Search summary: main task {s.main!r}", ""]
    rec_label = short_label(s.main, s.recommended_aux)
    flagged = any(f.startswith((f"{rec_label}:", f"{rec_label} (seed ")) for f in s.skill_flags)
    # A replayed metric was measured elsewhere: no skill here to check (the table's own caveat).
    unknown = math.isnan(s.skill) and not s.replayed
    if s.recommended_trial and (flagged or unknown):
        known = f"main-task skill {s.skill:.2f}" if not math.isnan(s.skill) else "skill unknown"
        lines += [
            f"**Not trusted**: the recommended model has not learned {s.main!r} ({known}); its "
            "vulnerability says nothing. Train longer or on more data before reading the "
            "ranking.",
            "",
        ]
    lines += verdict_lines(s)
    if not s.recommended_trial:
        lines.append("No stage-2 trial completed: no recommendation (see the failure column).")
    else:
        label = tasks_label(s.main, s.recommended_aux)
        if s.recommended_aux:
            lines.append(
                f"Recommended auxiliary set: {{{', '.join(s.recommended_aux)}}} "
                f"(train {label}, encoder {s.recommended_encoder}, weights "
                f"{format_weights(s.recommended_weights)}; trial {s.recommended_trial})"
            )
        else:
            lines.append(
                f"Recommended: no auxiliary task; the single-task model of {s.main!r} was the "
                f"most robust candidate (encoder {s.recommended_encoder}, trial "
                f"{s.recommended_trial})"
            )
        attack = (
            "replayed metric" if s.replayed else f"{s.aggregate} case of {', '.join(s.attacks)}"
        )
        lines += [
            "",
            f"| model | {s.main} relative vulnerability ({attack}) | {s.main} clean error "
            f"| {s.main} skill |",
            "| --- | --- | --- | --- |",
            f"| recommended: {label} | {format_interval(s.vuln, s.vuln_low, s.vuln_high)} "
            f"| {s.clean_error:.4g} | {s.skill:.3g} |",
        ]
        if not math.isnan(s.baseline_vuln):
            change = (
                "within the noise"
                if s.verdict == "tied"
                else f"{_pct(s.vuln, s.baseline_vuln)} for the recommendation"
                + (", significantly worse" if s.verdict == "worse" else "")
            )
            base = format_interval(s.baseline_vuln, s.baseline_low, s.baseline_high)
            lines.append(
                f"| single-task baseline | {base}"
                f" ({change}) | {s.baseline_clean_error:.4g} | {s.baseline_skill:.3g} |"
            )
        elif s.recommended_aux:
            lines.append("| single-task baseline | not trained (stage2.baseline: false) | | |")
        if not math.isnan(s.uniform_vuln):
            lines.append(
                "| same tasks, uniform weights | "
                f"{format_interval(s.uniform_vuln, s.uniform_low, s.uniform_high)} "
                f"({_pct(s.vuln, s.uniform_vuln)} for the recommendation) | | |"
            )
        if s.best_uniform_aux and s.best_uniform_aux != s.recommended_aux:
            lines.append(
                f"| best uniform-weight alternative: {tasks_label(s.main, s.best_uniform_aux)} "
                f"| {format_interval(s.best_uniform_vuln, s.best_uniform_low, s.best_uniform_high)}"
                " | | |"
            )
        elif s.best_uniform_aux == s.recommended_aux and s.best_uniform_aux:
            lines.append("| (the recommendation is also the best uniform-weight candidate) | | | |")
    if len(s.tied) > 1:
        lines += [
            "",
            f"Tied with the recommendation (not distinguishable on {_rests_on(s)}, "
            f"simultaneous 95 % intervals): {', '.join(s.tied[1:])}.",
        ]
    if s.skill_flags:
        lines += [
            "",
            "Models that have not learned the main task (skill against the training mean):",
        ]
        lines += [f"- {f}" for f in s.skill_flags]
    if s.pareto:
        lines += ["", "Pareto front (vulnerability vs clean error):"]
        lines += [
            f"- {t}: {tasks_label(s.main, a)}: vuln {v:.4g}, clean error {c:.4g}"
            for t, a, v, c in s.pareto
        ]
    ratio = s.cost_units / s.exhaustive_units if s.exhaustive_units else math.nan
    lines += [
        "",
        f"Trials: stage 1 {s.stage1_trials} ({s.stage1_completed} completed, {s.stage1_pruned} "
        f"pruned, {s.stage1_failed} failed); stage 2 {s.stage2_trials} ({s.stage2_failed} "
        "failed)."
        + (
            f" Stage 1: {s.stage1_repeats} repeated proposal(s) answered from earlier trials, "
            "not trained."
            if s.stage1_repeats
            else ""
        )
        + (
            f" Retried after losing their node or worker: {len(s.retries)} trial(s), "
            f"{sum(s.retries.values())} retr{'y' if sum(s.retries.values()) == 1 else 'ies'} "
            f"({', '.join(f'{t} ×{n}' for t, n in sorted(s.retries.items()))}), each from its "
            "last checkpoint; their results count once."
            if s.retries
            else ""
        ),
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
    if s.seeds == 1 and not math.isnan(s.vuln_low):
        lines.append(
            "Seeds: one training seed; the intervals cover the attacked images, not the seed, "
            "which can reorder candidates by more (stage2.seeds: K trains each K times)."
        )
    if s.seeds > 1:
        lines.append(
            f"Seeds: every stage-2 model trained under {s.seeds} training seeds; its values are "
            "the means over them, its intervals and tests rest on the seeds (each seed's "
            "statistic over its images is one observation; candidates.parquet)."
        )
    if run_dir is not None:
        lines.append(f"Results: {run_dir}")
    return "\n".join(lines)
