"""Analysis of a finished search: surrogate correlations, decision metrics, paper-style tables.

Everything here works on :class:`RunData`, three plain DataFrames in one canonical schema (below).
:func:`load_run` is the *only* code that knows the layout of ``runs/<name>/``; tests and other
callers build a :class:`RunData` from hand-made frames with :func:`make_run_data`.

Canonical schema
----------------
``trials``: one row per trial (the search's ``trials.parquet`` uses the same names)
    ``trial_id`` str; ``stage`` int (1 = surrogate stage, 2 = target stage); ``tasks`` str
    (canonical, registry order); ``main`` str (main task key, in ``tasks``); ``weights`` str
    (display form, ``"uniform"`` or ``"s=0.1,d=0.9"``); ``encoder`` str (the candidate's target
    encoder); ``trained_encoder`` str (what the trial trained: the surrogate encoder in stage 1);
    ``combo`` str (the join key between stages: tasks, ``[normalised weights]`` unless uniform,
    ``@encoder`` when several encoders are searched, e.g. ``"sd[s=0.1,d=0.9]"``); ``role`` str;
    ``epochs`` float (epochs reached); ``status`` str (``completed``, ``pruned``, ``failed``);
    ``wall_s`` float (seconds; NaN unknown); ``clean_error`` float (main-task clean error at the
    end); ``vuln`` float (main-task relative vulnerability at the end: stage 1 the cheap attack,
    stage 2 the search's aggregate of its attack ensemble).
``attacks``: one row per (trial, attack, attacked task set, evaluated task)
    ``trial_id``; ``attack`` str (``pgd``, ``apgd``, ``wgd``, ``worst`` = per-sample worst case
    over the ensemble, …); ``attacked`` str (canonical set of attacked tasks: the main task alone
    = single-task attack, all tasks = multi-task attack); ``task`` str (evaluated task);
    ``rel_vuln`` float (relative task vulnerability v_i).
``history``: one row per (trial, epoch)
    ``trial_id``; ``epoch`` int (0 = before training); ``time_s`` (cumulative seconds);
    ``clean_error``, ``vuln`` (main-task relative vulnerability to the stage-1 attack),
    ``grad_bound`` (``ε·E‖∂x L'‖_q``); each NaN where not recorded.

Target
------
For each combination, the target is the main task's relative vulnerability after full training
under the strong attacks, on its completed stage-2 trials (mean over repeats): the trial's
``vuln`` (the number the search itself ranks by: by default the per-sample worst case over
PGD, APGD and WGD), else the largest main-task ``rel_vuln`` over the strong attacks
(:data:`TARGET_ATTACKS`) of its attack rows. Surrogates are read from the stage-1 trials of the
same combination; a run without stage-1 trials reads them from its stage-2 trials' own history.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from search.surrogates import Surrogate, TrialRecord, expand_surrogates, get_surrogate
from tasks.registry import TASK_KEYS, canonical_tasks, get_task, parse_tasks

log = logging.getLogger(__name__)

TARGET_ATTACKS: tuple[str, ...] = ("pgd", "apgd", "wgd", "worst")
"""The strong attacks whose worst case is the target when a trial has no ``vuln`` (others are
used only if none of these ran). ``worst`` is the per-sample worst case over the ensemble."""

FINISHED = "completed"
MIN_POINTS = 3
"""Correlations need at least this many combinations with both a surrogate and a target value."""
MIN_BOOTSTRAP = 5
"""Bootstrap intervals need at least this many points (below, resamples are mostly degenerate)."""

TRIAL_DEFAULTS: dict[str, Any] = {
    "stage": 2,
    "weights": "",
    "encoder": "",
    "trained_encoder": None,
    "role": "",
    "epochs": math.nan,
    "status": FINISHED,
    "wall_s": math.nan,
    "clean_error": math.nan,
    "vuln": math.nan,
}
HISTORY_COLUMNS: tuple[str, ...] = (
    "time_s",
    "clean_error",
    "vuln",
    "grad_bound",
    "grad_bound_all",
)


# --------------------------------------------------------------------------------------------
# Run data


@dataclass(frozen=True, eq=False)
class RunData:
    """A search run in the canonical schema (see the module docstring).

    Attributes:
        trials: one row per trial.
        attacks: one row per (trial, attack, attacked set, evaluated task).
        history: one row per (trial, epoch).
        config: the run's resolved config (as loaded from ``config.yaml``), ``{}`` if none.
        path: the run folder, when loaded from disk.
        notes: what the loader could not find (shown in the report).
    """

    trials: pd.DataFrame
    attacks: pd.DataFrame
    history: pd.DataFrame
    config: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None
    notes: tuple[str, ...] = ()

    def record(self, trial_id: str) -> TrialRecord:
        """All records of one trial, for surrogates."""
        row = self.trials.loc[self.trials["trial_id"] == trial_id]
        if row.empty:
            raise ValueError(f"unknown trial_id {trial_id!r}")
        hist = self.history[self.history["trial_id"] == trial_id].sort_values("epoch")
        atk = self.attacks[self.attacks["trial_id"] == trial_id]
        return TrialRecord(row.iloc[0].to_dict(), hist.reset_index(drop=True), atk)

    def records(self, trial_ids: Iterable[str]) -> list[TrialRecord]:
        """:meth:`record` for many trials at once (one pass over the frames)."""
        hist = {
            k: g.sort_values("epoch").reset_index(drop=True)
            for k, g in self.history.groupby("trial_id", sort=False)
        }
        atk = {k: g for k, g in self.attacks.groupby("trial_id", sort=False)}
        rows = {r["trial_id"]: r for r in self.trials.to_dict("records")}
        empty_h, empty_a = self.history.iloc[0:0], self.attacks.iloc[0:0]
        out = []
        for i in trial_ids:
            if i not in rows:
                raise ValueError(f"unknown trial_id {i!r}")
            out.append(TrialRecord(rows[i], hist.get(i, empty_h), atk.get(i, empty_a)))
        return out

    @property
    def surrogate_stage(self) -> int:
        """The stage surrogates are read from: 1 when the run has stage-1 trials, else 2."""
        return 1 if (self.trials["stage"] == 1).any() else 2

    def surrogate_trials(self) -> pd.DataFrame:
        """The trials surrogates are read from: those of :attr:`surrogate_stage` that did not
        fail (completed or pruned: a pruned trial's early epochs are still valid records)."""
        t = self.trials
        return t[(t["stage"] == self.surrogate_stage) & (t["status"] != "failed")]


def parse_weights(weights: Any, tasks: str) -> dict[str, float]:
    """Weights as ``{task: w}`` from a mapping, a JSON object (how the search stores them), a
    sequence aligned with ``tasks``, ``"s=1,d=.1"``, or ``None``/``""``/NaN (uniform: ``{}``)."""
    if weights is None or (isinstance(weights, float) and math.isnan(weights)):
        return {}
    if isinstance(weights, str):
        text = weights.strip()
        if not text or text.lower() in ("uniform", "none"):
            return {}
        if text.startswith("{"):
            return parse_weights(json.loads(text), tasks)
        out: dict[str, float] = {}
        for part in text.replace(";", ",").split(","):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"weights must look like 's=1,d=0.1', got {weights!r}")
            out[key.strip()] = float(value)
        weights = out
    if isinstance(weights, Mapping):
        out = {str(k): float(v) for k, v in weights.items()}
    else:
        values = [float(v) for v in weights]
        if len(values) != len(tasks):
            raise ValueError(f"{len(values)} weights for tasks {tasks!r}; give one per task")
        out = dict(zip(tasks, values, strict=True))
    for k in out:
        get_task(k)
        if k not in tasks:
            raise ValueError(f"weight for task {k!r} which is not in tasks {tasks!r}")
    return out


