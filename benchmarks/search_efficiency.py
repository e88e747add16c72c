"""Search efficiency: the two-stage search against an exhaustive ground truth.

    python -m benchmarks.search_efficiency                          # defaults below, ~35 min
    python -m benchmarks.search_efficiency --seeds 0 --budgets screen-top3 --storage /tmp/eff

Run it as a module from the repository root: ``python -m benchmarks.search_efficiency``.

1. **Ground truth.** The exhaustive study of ``--config`` (default: the RQ1 synthetic study, main
   task ``r`` and the pool ``sdnE``: 16 subsets): every subset trained for the full
   ``stage2.epochs`` on its target encoder and attacked with the ensemble; its worst-case
   main-task relative vulnerability is the truth. It is run once per ``--truth-seeds`` training
   seed (``search.trial_seed``) and the truth is the mean over them: one seed's ranking can be
   mostly training noise (measured and printed: each seed's Spearman with the others' mean). Its
   stage 1 (every subset, no pruning) records every surrogate, correlated with the truth (the
   Table-3 analogue).
2. **Searches.** The two-stage search (``rts search``'s code path, :func:`search.run.run_search`,
   real Ray Tune, Optuna and ASHA) with each budget of :data:`BUDGETS` and each ``--seeds``
   (``search.seed``, the sampler's seed). Every search trains and attacks with the first truth
   seed (``search.trial_seed``), so a candidate's stage-2 value is exactly that truth run's
   (common random numbers; checked and printed): the searches differ by which candidates they
   sample, prune and carry over, and are charged against one exhaustive run.
3. **Scores** per search: compute spent as a fraction of one exhaustive run (trial-epochs
   weighted by the encoder's cost, :func:`compute_spent`; and summed trial wall time), the truth
   rank of the recommended subset in the held-out truth (``rank``; top-1/2/3 hits): the mean
   over the truth seeds *other* than the one the searches trained with, whose noise they share
   (with 16 equal subsets, the shared run's best is hit 28 % of the time, chance 6 %); and in the
   truth run it shares (``rank_run``, for reference), and its regret (truth of the pick − best
   truth), :func:`score_pick`. A pick of the single-task model when it is the true best and
   the search trained it anyway (``stage2.baseline``) is a free hit, counted apart; a search
   that recommended nothing is charged the worst regret; zero-epoch screens are charged their
   wall time (:func:`compute_spent`). With one truth seed nothing is held out and the scores
   share the searches' noise.

Prints Markdown tables. Wall times are medians over the seeds; the machine may be shared, so
compare the fractions (measured side by side in the same run) rather than absolute seconds.
Peak RSS: this driver process, and the largest Ray process reaped after Ray shut down.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import resource
import sys
import tempfile
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rts.search.engine import plan

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger(__name__)

DEFAULT_CONFIG = ROOT / "configs" / "rq1-tasks-norms-budgets-synthetic.yaml"
GOAL_FRACTION = 0.20
"""The goal: a pick statistically tied with the true best (the truth's tied-with-best set, paired
over the truth seeds' images) at <= 20 % of the exhaustive compute (trial-epochs weighted by
encoder cost), on every seed. Without per-image truth (simulated trials): within the true top
:data:`GOAL_RANK`."""
GOAL_RANK = 2


@dataclass(frozen=True)
class Budget:
    """One search budget: what the search may spend, as config overrides.

    Attributes:
        name: label in the tables (``tpe-8x1``: sampler, trials x stage-1 epochs).
        sampler: ``search.sampler``.
        n_trials: ``search.n_trials`` (stage-1 trials; ``None`` = the space size).
        epochs: ``stage1.epochs`` (surrogate epochs per trial, ASHA's ``max_t``; 0 = a
            zero-training screen).
        scheduler: ``stage1.scheduler`` (``asha`` prunes on ``metric``; ``fifo``).
        top_k: ``stage2.top_k`` (candidates trained in full).
        metric: ``stage1.metric`` (what ranks and prunes stage 1).
        grace: ``stage1.grace_period``.
        baseline: ``stage2.baseline`` (also train the single-task model in full).
        encoding: ``search.encoding`` (``per_task``, the default, or ``subset``).
        model: ``stage1.model`` (``none``, ``additive``, ``pairwise``).
        design: ``stage1.design`` (``sampler``, ``pairs``, ``triples``).
    """

    name: str
    sampler: str
    n_trials: int | None
    epochs: int
    scheduler: str = "fifo"
    top_k: int = 1
    metric: str = "vuln"
    grace: int = 1
    baseline: bool = True
    encoding: str = "per_task"
    model: str = "none"
    design: str = "sampler"

    def overrides(self) -> list[str]:
        """The config overrides that turn the ground-truth study into this search."""
        n_trials = "null" if self.n_trials is None else self.n_trials
        return [
            f"search.sampler={self.sampler}",
            f"search.n_trials={n_trials}",
            f"stage1.epochs={self.epochs}",
            f"stage1.scheduler={self.scheduler}",
            f"stage1.metric={self.metric}",
            f"stage1.grace_period={self.grace}",
            "stage1.reduction_factor=2",
            f"stage2.top_k={self.top_k}",
            f"stage2.baseline={str(self.baseline).lower()}",
            "stage2.uniform_twins=false",
            f"search.encoding={self.encoding}",
            f"stage1.model={self.model}",
            f"stage1.design={self.design}",
        ]


BUDGETS: dict[str, Budget] = {
    b.name: b
    for b in (
        Budget("tpe-8x1", "tpe", 8, 1),
        Budget("tpe-8x1-subset", "tpe", 8, 1, encoding="subset"),
        Budget("tpe-8x1-additive", "tpe", 8, 1, model="additive"),
        Budget("pairs-additive", "grid", None, 1, model="additive", design="pairs"),
        Budget("gp-8x1", "gp", 8, 1),
        Budget("tpe-8x1-pairwise", "tpe", 8, 1, model="pairwise"),
        Budget("triples-pairwise", "grid", None, 1, model="pairwise", design="triples"),
        Budget("tpe-4x2", "tpe", 4, 2),
        Budget("tpe-6x2-asha", "tpe", 6, 2, "asha"),
        Budget("random-8x1", "random", 8, 1),
        Budget("tpe-4x1-top2", "tpe", 4, 1, top_k=2),
        Budget("tpe-8x2-asha-nobase", "tpe", 8, 2, "asha", baseline=False),
        Budget("tpe-4x2-top2-nobase", "tpe", 4, 2, top_k=2, baseline=False),
        Budget("screen-top2", "grid", None, 0, top_k=2, metric="grad_bound_all", baseline=False),
        Budget("screen-top3", "grid", None, 0, top_k=3, metric="grad_bound_all", baseline=False),
    )
}
"""Budgets of the search. With 16 subsets, each full training is 1/16 = 6.25 % of the exhaustive
study: the top-k candidates plus the single-task baseline cost (k + 1)/16 (12.5 % for k = 1,
18.75 % for k = 2), leaving stage 1 about 7.5 % (k = 1) or 1.25 % (k = 2) of a 20 % goal; without
the baseline (``-nobase``, ``screen-``) k = 2 costs 12.5 % and k = 3 18.75 %. ``screen-`` budgets
train nothing in stage 1: every subset is scored at initialisation by ``grad_bound_all``."""
DEFAULT_BUDGETS = (
    "tpe-8x1",
    "tpe-6x2-asha",
    "tpe-8x2-asha-nobase",
    "tpe-4x2-top2-nobase",
    "screen-top2",
    "screen-top3",
)


# --------------------------------------------------------------------------------------------
# Scoring (pure functions, tested on crafted frames in tests/search/test_efficiency.py)


def mean_truth(truths: Sequence[pd.Series]) -> pd.Series:
    """The truth averaged over training seeds (one exhaustive run each), best first; a subset
    missing from a run (its trial failed) averages over the runs that have it."""
    if not truths:
        raise ValueError("no ground-truth run")
    values = pd.concat(list(truths), axis=1).mean(axis=1, skipna=True)
    return values.sort_values(kind="stable")


def truth_values(trials: pd.DataFrame) -> pd.Series:
    """The ground truth: main-task vulnerability per auxiliary subset (``aux``, ``""`` = the
    single-task model), from the completed stage-2 trials of an exhaustive run (mean over
    repeats), sorted best (lowest) first."""
    done = trials[(trials["stage"] == 2) & (trials["status"] == "completed")]
    done = done.dropna(subset=["vuln"])
    if done.empty:
        raise ValueError("the exhaustive run has no completed stage-2 trial: no ground truth")
    values = done.groupby(done["aux"].astype(str))["vuln"].mean()
    return values.sort_values(kind="stable")


def trial_units(trials: pd.DataFrame) -> pd.Series:
    """Compute of each trial in ResNet18-epoch units: epochs it trained × the relative cost of
    the encoder it trained (``trained_encoder``; :attr:`rts.models.EncoderSpec.cost`). Pruned and
    failed trials count the epochs they reached: that compute was spent."""
    epochs = pd.to_numeric(trials["epochs"], errors="coerce").fillna(0.0)
    encoders = trials["trained_encoder"].astype(str)
    units = [plan.trial_units(e, enc) for e, enc in zip(epochs, encoders, strict=True)]
    return pd.Series(units, index=trials.index, dtype=float)


def compute_spent(search: pd.DataFrame, exhaustive: pd.DataFrame) -> dict[str, float]:
    """Compute of a search (both stages) against the exhaustive study's full trainings.

    Args:
        search: the search's ``trials`` table (stage 1 and 2).
        exhaustive: the exhaustive run's ``trials``; only its stage-2 trials (every configuration
            trained in full on its target encoder) count: its stage 1 only records surrogates
            for the analysis, an exhaustive study does not need it.

    Returns:
        ``units`` and ``exhaustive_units`` (trial-epochs × encoder cost), ``units_fraction``,
        ``stage1_units``, ``stage2_units``, ``screen_units`` (what the zero-epoch screens
        cost), ``wall_s`` and ``exhaustive_wall_s`` (summed trial seconds, training and attacks;
        NaN-skipping) and ``wall_fraction``.

    A trial that trained no epoch (a stage-1 screen at initialisation) still ran its input
    gradients and its attack: it is charged its wall time at the exhaustive study's units per
    second, not 0 units.
    """
    units = trial_units(search)
    full = exhaustive[exhaustive["stage"] == 2]
    ex_units = float(trial_units(full).sum())
    seconds = pd.to_numeric(search["wall_s"], errors="coerce").fillna(0.0)
    wall = float(seconds.sum())
    ex_wall = float(pd.to_numeric(full["wall_s"], errors="coerce").sum(skipna=True))
    screens = pd.to_numeric(search["epochs"], errors="coerce").fillna(0.0) == 0
    if ex_wall > 0:
        units = units.where(~screens, seconds * ex_units / ex_wall)
    stage = search["stage"].astype(int)
    return {
        "units": float(units.sum()),
        "stage1_units": float(units[stage == 1].sum()),
        "stage2_units": float(units[stage == 2].sum()),
        "screen_units": float(units[screens].sum()),
        "exhaustive_units": ex_units,
        "units_fraction": float(units.sum()) / ex_units if ex_units > 0 else math.nan,
        "wall_s": wall,
        "exhaustive_wall_s": ex_wall,
        "wall_fraction": wall / ex_wall if ex_wall > 0 else math.nan,
    }


def score_pick(
    pick: str,
    truth: pd.Series,
    tied: Collection[str] | None = None,
    seed_sd: float = math.nan,
) -> dict[str, Any]:
    """How good the recommended subset ``pick`` is by the ground truth (lower is better).

    ``rank`` is 1 + the number of subsets strictly better than the pick (ties share a rank);
    ``top{1,2,3}_hit`` say whether the rank is within 1, 2, 3; ``regret`` = truth[pick] − best
    truth; ``regret_norm`` = regret / (worst − best) (0 = the best, 1 = the worst);
    ``regret_sd`` = regret / ``seed_sd`` (the truth's training-seed standard deviation: a regret
    below 1 is inside the seed noise); ``tied_hit`` = the pick is in ``tied``, the subsets
    statistically tied with the true best (NaN when not given). A pick that is not in the truth
    (no recommendation) scores NaN and no hit, ``no_pick`` True, and ``worst_regret`` (worst −
    best truth) is what :func:`summarize_budgets` charges it, so that a search that recommended
    nothing is not silently left out of the mean regret.
    """
    best = float(truth.min())
    spread = float(truth.max()) - best
    missing = pick not in truth.index or (isinstance(pick, float) and math.isnan(pick))
    value = math.nan if missing else float(truth[pick])
    rank = math.nan if missing else 1 + int((truth < value).sum())
    regret = value - best
    return {
        "pick": pick,
        "best": str(truth.idxmin()),
        "rank": rank,
        "top1_hit": rank <= 1,
        "top2_hit": rank <= 2,
        "top3_hit": rank <= 3,
        "tied_hit": (not missing and pick in tied) if tied is not None else math.nan,
        "regret": regret,
        "regret_norm": regret / spread if spread > 0 else (math.nan if missing else 0.0),
        "regret_sd": regret / seed_sd if seed_sd > 0 else math.nan,
        "no_pick": missing,
        "worst_regret": spread,
    }


def truth_seed_sd(per_seed: Mapping[int, pd.Series]) -> float:
    """The truth's training-seed noise: the root mean square, over subsets, of each subset's
    standard deviation across the truth seeds (NaN with one seed)."""
    if len(per_seed) < 2:
        return math.nan
    sd = pd.concat(list(per_seed.values()), axis=1).std(axis=1, ddof=1)
    return float(np.sqrt((sd.dropna() ** 2).mean()))


def truth_units(images: Mapping[int, pd.DataFrame], trials: Mapping[int, pd.DataFrame]):
    """The truth runs' per-image worst-case errors as comparison units: ``key`` = the subset,
    ``seed`` = the truth seed (a cluster), ``unit`` = the image (for
    :func:`rts.search.results.recommend.compare`)."""
    frames = []
    for seed, img in images.items():
        s2 = trials[seed][trials[seed]["stage"] == 2]
        aux = s2.set_index("trial_id")["aux"].astype(str)
        w = img[(img["attack"] == "worst") & img["trial_id"].isin(aux.index)]
        frames.append(
            pd.DataFrame(
                {
                    "key": w["trial_id"].map(aux).to_numpy(),
                    "seed": seed,
                    "unit": w["image"].to_numpy(),
                    "clean_error": w["clean_error"].to_numpy(),
                    "adv_error": w["adv_error"].to_numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def truth_tied(
    images: Mapping[int, pd.DataFrame], trials: Mapping[int, pd.DataFrame], statistic: str
) -> Any:
    """The truth's comparison (:class:`rts.search.results.recommend.Comparison`): which subsets
    are statistically tied with the best, paired over every truth seed's images; ``None``
    without per-image errors."""
    from rts.search.results.recommend import compare

    units = truth_units(images, trials)
    return compare(units, statistic) if len(units) else None


def sampling_diagnostics(
    search: pd.DataFrame, truth: pd.Series, metric: str = "vuln"
) -> dict[str, Any]:
    """Why a search missed: was the true best sampled in stage 1, how did stage 1 rank it (by
    ``metric``, ``stage1.metric``), and which subsets reached stage 2."""
    from rts.search.results.select import rank_stage1

    s1 = search[search["stage"] == 1]
    best = str(truth.idxmin())
    sampled = set(s1["aux"].astype(str))
    ranked = rank_stage1(s1, metric=metric) if len(s1) else s1
    order = list(dict.fromkeys(ranked["aux"].astype(str))) if len(ranked) else []
    s2 = search[search["stage"] == 2]
    return {
        "distinct_sampled": len(sampled),
        "best_sampled": best in sampled,
        "best_stage1_rank": order.index(best) + 1 if best in order else math.nan,
        "stage1_pruned": int((s1["status"] == "pruned").sum()),
        "stage2": ",".join(_label(a) for a in s2["aux"].astype(str)),
    }


def stage2_reproduces_truth(search: pd.DataFrame, truth: pd.Series) -> float:
    """Largest |stage-2 vuln − truth| over the search's completed stage-2 trials (0 when trials
    are deterministic and share the truth run's ``search.trial_seed``)."""
    s2 = search[(search["stage"] == 2) & (search["status"] == "completed")]
    diffs = [
        abs(float(v) - float(truth[a]))
        for a, v in zip(s2["aux"].astype(str), s2["vuln"], strict=True)
        if a in truth.index
    ]
    return max(diffs) if diffs else math.nan


