"""The answer first: the most robust combination of a run and how it compares."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from rts.search.analysis.correlate import surrogate_values
from rts.search.analysis.rundata import RunData, combinations
from rts.search.results.recommend import baseline_row, best_row


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
    best = best_row(scored, "target", "combo")
    single = baseline_row(
        scored, "target", "combo", single=scored["tasks"] == best["main"], encoder=best["encoder"]
    )
    baseline = float(single["target"]) if len(single) else math.nan
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
        skill=float(best.get("skill", math.nan)),
        baseline_skill=float(single.get("skill", math.nan)) if len(single) else math.nan,
        baseline=baseline,
        change=(float(best["target"]) - baseline) / baseline
        if baseline and not math.isnan(baseline)
        else math.nan,
        seeds=_seeds(run),
    )
    out.update(_against_noise(run, str(best["combo"]), str(single.get("combo", ""))))
    return out


def _seeds(run: RunData) -> int:
    """Training seeds of the run's stage-2 trials (1 for runs without a ``seed`` column)."""
    s2 = run.trials[run.trials["stage"] == 2]
    return int(s2["seed"].nunique()) if "seed" in s2 and len(s2) else 1


def paired_comparison(run: RunData, best: str, baseline: str):
    """The :class:`~rts.search.results.recommend.Comparison` of the run's stage-2 combinations
    (keys: ``combo``) from their per-image errors of the ranked number (the ``worst`` case, the
    one attack of a one-attack ensemble, or the mean over the attacks), paired over the same
    images and training seeds; ``None`` when the run has none."""
    from rts.search.results.candidates import ranked_attack, ranked_rows
    from rts.search.results.recommend import compare

    cfg = run.config.get("attack", {}) if isinstance(run.config, dict) else {}
    cfg = cfg if isinstance(cfg, dict) else {}
    t = run.trials[run.trials["stage"] == 2].set_index("trial_id")
    images = run.images
    if images.empty or "trial_id" not in images:
        return None
    images = images[images["trial_id"].isin(t.index)]
    statistic = str(cfg.get("statistic", "mean"))
    attack = ranked_attack(images, str(cfg.get("aggregate", "worst")), statistic)
    if not attack:
        return None
    w = ranked_rows(images, attack)
    seed = t["seed"] if "seed" in t else pd.Series(0, index=t.index)
    frame = pd.DataFrame(
        {
            "key": w["trial_id"].map(t["combo"]).to_numpy(),
            "seed": w["trial_id"].map(seed).to_numpy(),
            "unit": w["image"].to_numpy(),
            "clean_error": w["clean_error"].to_numpy(),
            "adv_error": w["adv_error"].to_numpy(),
        }
    )
    return compare(frame, statistic, baseline=baseline, best=best)


def _against_noise(run: RunData, best: str, baseline: str) -> dict[str, Any]:
    """The recommendation's and the baseline's values and simultaneous intervals, and the
    verdict of their paired difference (:func:`paired_comparison`); ``{}`` without per-image
    errors."""
    comp = paired_comparison(run, best, baseline)
    if comp is None or best not in set(comp.table["key"]):
        return {}
    table = comp.table.set_index("key")
    out: dict[str, Any] = {
        "statistic": comp.statistic,
        "target": float(table.loc[best, "value"]),  # the statistic its interval is of
        "target_low": float(table.loc[best, "low"]),
        "target_high": float(table.loc[best, "high"]),
        "comparison": comp,
    }
    if comp.baseline and comp.baseline != best:
        base = float(table.loc[comp.baseline, "value"])
        out.update(
            baseline=base,
            baseline_low=float(table.loc[comp.baseline, "low"]),
            baseline_high=float(table.loc[comp.baseline, "high"]),
            change=(out["target"] - base) / base if base else math.nan,
            diff=comp.vs_baseline,
            verdict=comp.verdict,
            significant=comp.significant,
        )
    return out