def weights_key(weights: Any, tasks: str) -> str:
    """Normalised weights (sum 1, 4 significant digits, registry order); ``""`` when uniform.

    Equal weights are uniform whatever their scale, and a task without a weight counts as 0
    (:func:`tasks.losses.weighted_sum`: weight 0 = task skipped).
    """
    w = parse_weights(weights, tasks)
    if not w:
        return ""
    values = np.array([w.get(k, 0.0) for k in tasks], dtype=float)
    total = values.sum()
    if total <= 0 or not np.isfinite(total):
        raise ValueError(f"weights must be finite with a positive sum, got {weights!r}")
    if np.allclose(values, values[0]):
        return ""
    values = values / total
    return ",".join(f"{k}={v:.4g}" for k, v in zip(tasks, values, strict=True))


def weights_label(weights: Any, tasks: str) -> str:
    """Display form of the weights as given (``"uniform"`` when uniform)."""
    w = parse_weights(weights, tasks)
    if not w or weights_key(w, tasks) == "":
        return "uniform"
    return ",".join(f"{k}={w[k]:g}" for k in tasks if k in w)


def combo_label(tasks: str, wkey: str = "", encoder: str = "") -> str:
    """The combination's name: ``"sd"``, ``"sd[s=0.1,d=0.9]"``, ``"sd@resnet50"``."""
    return tasks + (f"[{wkey}]" if wkey else "") + (f"@{encoder}" if encoder else "")


def make_run_data(
    trials: pd.DataFrame,
    attacks: pd.DataFrame | None = None,
    history: pd.DataFrame | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    path: str | Path | None = None,
    notes: Iterable[str] = (),
) -> RunData:
    """Validate and normalise hand-made or loaded frames into a :class:`RunData`.

    ``trials`` needs ``trial_id`` and ``tasks``; ``main`` defaults to the first task as written
    (before canonical ordering), the other columns to :data:`TRIAL_DEFAULTS`. Task sets are
    canonicalised (``"ds"`` → ``"sd"``) so equal sets join.
    """
    for col in ("trial_id", "tasks"):
        if col not in trials.columns:
            raise ValueError(f"trials need a {col!r} column, got columns {list(trials.columns)}")
    t = trials.copy()
    t["trial_id"] = t["trial_id"].astype(str)
    if t["trial_id"].duplicated().any():
        dup = t.loc[t["trial_id"].duplicated(), "trial_id"].iloc[0]
        raise ValueError(f"trial_id must be unique, {dup!r} appears twice")
    raw_tasks = [str(x) for x in t["tasks"]]
    if "main" not in t.columns:
        t["main"] = [x.replace(",", "").strip()[0] for x in raw_tasks]
    t["tasks"] = [canonical_tasks(x) for x in raw_tasks]
    for key, tasks in zip(t["main"], t["tasks"], strict=True):
        if key not in tasks:
            raise ValueError(f"main task {key!r} is not in the trial's tasks {tasks!r}")
    for col, default in TRIAL_DEFAULTS.items():
        if col not in t.columns:
            t[col] = default
    t["stage"] = t["stage"].astype(int)
    bad = sorted(set(t["stage"]) - {1, 2})
    if bad:
        raise ValueError(f"stage must be 1 (surrogate) or 2 (target), got {bad[0]!r}")
    t["encoder"] = t["encoder"].fillna("").astype(str)
    t["trained_encoder"] = [
        str(tr) if isinstance(tr, str) and tr else enc
        for tr, enc in zip(t["trained_encoder"], t["encoder"], strict=True)
    ]
    several = t["encoder"].nunique() > 1
    w_raw = list(t["weights"])
    t["weights"] = [weights_label(w, k) for w, k in zip(w_raw, t["tasks"], strict=True)]
    t["combo"] = [
        combo_label(k, weights_key(w, k), e if several else "")
        for w, k, e in zip(w_raw, t["tasks"], t["encoder"], strict=True)
    ]
    for col in ("epochs", "wall_s", "clean_error", "vuln"):
        t[col] = pd.to_numeric(t[col], errors="coerce").astype(float)
    t["role"] = t["role"].fillna("")
    for col in (
        "trial_id",
        "tasks",
        "main",
        "weights",
        "combo",
        "encoder",
        "trained_encoder",
        "status",
        "role",
    ):
        t[col] = t[col].astype(str)  # also types the columns of an empty frame

    a = _frame(attacks, ("trial_id", "attack", "attacked", "task", "rel_vuln"))
    a["trial_id"] = a["trial_id"].astype(str)
    a["attack"] = a["attack"].astype(str).str.lower()
    a["attacked"] = [canonical_tasks(str(x)) for x in a["attacked"]]
    a["rel_vuln"] = pd.to_numeric(a["rel_vuln"], errors="coerce").astype(float)

    h = _frame(history, ("trial_id", "epoch"))
    h["trial_id"] = h["trial_id"].astype(str)
    h["epoch"] = h["epoch"].astype(int)
    for col in HISTORY_COLUMNS:
        h[col] = pd.to_numeric(h[col], errors="coerce").astype(float) if col in h else math.nan

    known = set(t["trial_id"])
    for name, frame in (("attacks", a), ("history", h)):
        unknown = sorted(set(frame["trial_id"]) - known)
        if unknown:
            raise ValueError(f"{name} rows for unknown trial_id {unknown[0]!r}")
    return RunData(
        t.reset_index(drop=True),
        a.reset_index(drop=True),
        h.reset_index(drop=True),
        dict(config or {}),
        Path(path) if path is not None else None,
        tuple(notes),
    )