def summarize_budgets(rows: pd.DataFrame) -> pd.DataFrame:
    """Per budget over the seeds: hit rates, mean regret, median fractions, the goal verdict
    (a pick in the truth's tied-with-best set when the rows have ``tied_hit``, else within
    :data:`GOAL_RANK`; ``top2_run`` counts hits against the single exhaustive run, ``rank_run``,
    when the rows have it). A search without a recommendation counts in the mean regret at the
    worst regret (``no_pick`` says how many); ``free_hits``: hits on a single-task best that
    the search trained anyway (``stage2.baseline``), reported apart (``hits_not_free``)."""
    out = []
    for name, g in rows.groupby("budget", sort=False):
        tied = "tied_hit" in g and g["tied_hit"].notna().all()
        hit = g["tied_hit"].astype(bool) if tied else g["rank"] <= GOAL_RANK
        within = hit & (g["units_fraction"] <= GOAL_FRACTION)
        extra = {}
        if tied:
            extra["tied_with_best"] = f"{int(hit.sum())}/{len(g)}"
        if "rank_run" in g:
            extra["top2_run"] = f"{int((g['rank_run'] <= GOAL_RANK).sum())}/{len(g)}"
        if "regret_sd" in g and g["regret_sd"].notna().any():
            extra["mean_regret_sd"] = float(g["regret_sd"].mean())
        if "free_hit" in g:  # the single-task best that every stage 2 trains anyway
            free = g["free_hit"].fillna(False).astype(bool)
            extra["free_hits"] = f"{int(free.sum())}/{len(g)}"
            extra["hits_not_free"] = f"{int((hit & ~free).sum())}/{len(g)}"
        regret = g["regret"]
        if "worst_regret" in g:  # no recommendation: charged the worst regret, counted
            regret = regret.fillna(g["worst_regret"])
            extra["no_pick"] = f"{int(g['no_pick'].astype(bool).sum())}/{len(g)}"
        out.append(
            {
                "budget": name,
                "seeds": len(g),
                "units_fraction": float(g["units_fraction"].median()),
                "wall_fraction": float(g["wall_fraction"].median()),
                "top1": f"{int(g['top1_hit'].sum())}/{len(g)}",
                "top2": f"{int(g['top2_hit'].sum())}/{len(g)}",
                "top3": f"{int(g['top3_hit'].sum())}/{len(g)}",
                **extra,
                "mean_regret": float(regret.mean()),
                "mean_regret_norm": float(
                    g["regret_norm"].fillna(1.0 if "worst_regret" in g else math.nan).mean()
                ),
                "best_sampled": f"{int(g['best_sampled'].sum())}/{len(g)}",
                "goal": "met" if bool(within.all()) else "missed",
                "search_s": float(g["search_s"].median()),
            }
        )
    return pd.DataFrame(out)


