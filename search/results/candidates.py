"""Stage-2 candidates across training seeds: one row per candidate, its mean over seeds and the
interval of that mean over (seed, image) units (``stage2.seeds``; ``candidates.parquet``).

With one seed a candidate is its trial. With several, the tables keep one row per seed and the
recommendation compares candidates by their mean over seeds, paired over the same seeds and
images; the seeds are clusters (each seed's statistic is one observation), so a difference
between two candidates has to exceed the seed-to-seed variation, which holds the image noise
too (:mod:`rts.attacks.simultaneous`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from rts.search.results.recommend import Comparison, baseline_row, best_row, compare

CANDIDATE_KEY = ("main", "aux", "weights", "encoder")
"""Columns that identify a stage-2 candidate (its seeds share them)."""

CANDIDATE_COLUMNS = (
    "trial_id",
    "role",
    *CANDIDATE_KEY,
    "n_seeds",
    "trial_ids",
    "vuln",
    "vuln_low",
    "vuln_high",
    "seed_sd",
    "tied_with_best",
    "clean_error",
    "skill",
    "skill_min",
)
"""Columns of ``candidates.parquet``: ``trial_id`` is the candidate's first trial (its name in
the summary), ``trial_ids`` all of them; ``vuln`` the mean over seeds, ``vuln_low``/``high``
the simultaneous 95 % interval (over images with one seed, over seeds with several),
``seed_sd`` the standard deviation across seeds, ``tied_with_best`` whether the paired
difference to the best includes 0."""


def per_candidate(done: pd.DataFrame) -> pd.DataFrame:
    """One row per candidate of the completed stage-2 rows ``done``: numeric columns averaged
    over its seeds, the rest from its first trial; ``n_seeds``, ``trial_ids``, ``seed_sd``
    (standard deviation of ``vuln`` across seeds, NaN for one seed) and ``skill_min``."""
    if done.empty:
        return done.assign(n_seeds=0, trial_ids="", seed_sd=math.nan, skill_min=math.nan)
    rows = done.sort_values("trial_id", kind="stable")
    groups = rows.groupby(list(CANDIDATE_KEY), sort=False, dropna=False)
    numeric = [
        c
        for c in rows.columns
        if pd.api.types.is_numeric_dtype(rows[c])
        and c not in ("stage", "seed")
        and not pd.api.types.is_bool_dtype(rows[c])
    ]
    out = groups.nth(0).set_index(list(CANDIDATE_KEY))
    out[numeric] = groups[numeric].mean()
    out["n_seeds"] = groups.size()
    out["trial_ids"] = groups["trial_id"].agg(",".join)
    out["seed_sd"] = groups["vuln"].std(ddof=1)
    out["skill_min"] = groups["skill"].min() if "skill" in rows else math.nan
    return out.reset_index()


MEAN_OVER_ATTACKS = "mean"
"""The ``attack`` name :func:`ranked_rows` gives the per-image mean over a ``mean``-aggregated
ensemble's attacks."""

LINEAR_STATISTICS = ("mean", "ratio_of_means", "adv_error")
"""Statistics linear in the adversarial errors (for fixed clean errors): their value on the
per-image mean over attacks equals the mean of their per-attack values, the ``mean``
aggregate's vulnerability. (The median of a mean is not the mean of medians.)"""


def ranked_attack(images: pd.DataFrame | None, aggregate: str, statistic: str = "mean") -> str:
    """The ``attack`` whose per-image rows give the number the search ranks by: the per-image
    ``worst`` case of the ensemble, the one attack of a one-attack ensemble (its own worst
    case and mean), or :data:`MEAN_OVER_ATTACKS` for a ``mean`` aggregate of several attacks
    under a linear ``statistic``; ``""`` when none is there (a ``mean`` aggregate under the
    ``median`` statistic)."""
    if images is None or images.empty or "attack" not in images.columns:
        return ""
    names = set(images["attack"].astype(str))
    if aggregate == "worst" and "worst" in names:
        return "worst"
    attacks = names - {"worst"}
    if len(attacks) == 1:
        return attacks.pop()
    if aggregate == "mean" and len(attacks) > 1 and statistic in LINEAR_STATISTICS:
        return MEAN_OVER_ATTACKS
    return ""