def _frame(df: pd.DataFrame | None, required: Sequence[str]) -> pd.DataFrame:
    """A copy of ``df`` (or an empty frame) checked to have ``required`` columns."""
    if df is None:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in required})
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"missing column {missing[0]!r}; need {', '.join(required)}")
    return df.copy()


# --------------------------------------------------------------------------------------------
# Combinations, target, surrogate values


def target_attacks(run: RunData) -> list[str]:
    """The attacks the target is the worst case over: :data:`TARGET_ATTACKS` that ran, else all."""
    ran = list(dict.fromkeys(run.attacks["attack"]))
    strong = [a for a in TARGET_ATTACKS if a in ran]
    return strong or ran


def trial_targets(run: RunData) -> pd.DataFrame:
    """Per completed stage-2 trial: its target and where it comes from.

    The trial's ``vuln`` when recorded (label: the config's ``attack.aggregate`` and ensemble,
    e.g. ``"worst of pgd/apgd/wgd"``), else the largest main-task ``rel_vuln`` over
    :func:`target_attacks` (label ``"apgd/single"``-style). Columns ``trial_id``, ``target``,
    ``target_attack``.
    """
    t = run.trials[(run.trials["stage"] == 2) & (run.trials["status"] == FINISHED)]
    attacks = target_attacks(run)
    a = run.attacks.merge(t[["trial_id", "main"]], on="trial_id")
    a = a[(a["task"] == a["main"]) & a["attack"].isin(attacks)].dropna(subset=["rel_vuln"])
    rows: dict[str, tuple[float, str]] = {}
    if len(a):
        mode = np.where(a["attacked"] == a["main"], "single", "multi")
        a = a.assign(label=a["attack"] + "/" + mode)
        for _, r in a.loc[a.groupby("trial_id")["rel_vuln"].idxmax()].iterrows():
            rows[r["trial_id"]] = (float(r["rel_vuln"]), str(r["label"]))
    cfg = run.config.get("attack", {}) if isinstance(run.config, Mapping) else {}
    ensemble = cfg.get("ensemble") if isinstance(cfg, Mapping) else None
    label = "search vuln"
    if ensemble:
        names = ensemble.split(",") if isinstance(ensemble, str) else list(ensemble)
        label = f"{cfg.get('aggregate', 'worst')} of {'/'.join(names)}"
    for tid, v in zip(t["trial_id"], t["vuln"], strict=True):
        if not math.isnan(v):
            rows[tid] = (float(v), label)
    return pd.DataFrame(
        [(k, v, lab) for k, (v, lab) in rows.items()],
        columns=["trial_id", "target", "target_attack"],
    )


def combinations(run: RunData) -> pd.DataFrame:
    """One row per combination (task set, normalised weights, searched encoder) in the run.

    Columns: ``combo``, ``tasks``, ``main``, ``weights``, ``n_tasks``, ``encoder`` (the
    candidate's target encoder), ``role`` (of its stage-2 trial), ``target`` (NaN without a
    completed stage-2 trial), ``target_attack``, ``clean_error`` (target trials' main-task clean
    error), ``target_cost`` (mean seconds of its target trials), ``target_epochs``, ``n_target``,
    ``surrogate_trials`` (ids, ``;``-joined). Sorted by target (best first), then by combo.
    """
    t = run.trials
    if t.empty:
        return pd.DataFrame()
    groups = t.groupby("combo", sort=True)
    out = groups[["tasks", "main", "weights", "encoder"]].first()
    out["n_tasks"] = out["tasks"].str.len()
    s2 = t[t["stage"] == 2]
    out["role"] = s2.groupby("combo")["role"].first().reindex(out.index).fillna("")
    tg = t.merge(trial_targets(run), on="trial_id", how="inner")
    agg = tg.groupby("combo").agg(
        target=("target", "mean"),
        clean_error=("clean_error", "mean"),
        target_cost=("wall_s", "mean"),
        target_epochs=("epochs", "mean"),
        n_target=("trial_id", "size"),
    )
    out = out.join(agg)
    worst = tg.loc[tg.groupby("combo")["target"].idxmax()].set_index("combo")["target_attack"]
    out["target_attack"] = worst.reindex(out.index).fillna("")
    out["n_target"] = out["n_target"].fillna(0).astype(int)
    sur = run.surrogate_trials()
    ids = sur.groupby("combo")["trial_id"].agg(";".join)
    out["surrogate_trials"] = ids.reindex(out.index).fillna("")
    out = out.reset_index()[list(COMBO_COLUMNS)]
    return out.sort_values(["target", "combo"], na_position="last").reset_index(drop=True)


COMBO_COLUMNS: tuple[str, ...] = (
    "combo",
    "tasks",
    "main",
    "weights",
    "n_tasks",
    "encoder",
    "role",
    "target",
    "target_attack",
    "clean_error",
    "target_cost",
    "target_epochs",
    "n_target",
    "surrogate_trials",
)


def _surrogate_cost(s: Surrogate, trial: TrialRecord) -> tuple[float, float]:
    """(seconds, epochs) spent on ``trial`` until ``s`` is available; NaN seconds if unknown."""
    epochs_total = float(trial.row.get("epochs", math.nan))
    wall = float(trial.row.get("wall_s", math.nan))
    if s.epoch is None:
        return wall, epochs_total
    t = trial.at_epoch("time_s", s.epoch)
    if math.isnan(t) and s.epoch == 0:
        t = 0.0
    if math.isnan(t) and epochs_total > 0 and not math.isnan(wall):
        t = wall * s.epoch / epochs_total
    return t, float(s.epoch)