def _label(aux: str) -> str:
    return aux if aux else "-"


# --------------------------------------------------------------------------------------------
# Running


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory in MiB (``ru_maxrss`` is KiB on Linux) of this process, or with
    ``RUSAGE_CHILDREN`` of the largest reaped child process."""
    return resource.getrusage(who).ru_maxrss / 1024


def markdown(frame: pd.DataFrame, digits: Mapping[str, int] | None = None) -> str:
    """``frame`` as a Markdown table; floats with ``digits[col]`` decimals (default 3)."""
    from rts.search.report.text import fmt, text_table

    digits = dict(digits or {})
    cells = frame.copy()
    for col in cells.columns:
        if pd.api.types.is_float_dtype(cells[col]):
            cells[col] = [fmt(v, digits.get(col, 3)) for v in cells[col]]
    return text_table(cells.astype(str))


def run_study(cfg: Any, storage: str, trial_fn: Any, echo: Any) -> tuple[Any, float]:
    """Run (or resume) one study through ``rts search``'s code path; (outcome, wall seconds)."""
    from rts.search.results.pipeline import run_search

    start = time.perf_counter()
    out = run_search(cfg, storage=storage, trial_fn=trial_fn, echo=echo)
    return out, time.perf_counter() - start


def table3(truth_dir: Path, surrogates: Sequence[str] | None = None) -> pd.DataFrame:
    """The surrogates' correlations with the truth over every subset (the Table-3 analogue)."""
    from rts.search.analysis.correlate import analyze
    from rts.search.analysis.rundata import load_run

    return analyze(load_run(truth_dir), surrogates=surrogates, k=1)


