"""How well each surrogate predicted the target: correlations, decision metrics (Table 3)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from rts.search.analysis.rundata import RunData, combinations
from rts.search.analysis.stats import (
    KENDALL_VECTOR_MAX,
    MIN_BOOTSTRAP,
    _bootstrap_ci,
    _kendall,
    _kendall_vec,
    _pearson_vec,
    _spearman_vec,
)
from rts.search.analysis.surrogates import Surrogate, TrialRecord, expand_surrogates
from rts.search.engine import plan

MIN_POINTS = 5
"""Correlations (and regression lines, and a "best surrogate") need at least this many
combinations with both a surrogate and a target value: below, one line says what is missing."""


def _surrogate_cost(s: Surrogate, trial: TrialRecord) -> tuple[float, float]:
    """(seconds, ResNet18-epoch units) spent on ``trial`` until ``s`` is available; NaN seconds
    if unknown. Units come from the search's one cost model (:func:`plan.trial_units`)."""
    epochs_total = float(trial.row.get("epochs", math.nan))
    wall = float(trial.row.get("wall_s", math.nan))
    encoder = str(trial.row.get("trained_encoder") or trial.row.get("encoder") or "resnet18")
    epochs = epochs_total if s.epoch is None else float(s.epoch)
    units = plan.trial_units(epochs, encoder)
    if s.epoch is None:
        return wall, units
    t = trial.at_epoch("time_s", s.epoch)
    if math.isnan(t) and s.epoch == 0:
        t = 0.0
    if math.isnan(t) and epochs_total > 0 and not math.isnan(wall):
        t = wall * s.epoch / epochs_total
    return t, units


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
