"""The results of a search: one row per trial, per-epoch history, attack rows, and the summary.

Ray's per-trial results become three tables (documented column by column in
``docs/search.md``), written atomically as Parquet under the run folder:

* ``trials.parquet``: one row per trial of both stages, keyed by ``trial_id`` (``s1-0003``,
  ``s2-0001``);
* ``history.parquet``: one row per trial and reported epoch (stage 1 reports epoch 0, before
  training, too);
* ``attacks.parquet``: the stage-2 attack rows (per attack, attacked task set and task).

Stage 2's trial set is derived from stage 1's table by :func:`select_stage2`, a pure function,
so a resumed run selects exactly the same candidates. :func:`summarize` answers the question the
search was run for: which auxiliary tasks make the main task hardest to attack, how much more
robust that is than the single-task baseline and than uniform weights, and what it cost compared
with an exhaustive search.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from search.space import Candidate, Space, decode
from tasks.io import atomic_path
from tasks.registry import TASK_KEYS

log = logging.getLogger(__name__)

ENCODER_COST: dict[str, float] = {
    "resnet18": 1.0,
    "resnet34": 2.02,
    "resnet50": 2.26,
    "resnet101": 4.31,
    "resnet152": 6.36,
    "wide_resnet50_2": 6.30,
    "wide_resnet101_2": 12.57,
    "xception": 4.64,
}
"""Relative cost of one training epoch per encoder: forward GFLOPs at 224 px of the torchvision
(timm for Xception) model divided by ResNet18's 1.81 GFLOPs. Decoders are not counted."""

HISTORY_KEYS = ("epoch", "train_loss", "clean_error", "vuln", "grad_bound", "grad_bound_all")
"""History columns always present (NaN when a trial did not report them)."""

ATTACK_COLUMNS = ("trial_id", "attack", "attacked", "task", "relative_vulnerability")
"""Columns an ``attacks`` table has even when empty (the rest: ``attacks.evaluate_robustness``)."""


def encoder_cost(name: str) -> float:
    """Relative epoch cost of encoder ``name`` (:data:`ENCODER_COST`; unknown ones count 1)."""
    if name not in ENCODER_COST:
        log.warning("no cost known for encoder %r; counting it like resnet18", name)
    return ENCODER_COST.get(name, 1.0)


# --------------------------------------------------------------------------------------------
# Rows from Ray results


@dataclass(frozen=True)
class StageTables:
    """The tables of one stage: trials, per-epoch history and attack rows."""

    trials: pd.DataFrame
    history: pd.DataFrame
    attacks: pd.DataFrame


def trial_counter(path: str | Path) -> int:
    """The creation index of a trial, from its folder name ``trial_<n>_<id>``."""
    name = Path(str(path)).name
    parts = name.split("_")
    if len(parts) >= 3 and parts[0] == "trial" and parts[1].isdigit():
        return int(parts[1])
    raise ValueError(f"not a trial folder of this search: {name!r}")


def stage_trial_id(stage: int, number: int) -> str:
    """The results' id of the ``number``-th trial (1-based, creation order) of ``stage``."""
    return f"s{stage}-{number:04d}"


def trial_dirname(trial: Any) -> str:
    """Ray ``trial_dirname_creator``: ``trial_<n>_<ray id>`` (``n`` = creation order)."""
    counter = str(trial.experiment_tag).split("_")[0]
    return f"trial_{int(counter):04d}_{trial.trial_id}" if counter.isdigit() else trial.trial_id


def failure_reason(error: BaseException | None) -> str:
    """One line saying why a trial failed: the original exception's type and message."""
    if error is None:
        return ""
    cause = getattr(error, "cause", None) or error
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


def trial_config(result: Any) -> dict[str, Any]:
    """The trial's config; from its ``params.json`` (local or on the remote storage) if Ray's
    result lacks it."""
    config = result.config
    if config:
        return config
    params = f"{result.path}/params.json"
    fs = getattr(result, "filesystem", None)
    if fs is None:
        return json.loads(Path(params).read_text()) if Path(params).exists() else {}
    try:
        with fs.open_input_stream(params) as fh:
            return json.loads(fh.read())
    except FileNotFoundError:
        return {}