def truth_overrides(overrides: Sequence[str], seed: int, size: int, s1_epochs: int) -> list[str]:
    """The exhaustive study with training seed ``seed``: every subset once (grid), stage 1
    unpruned for ``s1_epochs`` (it records every surrogate), every subset trained in full."""
    return [
        *overrides,
        "search.sampler=grid",
        "search.encoding=subset",  # the grid enumerates subsets; pinned so runs resume
        "search.n_trials=null",
        f"search.trial_seed={seed}",
        f"stage1.epochs={s1_epochs}",
        "stage1.scheduler=fifo",
        "stage1.metric=vuln",
        f"stage2.top_k={size}",
        "stage2.baseline=true",
    ]


def seed_agreement(truths: Mapping[int, pd.Series]) -> pd.DataFrame:
    """How much the truth moves with the training seed, per exhaustive run: its best subset,
    the rank that subset has in the mean of the *other* runs, and the run's Spearman with that
    mean. A one-seed exhaustive study (100 % of the compute) can do no better than this."""
    from scipy import stats

    rows = []
    for seed, values in truths.items():
        others = [v for k, v in truths.items() if k != seed]
        row: dict[str, Any] = {"seed": seed, "best": _label(str(values.idxmin()))}
        if others:
            rest = mean_truth(others)
            row["best_rank_in_others"] = score_pick(str(values.idxmin()), rest)["rank"]
            row["spearman_vs_others"] = float(
                stats.spearmanr(values, rest.reindex(values.index))[0]
            )
        rows.append(row)
    return pd.DataFrame(rows)


