"""From stage 1 to stage 2: rank the surrogate trials, choose the candidates to train in full."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from rts.search.engine.space import Candidate, Space, decode
from rts.search.engine.trainable import SEED_KEY
from rts.search.results.effects import EffectModel, fit_effects, rank_subsets
from rts.search.results.pareto import pareto_ranks

log = logging.getLogger(__name__)


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
        clean = ok.loc[full, "clean_error"].fillna(math.inf)
        ok.loc[full, "_rank"] = pareto_ranks(ok.loc[full, metric], clean)
        keys.insert(2, "_rank")
    ok = ok.sort_values(keys, kind="stable")
    return ok.drop(columns=[c for c in ok.columns if c.startswith("_")])


@dataclass(frozen=True)
class Stage2Entry:
    """One stage-2 trial to run: the candidate, why it is there, and its stage-1 trial."""

    candidate: Candidate
    role: str
    surrogate_trial_id: str = ""
    reuse_of: str = ""
    """The stage-1 trial that already trained this candidate with stage 2's recipe: stage 2
    takes its results as they are instead of training it (``stage2.reuse``)."""

    def to_config(self) -> dict[str, Any]:
        """The trial config (what :func:`collect_stage` reads back)."""
        return {
            **self.candidate.to_config(),
            "role": self.role,
            "surrogate_trial_id": self.surrogate_trial_id,
        }


def with_seeds(entries: list[dict[str, Any]], seeds: int, first: int) -> list[dict[str, Any]]:
    """Every stage-2 trial config once per training seed ``first``, ``first + 1``, …
    (``stage2.seeds``); unchanged for one seed, whose trials use the search's trial seed."""
    if seeds <= 1:
        return entries
    return [{**e, SEED_KEY: first + i} for e in entries for i in range(seeds)]


def select_stage2(
    trials: pd.DataFrame,
    space: Space,
    *,
    top_k: int,
    uniform_twins: bool,
    pareto: bool = False,
    metric: str = "vuln",
    baseline: bool = True,
    model: str = "none",
    reuse: bool = False,
) -> list[Stage2Entry]:
    """The stage-2 trial set: the ``top_k`` distinct best stage-1 candidates by ``metric`` (not
    counting the single-task model), their uniform-weight twins (optional), and the single-task
    baseline of every encoder among them (optional). Deterministic given the stage-1 table.

    With ``model`` (``additive`` or ``pairwise``), the top ``k`` are the subsets the task-effect
    model fitted on the completed stage-1 trials predicts best, among *every* subset of the
    space (tried or not; uniform weights, the first encoder): :func:`predicted_top`.

    With ``reuse`` (stage-1 trials trained with stage 2's recipe, ``stage2.reuse``), every
    completed stage-1 trial joins stage 2 as it is (``reuse_of``; the single-task one as the
    baseline), and the ``top_k`` are the best candidates *not yet trained*: stage 2 fully trains
    the best-predicted untrained sets, and the recommendation is made among everything trained
    in full.
    """
    ranked = rank_stage1(trials, pareto=pareto, metric=metric)
    chosen: list[Stage2Entry] = []
    seen: set[tuple] = set()
    reused = _reused(ranked) if reuse else []
    seen.update(e.candidate.key for e in reused)
    if model != "none":
        for cand in predicted_top(ranked, space, metric=metric, kind=model, k=top_k, exclude=seen):
            seen.add(cand.key)
            chosen.append(Stage2Entry(cand, "predicted", _find_trial(ranked, cand)))
    for _, row in ranked.iterrows() if model == "none" else ():
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
        if base.key not in seen:
            extra.append(Stage2Entry(base, "baseline", _find_trial(ranked, base)))
    return chosen + extra + reused


def _reused(ranked: pd.DataFrame) -> list[Stage2Entry]:
    """Stage 2's entries for the completed stage-1 trials (trained with its recipe): one per
    distinct candidate, its best trial; the single-task model as ``baseline``."""
    out: list[Stage2Entry] = []
    seen: set[tuple] = set()
    for _, row in ranked[ranked["status"] == "completed"].iterrows():
        cand = _row_candidate(row)
        if cand.key in seen:
            continue
        seen.add(cand.key)
        role = "baseline" if cand.aux == "" else "reused"
        sid = str(row["trial_id"])
        out.append(Stage2Entry(cand, role, sid, reuse_of=sid))
    return out


def effect_model(ranked: pd.DataFrame, space: Space, *, metric: str, kind: str) -> EffectModel:
    """The task-effect model of ``metric`` over the completed stage-1 trials."""
    done = ranked[ranked["status"] == "completed"]
    return fit_effects(list(done["aux"]), list(done[metric]), space.pool, kind)


def predicted_top(
    ranked: pd.DataFrame,
    space: Space,
    *,
    metric: str,
    kind: str,
    k: int,
    exclude: set[tuple] | frozenset = frozenset(),
) -> list[Candidate]:
    """The ``k`` subsets (not the main task alone) the effect model predicts most robust,
    leaving out the candidates in ``exclude`` (keys: those already trained in full)."""
    try:
        fitted = effect_model(ranked, space, metric=metric, kind=kind)
    except ValueError as exc:  # nothing to fit on: every stage-1 trial failed
        log.warning("stage 2: no %s model to predict with (%s)", kind, exc)
        return []
    order = rank_subsets(fitted, [a for a in space.subsets() if a])
    cands = [space.candidate(a, "uniform", space.encoders[0]) for a in order["aux"]]
    return [c for c in cands if c.key not in exclude][:k]


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