def collect_stage(
    results: Iterable[Any], stage: int, *, epochs: int, trained_encoder: str | None
) -> StageTables:
    """Tables of one finished stage from Ray's ``ResultGrid`` (or any iterable of ``Result``).

    Args:
        results: the stage's results.
        stage: 1 or 2.
        epochs: the stage's epoch budget (a trial below it without error was pruned).
        trained_encoder: the encoder stage-1 trials train (``None``: the candidate's own).
    """
    rows, histories, attack_rows = [], [], []
    ordered = sorted(results, key=lambda r: trial_counter(r.path))
    for number, result in enumerate(ordered, start=1):
        config = trial_config(result)
        entry = config.get("candidate", config)
        cand = decode(entry)
        trial_id = stage_trial_id(stage, number)
        metrics = dict(result.metrics or {})
        hist = _history(result.metrics_dataframe, trial_id, stage)
        reached = int(hist["epoch"].max()) if len(hist) else 0
        error = result.error
        status = "failed" if error is not None else ("completed" if reached >= epochs else "pruned")
        encoder = trained_encoder or cand.encoder
        row: dict[str, Any] = {
            "trial_id": trial_id,
            "stage": stage,
            "role": entry.get("role", "search"),
            **candidate_columns(cand),
            "trained_encoder": encoder,
            "max_epochs": epochs,
            "epochs": reached,
            "status": status,
            "failure": failure_reason(error),
            **{
                m: _last(hist, m) if status != "failed" else math.nan
                for m in ("vuln", "clean_error", "grad_bound", "grad_bound_all")
            },
            "cost_units": reached * encoder_cost(encoder),
            "wall_s": float(metrics.get("time_total_s", math.nan)),
            "node_id": str(metrics.get("node_id", "")),
            "hostname": str(metrics.get("hostname", "")),
            "ray_trial_id": Path(str(result.path)).name.split("_")[-1],
            "params": json.dumps(config, sort_keys=True),
            "surrogate_trial_id": entry.get("surrogate_trial_id", ""),
            "checkpoint": "",
        }
        for key, value in metrics.items():
            if key.startswith(("clean_", "vuln_", "adv_")) and isinstance(value, int | float):
                row[key] = float(value) if status != "failed" else math.nan
        rows.append(row)
        histories.append(hist)
        for a in json.loads(metrics.get("attack_rows") or "[]") if status == "completed" else []:
            attack_rows.append({"trial_id": trial_id, **a})
    trials = pd.DataFrame(rows)
    if len(trials):
        trials = trials.sort_values("trial_id", kind="stable").reset_index(drop=True)
    history = pd.concat(histories, ignore_index=True) if histories else _empty_history()
    attacks = pd.DataFrame(attack_rows) if attack_rows else pd.DataFrame(columns=ATTACK_COLUMNS)
    return StageTables(trials, history, attacks)


def candidate_columns(cand: Candidate) -> dict[str, Any]:
    """The columns that describe a candidate (tasks, weights, encoder)."""
    weights = cand.weight_map
    out: dict[str, Any] = {
        "main": cand.main,
        "aux": cand.aux,
        "tasks": cand.tasks,
        "n_aux": len(cand.aux),
        "scheme": cand.scheme,
        "weights": cand.weights_json,
        "encoder": cand.encoder,
    }
    for k in TASK_KEYS:
        out[f"w_{k}"] = weights.get(k, 0.0)
    return out


def _history(df: pd.DataFrame | None, trial_id: str, stage: int) -> pd.DataFrame:
    if df is None or df.empty or "epoch" not in df.columns:
        return _empty_history()
    keep = [c for c in df.columns if c in HISTORY_KEYS or c.startswith(("clean_", "vuln_"))]
    out = df[keep].copy()
    out["time_s"] = df["time_total_s"] if "time_total_s" in df.columns else math.nan
    for key in HISTORY_KEYS:
        if key not in out.columns:
            out[key] = math.nan
    for col in out.columns:
        if col != "epoch":
            out[col] = pd.to_numeric(out[col], errors="coerce")
    out["epoch"] = out["epoch"].astype("int64")
    out.insert(0, "stage", stage)
    out.insert(0, "trial_id", trial_id)
    # A trial resumed from its last checkpoint may report an epoch twice: keep the last.
    return out.drop_duplicates(["trial_id", "epoch"], keep="last").reset_index(drop=True)


def _empty_history() -> pd.DataFrame:
    return pd.DataFrame(
        {c: pd.Series(dtype="float64") for c in ("trial_id", "stage", *HISTORY_KEYS, "time_s")}
    )


def _last(hist: pd.DataFrame, column: str) -> float:
    if column not in hist.columns:
        return math.nan
    values = hist[column].dropna()
    return float(values.iloc[-1]) if len(values) else math.nan


# --------------------------------------------------------------------------------------------
# Stage 2 selection


def pareto_ranks(points: Sequence[tuple[float, float]]) -> list[int]:
    """Non-dominated sorting rank of each point (0 = on the Pareto front), minimising both."""
    n = len(points)
    ranks = [-1] * n
    remaining = set(range(n))
    rank = 0
    while remaining:
        front = {
            i
            for i in remaining
            if not any(_dominates(points[j], points[i]) for j in remaining if j != i)
        }
        for i in front:
            ranks[i] = rank
        remaining -= front
        rank += 1
    return ranks


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def rank_stage1(
    trials: pd.DataFrame, *, pareto: bool = False, metric: str = "vuln"
) -> pd.DataFrame:
    """Stage-1 trials that did not fail, best first.

    Completed trials (trained the full surrogate budget) come before pruned ones, and pruned
    ones by how far they got: metrics at different epochs are not comparable. Within a group
    the order is by ``metric`` (``stage1.metric``: the main task's vulnerability by default),
    then vulnerability, clean error and trial id; in Pareto mode by non-dominated rank on
    (``metric``, clean error) first.
    """
    if metric not in trials.columns:
        trials = trials.assign(**{metric: math.nan})
    ok = trials[(trials["status"] != "failed") & trials[metric].notna()].copy()
    ok["_full"] = (ok["status"] != "completed").astype(int)
    ok["_epochs"] = -ok["epochs"]
    keys = ["_full", "_epochs", *dict.fromkeys([metric, "vuln", "clean_error"]), "trial_id"]
    if pareto and len(ok):
        ok["_rank"] = 0
        full = ok["_full"] == 0
        points = list(
            zip(ok.loc[full, metric], ok.loc[full, "clean_error"].fillna(math.inf), strict=True)
        )
        ok.loc[full, "_rank"] = pareto_ranks(points)
        keys.insert(2, "_rank")
    ok = ok.sort_values(keys, kind="stable")
    return ok.drop(columns=[c for c in ok.columns if c.startswith("_")])