def stage1_metric(trials: pd.DataFrame, history: pd.DataFrame, name: str) -> pd.Series:
    """A stage-1 surrogate ``metric@epoch`` (e.g. ``grad_bound_all@0``) per auxiliary subset,
    read from a run's history (the best trial of a subset sampled twice)."""
    metric, epoch = name.rsplit("@", 1)
    s1 = trials[trials["stage"] == 1].set_index("trial_id")["aux"].astype(str)
    h = history[(history["stage"] == 1) & (history["epoch"] == int(epoch))]
    if metric not in h.columns:
        return pd.Series(dtype=float)
    h = h[h["trial_id"].isin(s1.index)]
    values = pd.Series(h[metric].to_numpy(dtype=float), index=s1[h["trial_id"]].to_numpy())
    return values.groupby(level=0).min()


def surrogates_vs(
    trials: pd.DataFrame, history: pd.DataFrame, truth: pd.Series, surrogates: Sequence[str]
) -> pd.DataFrame:
    """Correlations of stage-1 surrogates with ``truth`` (e.g. the seed mean): Pearson and
    Spearman (scipy), and the truth ranks of the surrogate's 3 best subsets."""
    from scipy import stats

    rows = []
    for name in surrogates:
        values = stage1_metric(trials, history, name).reindex(truth.index)
        ok = values.notna()
        if ok.sum() < 3 or values[ok].nunique() < 2:
            continue
        top = list(values[ok].sort_values(kind="stable").index[:3])
        rows.append(
            {
                "surrogate": name,
                "n": int(ok.sum()),
                "pearson_r": float(stats.pearsonr(values[ok], truth[ok])[0]),
                "spearman": float(stats.spearmanr(values[ok], truth[ok])[0]),
                "top 3": " ".join(_label(a) for a in top),
                "their truth ranks": " ".join(str(score_pick(a, truth)["rank"]) for a in top),
            }
        )
    return pd.DataFrame(rows)