def ranked_rows(images: pd.DataFrame, attack: str) -> pd.DataFrame:
    """The per-image rows of ``attack`` (:func:`ranked_attack`); for :data:`MEAN_OVER_ATTACKS`
    one row per trial and image whose adversarial error is the mean over the attacks."""
    if attack != MEAN_OVER_ATTACKS:
        return images[images["attack"] == attack]
    rows = images[images["attack"] != "worst"]
    out = rows.groupby(["trial_id", "image"], as_index=False, sort=False).agg(
        clean_error=("clean_error", "first"), adv_error=("adv_error", "mean")
    )
    return out.assign(attack=MEAN_OVER_ATTACKS)


def pooled_images(images: pd.DataFrame, done: pd.DataFrame, attack: str) -> pd.DataFrame:
    """The per-image errors of ``attack`` for :func:`~rts.search.results.recommend.compare`:
    ``key`` = the candidate's first trial id, ``seed`` = the trial's training seed, ``unit`` =
    the image (the same image under the same seed pairs across candidates)."""
    cols = ["key", "seed", "unit", "clean_error", "adv_error"]
    if images is None or images.empty or "attack" not in images.columns or done.empty:
        return pd.DataFrame(columns=cols)
    first = per_candidate(done)
    rep = {}
    for _, row in first.iterrows():
        for tid in str(row["trial_ids"]).split(","):
            rep[tid] = str(row["trial_id"])
    seed = done.set_index("trial_id")["seed"] if "seed" in done else pd.Series(dtype=int)
    rows = ranked_rows(images[images["trial_id"].isin(rep)], attack)
    return pd.DataFrame(
        {
            "key": rows["trial_id"].map(rep),
            "seed": rows["trial_id"].map(seed).fillna(0).astype(int),
            "unit": rows["image"],
            "clean_error": rows["clean_error"],
            "adv_error": rows["adv_error"],
        }
    )


def recommend(done: pd.DataFrame, encoder: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """The recommended candidate row and the single-task baseline row (on the recommendation's
    encoder, else ``encoder``) of the per-candidate table ``done`` (``{}`` when none)."""
    rec = best_row(done, "vuln", "trial_id")
    enc = str(rec.get("encoder", encoder)) if len(rec) else encoder
    base = (
        baseline_row(done, "vuln", "trial_id", single=done["aux"] == "", encoder=enc)
        if len(done)
        else {}
    )
    return rec, base


def compare_candidates(
    cands: pd.DataFrame,
    done: pd.DataFrame,
    images: pd.DataFrame | None,
    *,
    aggregate: str,
    statistic: str,
    seed: int,
    encoder: str,
) -> Comparison | None:
    """The recommendation against the noise on the (seed, image) units: ``None`` without
    per-image errors of the ranked number (:func:`ranked_attack`)."""
    attack = ranked_attack(images, aggregate, statistic)
    if not attack or cands.empty:
        return None
    rec, base = recommend(cands, encoder)
    if not len(rec):
        return None
    frame = pooled_images(images, done, attack)
    baseline = str(base["trial_id"]) if len(base) else ""
    return compare(frame, statistic, baseline=baseline, best=str(rec["trial_id"]), seed=seed)


def candidate_table(done: pd.DataFrame, comp: Comparison | None) -> pd.DataFrame:
    """``candidates.parquet``: :data:`CANDIDATE_COLUMNS`, best first; intervals and ties from
    ``comp`` (:func:`compare_candidates` of the same rows; ``None``: left empty)."""
    cands = per_candidate(done)
    if cands.empty:
        return pd.DataFrame(columns=list(CANDIDATE_COLUMNS))
    cands["vuln_low"] = cands["vuln_high"] = math.nan
    cands["tied_with_best"] = pd.NA
    if comp is not None:
        table = comp.table.set_index("key")
        ids = cands["trial_id"].astype(str)
        compared = ids.map(table["value"]).to_numpy(dtype=float)  # the same statistic
        cands["vuln"] = cands["vuln"].where(pd.isna(compared), compared)
        cands["vuln_low"] = ids.map(table["low"]).to_numpy(dtype=float)
        cands["vuln_high"] = ids.map(table["high"]).to_numpy(dtype=float)
        cands["tied_with_best"] = ids.map(table["tied"]).astype("boolean").to_numpy()
    for col in CANDIDATE_COLUMNS:
        if col not in cands.columns:
            cands[col] = math.nan
    out = cands[list(CANDIDATE_COLUMNS)]
    return out.sort_values(["vuln", "trial_id"], na_position="last").reset_index(drop=True)