def surrogate_values(
    run: RunData, surrogates: Sequence[Surrogate] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Surrogate values and their costs per combination.

    Returns ``(values, cost_s, cost_epochs)``: frames indexed by ``combo`` with one column per
    surrogate; each is the mean over the combination's surrogate trials (NaN-skipping).
    """
    sur = run.surrogate_trials()
    records = run.records(sur["trial_id"])
    if surrogates is None:
        surrogates = expand_surrogates(records)
    values: dict[str, dict[str, float]] = {s.name: {} for s in surrogates}
    secs: dict[str, dict[str, float]] = {s.name: {} for s in surrogates}
    eps: dict[str, dict[str, float]] = {s.name: {} for s in surrogates}
    by_combo: dict[str, list[TrialRecord]] = {}
    for rec in records:
        by_combo.setdefault(rec.row["combo"], []).append(rec)
    for combo, recs in by_combo.items():
        for s in surrogates:
            vals = [s(r) for r in recs]
            costs = [_surrogate_cost(s, r) for r in recs]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                values[s.name][combo] = float(np.nanmean(vals)) if recs else math.nan
                secs[s.name][combo] = float(np.nanmean([c[0] for c in costs]))
                eps[s.name][combo] = float(np.nanmean([c[1] for c in costs]))
    combos = sorted(by_combo)
    make = lambda d: pd.DataFrame(d, index=pd.Index(combos, name="combo"), dtype=float)  # noqa: E731
    return make(values), make(secs), make(eps)


# --------------------------------------------------------------------------------------------
# Correlations


def _pearson_vec(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson r along ``axis`` (NaN where x or y is constant); vectorised for the bootstrap."""
    xm = x - x.mean(axis=axis, keepdims=True)
    ym = y - y.mean(axis=axis, keepdims=True)
    num = (xm * ym).sum(axis=axis)
    den = np.sqrt((xm * xm).sum(axis=axis) * (ym * ym).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    scale = np.maximum(np.abs(x).max(axis=axis), np.abs(y).max(axis=axis))
    tiny = den <= 1e-12 * np.maximum(scale, 1e-300) ** 2
    return np.clip(np.where(tiny, np.nan, r), -1.0, 1.0)


def _spearman_vec(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman rho along ``axis``: Pearson on average ranks (scipy's definition)."""
    from scipy.stats import rankdata

    return _pearson_vec(rankdata(x, axis=axis), rankdata(y, axis=axis), axis=axis)


KENDALL_VECTOR_MAX = 120
"""Up to this many points the bootstrap uses the vectorised Kendall tau (faster than scipy)."""


def _kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall tau-b of one resample (:func:`scipy.stats.kendalltau`), NaN if a side is constant."""
    from scipy.stats import kendalltau

    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(kendalltau(x, y).statistic)


def _kendall_vec(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Kendall tau-b along ``axis`` (scipy's default variant), vectorised over leading axes.

    With ``sx = sign(x_i - x_j)`` and ``sy`` likewise over all ordered pairs,
    ``tau_b = Σ sx·sy / sqrt(Σ|sx| · Σ|sy|)``: the numerator is twice concordant minus
    discordant pairs, each factor of the denominator twice the pairs untied in that variable.
    NaN where either side is constant.
    """
    x = np.moveaxis(np.asarray(x, dtype=float), axis, -1)
    y = np.moveaxis(np.asarray(y, dtype=float), axis, -1)
    sx = np.sign(x[..., :, None] - x[..., None, :]).astype(np.int8)
    sy = np.sign(y[..., :, None] - y[..., None, :]).astype(np.int8)
    num = (sx * sy).sum(axis=(-2, -1), dtype=np.int64)
    den = np.sqrt(
        np.abs(sx).sum(axis=(-2, -1), dtype=np.int64).astype(float)
        * np.abs(sy).sum(axis=(-2, -1), dtype=np.int64)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _bootstrap_ci(
    x: np.ndarray,
    y: np.ndarray,
    statistic,
    *,
    vectorized: bool,
    n_resamples: int,
    confidence: float,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """Paired percentile bootstrap CI from :func:`scipy.stats.bootstrap`.

    Resamples that draw a constant x or y (correlation undefined: likely for n < 6) are left out
    of the percentiles instead of turning the whole interval into NaN.
    """
    from scipy.stats import bootstrap

    # bound the memory of the vectorised statistics (Kendall builds n x n sign matrices)
    batch = max(1, min(n_resamples, int(4e7 // max(len(x) ** 2, 1))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap(
            (x, y),
            statistic,
            paired=True,
            vectorized=vectorized,
            batch=batch,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            rng=rng,
        )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if math.isnan(lo) or math.isnan(hi):
        dist = np.asarray(res.bootstrap_distribution, dtype=float)
        dist = dist[np.isfinite(dist)]
        if len(dist) < max(10, n_resamples // 10):
            return math.nan, math.nan
        alpha = (1 - confidence) / 2
        lo, hi = (float(v) for v in np.quantile(dist, [alpha, 1 - alpha]))
    return lo, hi


CORRELATIONS: tuple[tuple[str, str], ...] = (
    ("pearson", "r"),
    ("spearman", "rho"),
    ("kendall", "tau"),
)


def correlate(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = 999,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Pearson, Spearman and Kendall correlations of paired values, with p-values and CIs.

    Point estimates and two-sided p-values come from :mod:`scipy.stats` (``pearsonr``,
    ``spearmanr``, ``kendalltau``); confidence intervals from a paired percentile
    :func:`scipy.stats.bootstrap` seeded with ``np.random.default_rng(seed)``. Pairs with a NaN
    are dropped. With fewer than :data:`MIN_POINTS` pairs, or a constant side, every value is NaN
    and ``note`` says why (never raises); with fewer than :data:`MIN_BOOTSTRAP` the intervals
    are NaN (a note says so).

    Returns:
        ``{"n", "pearson_r", "pearson_p", "pearson_lo", "pearson_hi", "spearman_rho", …,
        "kendall_tau", …, "note"}``.
    """
    from scipy import stats

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got confidence={confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got n_resamples={n_resamples}")
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got {xa.shape} and {ya.shape}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    out: dict[str, Any] = {"n": len(xa)}
    for name, stat in CORRELATIONS:
        for suffix in (stat, "p", "lo", "hi"):
            out[f"{name}_{suffix}"] = math.nan
    if len(xa) < MIN_POINTS:
        out["note"] = f"needs >= {MIN_POINTS} points with surrogate and target, got {len(xa)}"
        return out
    if np.ptp(xa) == 0 or np.ptp(ya) == 0:
        side = "surrogate" if np.ptp(xa) == 0 else "target"
        out["note"] = f"{side} is constant over the {len(xa)} points: correlation undefined"
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = {
            "pearson": stats.pearsonr(xa, ya),
            "spearman": stats.spearmanr(xa, ya),
            "kendall": stats.kendalltau(xa, ya),
        }
    rng = np.random.default_rng(seed)
    boot = {
        "pearson": (_pearson_vec, True),
        "spearman": (_spearman_vec, True),
        # pairwise-sign Kendall is O(n^2) per resample: scipy's O(n log n) one beyond ~120 points
        "kendall": (_kendall_vec, True) if len(xa) <= KENDALL_VECTOR_MAX else (_kendall, False),
    }
    for name, stat in CORRELATIONS:
        res = results[name]
        out[f"{name}_{stat}"] = float(res.statistic)
        out[f"{name}_p"] = float(res.pvalue)
        if len(xa) >= MIN_BOOTSTRAP:
            fn, vec = boot[name]
            out[f"{name}_lo"], out[f"{name}_hi"] = _bootstrap_ci(
                xa, ya, fn, vectorized=vec, n_resamples=n_resamples, confidence=confidence, rng=rng
            )
    out["note"] = (
        ""
        if len(xa) >= MIN_BOOTSTRAP
        else f"no bootstrap interval below {MIN_BOOTSTRAP} points (got {len(xa)})"
    )
    return out


# --------------------------------------------------------------------------------------------
# Decision metrics


def decision_metrics(
    surrogate: pd.Series,
    target: pd.Series,
    *,
    k: int = 3,
    direction: str = "lower",
    surrogate_cost: pd.Series | None = None,
    target_cost: pd.Series | None = None,
) -> dict[str, Any]:
    """Would ranking combinations by ``surrogate`` have found the most robust one?

    Both series are indexed by combination; only combinations with both values count. Lower
    ``target`` is more robust. The surrogate's ranking follows ``direction`` (``"lower"``: the
    smallest value is predicted most robust). Ties are broken by combination name, so results
    are deterministic.

    Returns:
        ``k`` (capped at n − 1, so the top k is never everything), ``pick`` (the surrogate's
        top combination), ``best`` (the target's),
        ``top1_hit``, ``pick_rank`` (target rank of the pick, 1 = best), ``topk_overlap``
        (``|top-k by surrogate ∩ top-k by target| / k``), ``regret`` (``target[pick] −
        min target``), ``regret_norm`` (regret / (max − min): 0 = best picked, 1 = worst),
        ``compute_saved`` (``1 − (Σ surrogate cost + Σ target cost of the surrogate's top k) /
        Σ target cost``: the saving of "compute the surrogate for every combination, then train
        and attack only its top k" over training and attacking all; NaN without costs), ``note``.
    """
    if direction not in ("lower", "higher"):
        raise ValueError(f"direction must be 'lower' or 'higher', got direction={direction!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got k={k}")
    df = pd.DataFrame({"s": surrogate, "t": target}).dropna()
    out: dict[str, Any] = {
        "k": 0,
        "pick": "",
        "best": "",
        "top1_hit": math.nan,
        "pick_rank": math.nan,
        "topk_overlap": math.nan,
        "regret": math.nan,
        "regret_norm": math.nan,
        "compute_saved": math.nan,
        "note": "",
    }
    if df.empty:
        out["note"] = "no combination has both a surrogate and a target value"
        return out
    df = df.sort_index()
    names = df.index.to_numpy()
    s = df["s"].to_numpy() if direction == "lower" else -df["s"].to_numpy()
    by_s = names[np.lexsort((names, s))]
    by_t = names[np.lexsort((names, df["t"].to_numpy()))]
    kk = max(1, min(k, len(df) - 1))  # k >= n would make the top-k trivially equal
    pick, best = by_s[0], by_t[0]
    t = df["t"]
    spread = float(t.max() - t.min())
    out.update(
        k=kk,
        pick=str(pick),
        best=str(best),
        top1_hit=bool(t[pick] == t[best]),
        pick_rank=int(np.nonzero(by_t == pick)[0][0]) + 1,
        topk_overlap=len(set(by_s[:kk]) & set(by_t[:kk])) / kk,
        regret=float(t[pick] - t[best]),
        regret_norm=float((t[pick] - t[best]) / spread) if spread > 0 else 0.0,
    )
    if surrogate_cost is not None and target_cost is not None:
        sc = surrogate_cost.reindex(df.index)
        tc = target_cost.reindex(df.index)
        if sc.notna().all() and tc.notna().all() and tc.sum() > 0:
            spent = sc.sum() + tc[list(by_s[:kk])].sum()
            out["compute_saved"] = float(1 - spent / tc.sum())
        else:
            out["note"] = "compute saved unknown: missing trial times"
    if len(df) < MIN_POINTS:
        out["note"] = f"only {len(df)} combination(s) with a target: the ranking says little"
    return out


# --------------------------------------------------------------------------------------------
# The Table-3-style analysis


ANALYSIS_COLUMNS: tuple[str, ...] = (
    "surrogate",
    "description",
    "direction",
    "n",
    "pearson_r",
    "pearson_p",
    "pearson_lo",
    "pearson_hi",
    "spearman_rho",
    "spearman_p",
    "spearman_lo",
    "spearman_hi",
    "kendall_tau",
    "kendall_p",
    "kendall_lo",
    "kendall_hi",
    "confidence",
    "n_resamples",
    "k",
    "pick",
    "best",
    "top1_hit",
    "pick_rank",
    "topk_overlap",
    "regret",
    "regret_norm",
    "compute_saved",
    "cost_unit",
    "surrogate_source",
    "target",
    "note",
)


def describe_target(combos: pd.DataFrame) -> str:
    """One line saying what the target is, from where its values came (``target_attack``)."""
    labels = sorted(set(combos["target_attack"]) - {""}) if len(combos) else []
    if not labels:
        return "no completed stage-2 trial: no target"
    return (
        f"main-task relative vulnerability after full training (stage 2), under {', '.join(labels)}"
    )


def default_k(run: RunData) -> int:
    """The k of the decision metrics: the run's ``stage2.top_k`` (what the search itself carries
    from the surrogate stage to the target), else 3."""
    stage2 = run.config.get("stage2") if isinstance(run.config, Mapping) else None
    top_k = stage2.get("top_k") if isinstance(stage2, Mapping) else None
    return int(top_k) if isinstance(top_k, int) and not isinstance(top_k, bool) and top_k > 0 else 3


def analyze(
    run: RunData,
    *,
    surrogates: Sequence[str] | None = None,
    k: int | None = None,
    n_resamples: int = 999,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Correlate every (or the named) surrogate with the target and score its ranking.

    One row per concrete surrogate with the columns :data:`ANALYSIS_COLUMNS`: the three
    correlations (value, p-value, bootstrap CI), :func:`decision_metrics` (``k=None``:
    :func:`default_k`), the cost unit
    (``"s"`` when trial times were recorded, else ``"epoch"``), and a ``note`` for anything that
    made a value NaN. Works on any run: without targets every row is NaN with a note.
    """
    if k is None:
        k = default_k(run)
    combos = combinations(run)
    stage = run.surrogate_stage
    sur_trials = run.surrogate_trials()
    records = run.records(sur_trials["trial_id"])
    chosen = expand_surrogates(records, list(surrogates) if surrogates is not None else None)
    values, cost_s, cost_ep = surrogate_values(run, chosen)
    target = combos.set_index("combo")["target"] if len(combos) else pd.Series(dtype=float)
    target_s = combos.set_index("combo")["target_cost"] if len(combos) else pd.Series(dtype=float)
    target_ep = (
        combos.set_index("combo")["target_epochs"] if len(combos) else pd.Series(dtype=float)
    )
    source = "stage 1" if stage == 1 else "stage 2 (no stage-1 trials)"
    target_desc = describe_target(combos)
    rows = []
    for s in chosen:
        sv = values[s.name] if s.name in values else pd.Series(dtype=float)
        common = sv.index.intersection(target.index)
        x = sv.reindex(common)
        y = target.reindex(common)
        used = common[x.notna().to_numpy() & y.notna().to_numpy()]  # the points scored
        corr = correlate(
            x.to_numpy(), y.to_numpy(), n_resamples=n_resamples, seed=seed, confidence=confidence
        )
        seconds_known = (
            cost_s[s.name].reindex(used).notna().all() and target_s.reindex(used).notna().all()
        )
        sc, tc, unit = (
            (cost_s[s.name], target_s, "s")
            if seconds_known
            else (cost_ep[s.name], target_ep, "epoch")
        )
        dec = decision_metrics(
            x, y, k=k, direction=s.spec.direction, surrogate_cost=sc, target_cost=tc
        )
        notes = [n for n in (corr.pop("note"), dec.pop("note")) if n]
        rows.append(
            {
                "surrogate": s.name,
                "description": s.description,
                "direction": s.spec.direction,
                **corr,
                "confidence": confidence,
                "n_resamples": n_resamples,
                **dec,
                "cost_unit": unit,
                "surrogate_source": source,
                "target": target_desc,
                "note": "; ".join(dict.fromkeys(notes)),
            }
        )
    out = pd.DataFrame(rows, columns=list(ANALYSIS_COLUMNS))
    if len(target.dropna()) == 0:
        out["note"] = "no completed stage-2 trial with results: no target to correlate with"
    return out


def format_analysis(table: pd.DataFrame) -> str:
    """The analysis as a compact Table-3-style text table (for the terminal and Markdown)."""
    cols = {
        "surrogate": "surrogate",
        "n": "n",
        "pearson_r": "Pearson r",
        "pearson_p": "p",
        "pearson_ci": "CI",
        "spearman_rho": "Spearman",
        "kendall_tau": "Kendall",
        "top1_hit": "top-1",
        "topk_overlap": "top-k",
        "regret": "regret",
        "compute_saved": "saved",
    }
    rows = []
    for _, r in table.iterrows():
        rows.append(
            {
                "surrogate": r["surrogate"],
                "n": str(r["n"]),
                "pearson_r": fmt(r["pearson_r"], 2),
                "pearson_p": fmt_p(r["pearson_p"]),
                "pearson_ci": "-"
                if pd.isna(r["pearson_lo"])
                else f"[{fmt(r['pearson_lo'], 2)}, {fmt(r['pearson_hi'], 2)}]",
                "spearman_rho": fmt(r["spearman_rho"], 2),
                "kendall_tau": fmt(r["kendall_tau"], 2),
                "top1_hit": "-" if pd.isna(r["top1_hit"]) else ("yes" if r["top1_hit"] else "no"),
                "topk_overlap": "-"
                if pd.isna(r["topk_overlap"])
                else f"{r['topk_overlap']:.2f} (k={r['k']})",
                "regret": fmt(r["regret"], 3),
                "compute_saved": "-"
                if pd.isna(r["compute_saved"])
                else f"{100 * r['compute_saved']:.0f}%",
            }
        )
    frame = pd.DataFrame(rows, columns=list(cols)).rename(columns=cols)
    return text_table(frame)


def text_table(frame: pd.DataFrame) -> str:
    """A plain aligned text table (Markdown pipe syntax, readable in a terminal)."""
    cols = [str(c) for c in frame.columns]
    cells = [[str(v) for v in row] for row in frame.itertuples(index=False)]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True))  # noqa: E731
    out = [line(cols) + " |", "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) + " |" for r in cells]
    return "\n".join(out)


def fmt(value: Any, digits: int = 3) -> str:
    """A number for tables: fixed digits, ``-`` for NaN/None, scientific when tiny or huge."""
    if value is None:
        return "-"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "-"
    if v != 0 and (abs(v) < 10 ** (-digits) or abs(v) >= 1e6):
        return f"{v:.{max(digits - 1, 1)}e}"
    return f"{v:.{digits}f}"


def fmt_p(p: Any) -> str:
    """A p-value: 3 significant digits, scientific below 1e-3."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    if p == 0:
        return "0"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


# --------------------------------------------------------------------------------------------
# Paper-style tables


MODES: tuple[str, ...] = ("single", "multi")
WEIGHTINGS: tuple[str, ...] = ("baseline", "weighted")


def pair_cells(run: RunData, *, stage: int = 2) -> pd.DataFrame:
    """Long table of the Table 1/2 cells from models with one or two tasks.

    For a model with tasks ``{m, a}`` and each of its tasks ``m`` as the evaluated main task:
    ``mode="single"`` is the attack on ``m`` alone, ``"multi"`` the attack on both; a single-task
    model ``{m}`` gives the diagonal cell ``(m, m)`` of both modes. Models with uniform weights
    are the baseline, others weighted. Columns: ``attack``, ``mode``, ``weighting``, ``main``,
    ``aux``, ``encoder``, ``value`` (mean over repeats of a combination, then the minimum over
    weightings of the same pair: the best weights found), ``combo``.
    """
    t = run.trials
    t = t[(t["stage"] == stage) & (t["status"] == FINISHED) & (t["tasks"].str.len() <= 2)]
    a = run.attacks.merge(t[["trial_id", "tasks", "combo", "encoder", "weights"]], on="trial_id")
    if a.empty:
        return pd.DataFrame(
            columns=["attack", "mode", "weighting", "main", "aux", "encoder", "value", "combo"]
        )
    a = a[[tk in ts for tk, ts in zip(a["task"], a["tasks"], strict=True)]]
    single = a["attacked"] == a["task"]
    multi = a["attacked"] == a["tasks"]
    rows = []
    for mode, mask in (("single", single), ("multi", multi)):
        m = a[mask].copy()
        if m.empty:
            continue
        m["mode"] = mode
        m["main"] = m["task"]
        m["aux"] = [ts.replace(k, "") or k for k, ts in zip(m["task"], m["tasks"], strict=True)]
        m["weighting"] = np.where(m["weights"] == "uniform", "baseline", "weighted")
        rows.append(m)
    cells = pd.concat(rows, ignore_index=True)
    per_combo = (
        cells.groupby(["attack", "mode", "weighting", "main", "aux", "encoder", "combo"])[
            "rel_vuln"
        ]
        .mean()
        .reset_index()
    )
    idx = per_combo.groupby(["attack", "mode", "weighting", "main", "aux", "encoder"])[
        "rel_vuln"
    ].idxmin()
    return per_combo.loc[idx].rename(columns={"rel_vuln": "value"}).reset_index(drop=True)


def heatmap_table(
    cells: pd.DataFrame,
    *,
    attack: str,
    mode: str,
    weighting: str = "baseline",
    encoder: str | None = None,
) -> pd.DataFrame:
    """A Table-1/2-style matrix: rows = main (attacked, evaluated) task, columns = auxiliary task.

    ``cells`` comes from :func:`pair_cells`; rows and columns are the tasks present, in registry
    order; missing cells are NaN. ``encoder=None`` needs the cells to come from one encoder.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got mode={mode!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(
            f"weighting must be one of {', '.join(WEIGHTINGS)}, got weighting={weighting!r}"
        )
    c = cells
    if encoder is not None:
        c = c[c["encoder"] == encoder]
    elif c["encoder"].nunique() > 1:
        raise ValueError(
            f"cells come from several encoders ({', '.join(sorted(c['encoder'].unique()))}); "
            "pass encoder="
        )
    keys = [k for k in TASK_KEYS if k in set(cells["main"]) | set(cells["aux"])]
    sel = c[(c["attack"] == attack) & (c["mode"] == mode) & (c["weighting"] == weighting)]
    table = pd.DataFrame(
        math.nan, index=pd.Index(keys, name="main"), columns=pd.Index(keys, name="aux")
    )
    for _, r in sel.iterrows():
        table.loc[r["main"], r["aux"]] = r["value"]
    return table


def heatmap_panels(cells: pd.DataFrame) -> list[dict[str, Any]]:
    """Every non-empty (encoder, attack, mode, weighting) heatmap, in a stable reading order.

    A panel is listed only when it has an off-diagonal cell (a model with an auxiliary task):
    the diagonal (single-task models) is the reference the pairs are read against, and there
    the multi-task attack is the single-task attack.
    """
    panels = []
    order = {a: i for i, a in enumerate(TARGET_ATTACKS)}
    attacks = sorted(set(cells["attack"]), key=lambda a: (order.get(a, len(order)), a))
    for enc in sorted(set(cells["encoder"])):
        for attack in attacks:
            for weighting in WEIGHTINGS:
                for mode in MODES:
                    table = heatmap_table(
                        cells, attack=attack, mode=mode, weighting=weighting, encoder=enc
                    )
                    values = table.to_numpy(dtype=float, copy=True)
                    np.fill_diagonal(values, np.nan)  # single-task models alone say nothing
                    if np.isfinite(values).any():
                        panels.append(
                            {
                                "encoder": enc,
                                "attack": attack,
                                "mode": mode,
                                "weighting": weighting,
                                "table": table,
                            }
                        )
    return panels


def trim_panels(panels: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The panels with the rows and columns that are empty in *every* panel dropped.

    A search has one main task, so most rows of a main × auxiliary matrix are empty; they are
    dropped together so the panels of one figure keep the same shape.
    """
    if not panels:
        return []
    first = panels[0]["table"]
    rows = [r for r in first.index if any(p["table"].loc[r].notna().any() for p in panels)]
    cols = [c for c in first.columns if any(p["table"][c].notna().any() for p in panels)]
    return [{**p, "table": p["table"].loc[rows, cols]} for p in panels]


def task_set_values(run: RunData, main: str, *, source: str = "target") -> dict[str, float]:
    """Best (lowest) value per task set containing ``main``, over weightings: ``{tasks: v}``.

    ``source="target"``: the stage-2 target; ``"surrogate"``: the surrogate stage's final
    main-task vulnerability (``surrogate_vuln``), which an exhaustive search has for every subset.
    """
    if source not in ("target", "surrogate"):
        raise ValueError(f"source must be 'target' or 'surrogate', got source={source!r}")
    combos = combinations(run)
    if combos.empty:
        return {}
    combos = combos[combos["main"] == main].set_index("combo")
    if source == "target":
        values = combos["target"]
    else:
        sv, _, _ = surrogate_values(run, [get_surrogate("surrogate_vuln")])
        values = sv["surrogate_vuln"].reindex(combos.index)
    c = pd.DataFrame({"tasks": combos["tasks"], "v": values}).dropna()
    return {k: float(v) for k, v in c.groupby("tasks")["v"].min().items()}


def enable_chain(
    values: Mapping[str, float], main: str, full: str, *, order: str = "least"
) -> pd.DataFrame:
    """Figure-1-style chain: vulnerability as the tasks of ``full`` are enabled one by one.

    Starts at ``main`` alone and adds one task of ``full`` (with or without the main task) per
    step, among those whose enlarged
    set has a value in ``values`` (keyed by canonical task sets): ``order="least"`` adds the task
    giving the lowest next value (the most robust path), ``"most"`` the highest, ``"given"`` the
    next task in the order written in ``full``. Stops when no next set has a value.

    Returns:
        Columns ``step`` (0 = main alone), ``tasks``, ``added`` (``""`` at step 0), ``value``,
        ``marginal`` (Definition 3: value minus the previous step's; NaN at step 0).
    """
    if order not in ("least", "most", "given"):
        raise ValueError(f"order must be 'least', 'most' or 'given', got order={order!r}")
    vals = {canonical_tasks(k): float(v) for k, v in values.items()}
    main = canonical_tasks(main)
    if len(main) != 1:
        raise ValueError(f"main must be one task key, got {main!r}")
    parse_tasks(full)  # validates the keys, keeps the written order
    current = main
    rows = [
        {
            "step": 0,
            "tasks": current,
            "added": "",
            "value": vals.get(current, math.nan),
            "marginal": math.nan,
        }
    ]
    remaining = [k for k in full if k not in current]
    while remaining:
        options = [(k, canonical_tasks(current + k)) for k in remaining]
        options = [(k, s) for k, s in options if s in vals and not math.isnan(vals[s])]
        if not options:
            break
        if order == "given":
            k, nxt = options[0]
        else:
            pick = min if order == "least" else max
            k, nxt = pick(options, key=lambda o: (vals[o[1]], o[0]))
        prev = rows[-1]["value"]
        rows.append(
            {
                "step": len(rows),
                "tasks": nxt,
                "added": k,
                "value": vals[nxt],
                "marginal": vals[nxt] - prev,
            }
        )
        current = nxt
        remaining.remove(k)
    return pd.DataFrame(rows)


def pareto_front(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> np.ndarray:
    """Boolean mask of the points no other point dominates, minimising both ``x`` and ``y``.

    A point is dominated when another is no worse in both and strictly better in one; NaN
    points are never on the front. Equal points are both kept.
    """
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    ok = np.isfinite(xa) & np.isfinite(ya)
    front = np.zeros(len(xa), dtype=bool)
    for i in np.nonzero(ok)[0]:
        le = (xa[ok] <= xa[i]) & (ya[ok] <= ya[i])
        lt = (xa[ok] < xa[i]) | (ya[ok] < ya[i])
        front[i] = not np.any(le & lt)
    return front


def recommendation(run: RunData, table: pd.DataFrame | None = None) -> dict[str, Any]:
    """The answer first: the most robust combination found and how it compares.

    Returns a dict with ``status`` (``"target"``: chosen by the target; ``"surrogate"``: no
    target, chosen by the best-ranked surrogate; ``"empty"``), ``combo``, ``tasks``, ``main``,
    ``weights``, ``encoder``, ``target``, ``clean_error``, ``baseline`` (the main task alone with
    the same encoder, NaN if not run), ``change`` (relative change vs the baseline), ``n``
    (combinations with a target), and ``surrogate`` (the analysis row of the surrogate with the
    lowest regret, then highest Spearman, then most compute saved; ``None`` without analysis).
    """
    combos = combinations(run)
    out: dict[str, Any] = {"status": "empty", "n": 0, "surrogate": None}
    if combos.empty:
        return out
    scored = combos.dropna(subset=["target"])
    out["n"] = len(scored)
    if table is not None and len(table):
        ranked = table.dropna(subset=["regret"])
        if len(ranked):
            ranked = ranked.assign(
                _rho=ranked["spearman_rho"].fillna(-2), _saved=ranked["compute_saved"].fillna(-1e9)
            )
            best = ranked.sort_values(
                ["regret", "_rho", "_saved"], ascending=[True, False, False], kind="stable"
            ).iloc[0]
            out["surrogate"] = best.drop(labels=["_rho", "_saved"]).to_dict()
    if scored.empty:
        values, _, _ = surrogate_values(run)
        for sur in ("surrogate_vuln", "clean_error"):
            if sur in values and values[sur].notna().any():
                combo = values[sur].idxmin()
                row = combos.set_index("combo").loc[combo]
                out.update(
                    status="surrogate",
                    combo=combo,
                    by=sur,
                    value=float(values[sur][combo]),
                    **{k: row[k] for k in ("tasks", "main", "weights", "encoder")},
                )
                break
        return out
    best = scored.sort_values(["target", "clean_error", "combo"]).iloc[0]
    single = scored[(scored["tasks"] == best["main"]) & (scored["encoder"] == best["encoder"])]
    baseline = float(single["target"].min()) if len(single) else math.nan
    out.update(
        status="target",
        combo=best["combo"],
        tasks=best["tasks"],
        main=best["main"],
        weights=best["weights"],
        encoder=best["encoder"],
        target=float(best["target"]),
        target_attack=best["target_attack"],
        clean_error=float(best["clean_error"]),
        baseline=baseline,
        change=(float(best["target"]) - baseline) / baseline
        if baseline and not math.isnan(baseline)
        else math.nan,
    )
    return out


def compute_summary(run: RunData) -> pd.DataFrame:
    """Compute spent per stage: trials by status, epochs and wall-clock seconds."""
    t = run.trials
    if t.empty:
        return pd.DataFrame(
            columns=["stage", "trials", "completed", "pruned", "failed", "epochs", "wall_s"]
        )
    rows = []
    for stage, g in t.groupby("stage"):
        rows.append(
            {
                "stage": int(stage),
                "trials": len(g),
                "completed": int((g["status"] == FINISHED).sum()),
                "pruned": int((g["status"] == "pruned").sum()),
                "failed": int((~g["status"].isin([FINISHED, "pruned"])).sum()),
                "epochs": float(g["epochs"].sum(min_count=1)),
                "wall_s": float(g["wall_s"].sum(min_count=1)),
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# The adapter from a run folder


ATTACK_ALIASES: dict[str, str] = {"relative_vulnerability": "rel_vuln"}
"""Column names of ``attacks.parquet`` (``attacks.evaluate_robustness``) → canonical names."""


def load_run(path: str | Path) -> RunData:
    """Read ``runs/<name>/`` into a :class:`RunData` (the one place that knows the layout).

    Reads what ``rts search`` writes (``search.results``): ``trials.parquet`` (required),
    ``history.parquet`` and ``attacks.parquet`` (each optional: a missing one becomes a note),
    and ``config.yaml`` (``yaml.safe_load``). Raises ``FileNotFoundError`` when the folder or
    ``trials.parquet`` is missing.
    """
    import yaml

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"no run folder {str(root)!r}")
    trials_path = root / "trials.parquet"
    if not trials_path.is_file():
        raise FileNotFoundError(
            f"{str(trials_path)!r} not found: is {str(root)!r} the folder of an `rts search` run?"
        )
    notes: list[str] = []
    config: dict[str, Any] = {}
    cfg_path = root / "config.yaml"
    if cfg_path.is_file():
        loaded = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
        config = dict(loaded) if isinstance(loaded, Mapping) else {}
    else:
        notes.append("config.yaml not found")
    trials = pd.read_parquet(trials_path)
    history = attacks = None
    if (root / "history.parquet").is_file():
        history = pd.read_parquet(root / "history.parquet")
    else:
        notes.append("no history.parquet: early-epoch and gradient-bound surrogates unavailable")
    if (root / "attacks.parquet").is_file():
        attacks = pd.read_parquet(root / "attacks.parquet")
        attacks = attacks.rename(
            columns={k: v for k, v in ATTACK_ALIASES.items() if v not in attacks.columns}
        )
        if "attack" in attacks.columns:
            attacks = attacks.dropna(subset=["attack"])
    if history is not None and (
        "grad_bound" not in history.columns or history["grad_bound"].isna().all()
    ):
        notes.append("the search recorded no grad_bound: the first-order bound is unavailable")
    return make_run_data(trials, attacks, history, config=config, path=root, notes=notes)