@dataclass
class Evaluation:
    """What one ground truth and its searches produced (see :func:`evaluate`)."""

    runs: dict[int, Any]
    per_seed: dict[int, pd.Series]
    truth: pd.Series
    frame: pd.DataFrame
    comparison: Any = None
    """The truth's :class:`~rts.search.results.recommend.Comparison` (tied-with-best set)."""
    seed_sd: float = math.nan
    """The truth's training-seed standard deviation (:func:`truth_seed_sd`)."""

    @property
    def run0(self) -> Any:
        """The exhaustive run whose trial seed the searches share."""
        return next(iter(self.runs.values()))

    @property
    def truth_run(self) -> pd.Series:
        """That run's truth."""
        return next(iter(self.per_seed.values()))


def evaluate(
    config: str,
    overrides: Sequence[str],
    budgets: Sequence[Budget],
    seeds: Sequence[int],
    truth_seeds: Sequence[int],
    storage: str,
    *,
    trial_fn: Any = None,
    prefix: str = "",
    say: Any = None,
) -> Evaluation:
    """Run (or resume) the exhaustive truth once per truth seed, then every budget × seed."""
    from rts.search.config.convert import load_config, resolve
    from rts.search.engine.space import Space

    base = resolve(load_config(config, overrides))
    size = Space.from_config(base).size
    s1_epochs = max([b.epochs for b in budgets] + [base.stage1.epochs])
    runs = {}
    for seed in truth_seeds:
        over = truth_overrides(overrides, seed, size, s1_epochs)
        over.append(f"name={prefix}truth-seed{seed}")
        runs[seed], _ = run_study(load_config(config, over), storage, trial_fn, say)
    per_seed = {seed: truth_values(out.trials) for seed, out in runs.items()}
    run0, truth_run = runs[truth_seeds[0]], per_seed[truth_seeds[0]]
    # the searches train with the first truth seed: score them on the others (held out), whose
    # noise they did not share; with one truth seed there is nothing held out (said in print)
    held = list(truth_seeds[1:]) or list(truth_seeds[:1])
    truth = mean_truth([per_seed[s] for s in held])
    images = {
        s: pd.read_parquet(runs[s].paths.images) for s in held if runs[s].paths.images.exists()
    }
    comparison = None
    if trial_fn is None and len(images) == len(held):  # real trials: per-image truth
        trials = {s: runs[s].trials for s in held}
        comparison = truth_tied(images, trials, base.attack.statistic)
    tied = set(comparison.tied) if comparison is not None else None
    seed_sd = truth_seed_sd(per_seed)
    rows = []
    for budget in budgets:
        # a design ignores the sampler: every sampler seed would train the same trials
        for seed in seeds if budget.design == "sampler" else seeds[:1]:
            over = [
                *overrides,
                *budget.overrides(),
                f"name={prefix}search-{budget.name}-seed{seed}",
                f"search.seed={seed}",
                f"search.trial_seed={truth_seeds[0]}",
            ]
            out, wall = run_study(load_config(config, over), storage, trial_fn, say)
            rec = out.summary.recommended_aux if out.summary.recommended_trial else math.nan
            row = {"budget": budget.name, "seed": seed}
            row.update(compute_spent(out.trials, run0.trials))
            row.update(score_pick(rec, truth, tied, seed_sd))
            row["free_hit"] = bool(budget.baseline and rec == "" and truth.idxmin() == "")
            row["rank_run"] = score_pick(rec, truth_run)["rank"]
            row.update(sampling_diagnostics(out.trials, truth, budget.metric))
            row["stage2_vs_truth"] = stage2_reproduces_truth(out.trials, truth_run)
            row["search_s"] = wall
            rows.append(row)
            if say:
                say(
                    f"{prefix}{budget.name} seed {seed}: pick {_label(str(rec))} (rank "
                    f"{row['rank']}), {row['units_fraction']:.1%} of the exhaustive units"
                )
    return Evaluation(runs, per_seed, truth, pd.DataFrame(rows), comparison, seed_sd)


SEARCH_COLUMNS = [
    "budget",
    "seed",
    "units_fraction",
    "wall_fraction",
    "pick",
    "rank",
    "rank_run",
    "regret",
    "regret_norm",
    "tied_hit",
    "free_hit",
    "no_pick",
    "regret_sd",
    "best_sampled",
    "best_stage1_rank",
    "distinct_sampled",
    "stage1_pruned",
    "stage2",
    "search_s",
]


def print_searches(frame: pd.DataFrame) -> None:
    """The per-search and per-budget tables."""
    shown = frame[SEARCH_COLUMNS].copy()
    shown["pick"] = [_label(str(p)) for p in shown["pick"]]
    shown["best_stage1_rank"] = [
        "-" if pd.isna(r) else str(int(r)) for r in shown["best_stage1_rank"]
    ]
    print(
        "\n## Per search (rank: in the held-out truth seeds' mean; rank_run: in the seed run it "
        "shares)\n"
    )
    print(markdown(shown, {"regret": 4, "search_s": 0, "units_fraction": 3}))
    goal = (
        "in the truth's tied-with-best set"
        if frame["tied_hit"].notna().all()
        else f"true rank <= {GOAL_RANK}"
    )
    print(f"\n## Per budget (goal: {goal} at <= {GOAL_FRACTION:.0%}, every seed)\n")
    print(markdown(summarize_budgets(frame), {"mean_regret": 4, "search_s": 0}))