@dataclass(frozen=True)
class Stage2Entry:
    """One stage-2 trial to run: the candidate, why it is there, and its stage-1 trial."""

    candidate: Candidate
    role: str
    surrogate_trial_id: str = ""

    def to_config(self) -> dict[str, Any]:
        """The trial config (what :func:`collect_stage` reads back)."""
        return {
            **self.candidate.to_config(),
            "role": self.role,
            "surrogate_trial_id": self.surrogate_trial_id,
        }


def select_stage2(
    trials: pd.DataFrame,
    space: Space,
    *,
    top_k: int,
    uniform_twins: bool,
    pareto: bool = False,
    metric: str = "vuln",
    baseline: bool = True,
) -> list[Stage2Entry]:
    """The stage-2 trial set: the ``top_k`` distinct best stage-1 candidates by ``metric`` (not
    counting the single-task model), their uniform-weight twins (optional), and the single-task
    baseline of every encoder among them (optional). Deterministic given the stage-1 table."""
    ranked = rank_stage1(trials, pareto=pareto, metric=metric)
    chosen: list[Stage2Entry] = []
    seen: set[tuple] = set()
    for _, row in ranked.iterrows():
        if len([e for e in chosen if e.role == "top"]) >= top_k:
            break
        cand = _row_candidate(row)
        if cand.aux == "" or cand.key in seen:
            continue
        seen.add(cand.key)
        chosen.append(Stage2Entry(cand, "top", str(row["trial_id"])))
    extra: list[Stage2Entry] = []
    if uniform_twins:
        for entry in chosen:
            twin = entry.candidate.uniform_twin()
            if twin.key not in seen:
                seen.add(twin.key)
                sid = _find_trial(ranked, twin)
                extra.append(Stage2Entry(twin, "uniform-twin", sid))
    encoders = sorted({e.candidate.encoder for e in chosen}) or [space.encoders[0]]
    for enc in encoders if baseline else ():
        base = space.baseline(enc)
        extra.append(Stage2Entry(base, "baseline", _find_trial(ranked, base)))
    return chosen + extra


def _row_candidate(row: Mapping[str, Any]) -> Candidate:
    return decode({k: row[k] for k in ("main", "aux", "scheme", "weights", "encoder")})


def _find_trial(ranked: pd.DataFrame, cand: Candidate) -> str:
    """The best stage-1 trial of ``cand`` (its surrogate), or ``""`` if it was not sampled."""
    for _, row in ranked.iterrows():
        if _row_candidate(row).key == cand.key:
            return str(row["trial_id"])
    return ""


def add_surrogate_columns(stage2: pd.DataFrame, stage1: pd.DataFrame) -> pd.DataFrame:
    """Stage-2 rows with the stage-1 metrics of their surrogate trial (``surrogate_*``)."""
    out = stage2.copy()
    lookup = stage1.set_index("trial_id") if len(stage1) else pd.DataFrame()
    for col in ("vuln", "clean_error", "epochs"):
        out[f"surrogate_{col}"] = [
            float(lookup.loc[sid, col]) if sid and sid in lookup.index else math.nan
            for sid in out.get("surrogate_trial_id", pd.Series([""] * len(out)))
        ]
    return out


# --------------------------------------------------------------------------------------------
# Writing


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` to ``path`` as Parquet, atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def read_parquet(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`write_parquet`."""
    return pd.read_parquet(path)


# --------------------------------------------------------------------------------------------
# Summary


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

    def to_json(self) -> str:
        """The summary as JSON (NaN written as null)."""
        data = {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }
        return json.dumps(data, indent=2)


def exhaustive_cost(space: Space, epochs: int) -> tuple[int, float]:
    """Configurations and ResNet18-epoch units of training every configuration of ``space``
    for ``epochs`` epochs on its target encoder."""
    per_encoder = space.size // len(space.encoders)
    units = sum(per_encoder * epochs * encoder_cost(e) for e in space.encoders)
    return space.size, units


def summarize(
    stage1: pd.DataFrame,
    stage2: pd.DataFrame,
    space: Space,
    *,
    stage2_epochs: int,
    aggregate: str,
    attacks: Sequence[str],
    pareto: bool = False,
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
    if run_dir is not None:
        lines.append(f"Results: {run_dir}")
    return "\n".join(lines)