def surrogate_names(s1_epochs: int) -> list[str]:
    """``metric@epoch`` for every stage-1 metric and epoch 0..``s1_epochs``."""
    metrics = ("vuln", "clean_error", "grad_bound", "grad_bound_all")
    return [f"{m}@{e}" for m in metrics for e in range(s1_epochs + 1)]


def print_real(ev: Evaluation, truth_seeds: Sequence[int], main: str, s1_epochs: int) -> None:
    """Tables of the real-trial evaluation."""
    truth, per_seed, run0 = ev.truth, ev.per_seed, ev.run0
    print(
        f"\n## Ground truth ({len(truth)} subsets, main task {main!r}, mean over training seeds "
        f"{', '.join(map(str, truth_seeds))})\n"
    )
    gt = pd.DataFrame(
        {
            "rank": range(1, len(truth) + 1),
            "aux": [_label(a) for a in truth.index],
            "vuln": truth.to_numpy(),
            **{f"seed {k}": v.reindex(truth.index).to_numpy() for k, v in per_seed.items()},
        }
    )
    print(markdown(gt, {c: 4 for c in gt.columns if c not in ("rank", "aux")}))
    ex = run0.trials[run0.trials["stage"] == 2]
    print(
        f"\nOne exhaustive run: {len(ex)} full trainings, {trial_units(ex).sum():.0f} "
        f"ResNet18-epoch units, {ex['wall_s'].sum():.0f} s of trial time. The searches are "
        "charged against one run (the truth's extra seeds measure it, a user would not pay them)."
    )
    if len(per_seed) > 1:
        print("\n## How much the truth moves with the training seed\n")
        print(markdown(seed_agreement(per_seed), {"spearman_vs_others": 2}))
        pick = str(ev.truth_run.idxmin())
        print(
            f"\nThe exhaustive seed-{truth_seeds[0]} run itself (100 % of the compute) picks "
            f"{_label(pick)}: rank {score_pick(pick, truth)['rank']} of {len(truth)} in the mean "
            "truth."
        )
    print(f"\n## Surrogates of the seed-{truth_seeds[0]} run against the mean truth\n")
    table = surrogates_vs(run0.trials, run0.history, truth, surrogate_names(s1_epochs))
    print(markdown(table, {"pearson_r": 2, "spearman": 2}))
    print(f"\n## Surrogates of the seed-{truth_seeds[0]} run against its own truth (Table 3)\n")
    from rts.search.report.text import format_analysis

    print(format_analysis(table3(run0.paths.root)))
    if ev.comparison is not None:
        c = ev.comparison
        shown = c.table.assign(key=[_label(k) for k in c.table["key"]])
        print(
            f"\n## The truth against its noise ({c.statistic} statistic, paired over "
            f"{len(per_seed)} seeds x the held-out images; seed standard deviation "
            f"{ev.seed_sd:.3g})\n"
        )
        print(markdown(shown, {k: 4 for k in ("value", "low", "high", "diff", "diff_low")}))
        print(f"\nTied with the best: {', '.join(_label(k) for k in c.tied)}")
    print_searches(ev.frame)
    print(
        f"\nstage-2 values vs the seed-{truth_seeds[0]} run, largest |difference| over all "
        f"searches: {ev.frame['stage2_vs_truth'].max():.2g} (0 = trials reproduce it exactly)"
    )


def print_fake(evs: Mapping[float, Evaluation], s1_epochs: int) -> None:
    """Tables of the simulated evaluations: per noise level, how well the stage-1 surrogates
    rank the oracle and what each budget finds."""
    print("\n# Simulated surrogates (tests.search.fake_trial: exact oracle truth, noisy stage 1)\n")
    names = [n for n in surrogate_names(s1_epochs) if n.split("@")[0] != "clean_error"]
    for noise, ev in evs.items():
        print(f"\n## noise {noise:g}: surrogates against the oracle truth\n")
        table = surrogates_vs(ev.run0.trials, ev.run0.history, ev.truth, names)
        print(markdown(table, {"pearson_r": 2, "spearman": 2}))
        print(f"\n## noise {noise:g}: per budget\n")
        print(markdown(summarize_budgets(ev.frame), {"mean_regret": 4, "search_s": 0}))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="ground-truth study")
    parser.add_argument("--seeds", default="0,1,2", help="search seeds (sampler), e.g. 0,1,2")
    parser.add_argument(
        "--truth-seeds",
        default="0,1,2",
        help="training seeds of the exhaustive study, one full run each; the truth is their "
        "mean and the searches share the first one's trial seed (default 0,1,2)",
    )
    parser.add_argument(
        "--budgets",
        default=",".join(DEFAULT_BUDGETS),
        help=f"budgets to run, from {', '.join(BUDGETS)}",
    )
    parser.add_argument(
        "--fake-noise",
        default="",
        help="also (or with --no-real, only) run every budget on simulated trials "
        "(tests.search.fake_trial: a known oracle) whose stage-1 surrogates carry Gaussian "
        "noise of these sizes, e.g. 0,0.05,0.1: how good must a surrogate be for the goal",
    )
    parser.add_argument("--no-real", action="store_true", help="skip the real-trial evaluation")
    parser.add_argument(
        "--pool",
        default=None,
        help="with --no-real: the simulated search at scale over this auxiliary pool (up to 10 "
        "letters, e.g. sDnkKeEpr: 512 subsets) instead; see benchmarks.efficiency_sim",
    )
    parser.add_argument("--out", default=None, help="CSV of the simulated rows (with --pool)")
    parser.add_argument("--storage", default=None, help="runs folder (default: a temp folder)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("overrides", nargs="*", help="config overrides for every study")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.pool:
        return _simulate_at_scale(args)
    from rts.search.engine.session import RAY_ENV_DEFAULTS  # Ray's token auth stays on

    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)

    import optuna
    import ray

    from rts.search.config.convert import load_config, resolve
    from tests.search.fake_trial import FakeTrial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    truth_seeds = [int(s) for s in args.truth_seeds.split(",") if s.strip()]
    if not truth_seeds:
        parser.error("--truth-seeds: name at least one training seed")
    noises = [float(x) for x in args.fake_noise.split(",") if x.strip()]
    names = [b.strip() for b in args.budgets.split(",") if b.strip()]
    unknown = [b for b in names if b not in BUDGETS]
    if unknown:
        parser.error(f"unknown budget {unknown[0]!r}; choose from {', '.join(BUDGETS)}")
    budgets = [BUDGETS[b] for b in names]
    storage = args.storage or tempfile.mkdtemp(prefix="rts-eff-")
    base = resolve(load_config(args.config, args.overrides))
    s1_epochs = max([b.epochs for b in budgets] + [base.stage1.epochs])
    say = lambda line: print(f"  [{time.strftime('%H:%M:%S')}] {line}", flush=True)  # noqa: E731
    print(f"# Search efficiency ({args.config}; runs in {storage})\n", flush=True)
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    common = (args.config, args.overrides, budgets, seeds)
    try:
        real = None
        if not args.no_real:
            real = evaluate(*common, truth_seeds, storage, say=say)
        fake = {
            noise: evaluate(
                *common,
                truth_seeds[:1],  # the oracle has no training noise
                storage,
                trial_fn=FakeTrial(noise=noise),
                prefix=f"fake{noise:g}-",
                say=say,
            )
            for noise in noises
        }
    finally:
        ray.shutdown()

    if real is not None:
        print_real(real, truth_seeds, base.search.main, s1_epochs)
    if fake:
        print_fake(fake, s1_epochs)
    print(
        f"\nPeak RSS: driver {peak_rss_mib():.0f} MiB, largest reaped child (a Ray process) "
        f"{peak_rss_mib(resource.RUSAGE_CHILDREN):.0f} MiB"
    )
    return 0


def _simulate_at_scale(args: argparse.Namespace) -> int:
    """``--no-real --pool POOL``: :func:`benchmarks.efficiency_sim.simulate`, table and CSV."""
    from benchmarks.efficiency_sim import fit_generator, simulate, summary
    from rts.tasks.registry import parse_tasks

    if not args.no_real:
        raise SystemExit("rts: error: --pool runs the simulation only; add --no-real")
    pool = parse_tasks(args.pool)
    if "d" in pool or not 1 <= len(pool) <= 10:
        raise SystemExit(f"rts: error: --pool {args.pool!r}: 1 to 10 auxiliaries around d")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    start = time.perf_counter()
    rows = simulate(pool, seeds)
    print(f"# Simulated search at scale: pool {pool} ({2 ** len(pool)} subsets), seeds {seeds}\n")
    gen = fit_generator()
    print(
        f"generator fitted on benchmarks/data/taskgrouping: lam {gen.lam:.2f} (1 = additive), "
        f"main effects {gen.mu_b:+.3f} ± {gen.sd_b:.3f}, pairs {gen.mu_g:+.3f} ± {gen.sd_g:.3f}, "
        f"triples ± {gen.sd_h:.3f}; early-vs-full Spearman {gen.early_spearman:.2f}, "
        f"full-vs-test {gen.full_spearman:.3f}\n"
    )
    print(markdown(summary(rows)))
    print(f"\n{time.perf_counter() - start:.0f} s; peak RSS {peak_rss_mib():.0f} MiB")
    if args.out:
        from rts.tasks.io import atomic_path

        with atomic_path(args.out) as tmp:
            rows.to_csv(tmp, index=False)
        print(f"rows: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
