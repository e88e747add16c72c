"""A finished run read back: :class:`RunData`, the canonical schema the analysis works on.

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
``sweeps``: attack rows at budgets other than the search's own (``rts attack RUN --eps ...``)
    the columns of ``attacks.parquet`` (``norm``, ``eps``, ``steps``, ``skill``, ``vuln``,
    ``vuln_low``, ``vuln_high`` among them); empty for a run never swept.
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
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rts.search.analysis.surrogates import TrialRecord
from rts.search.engine.paths import STUDIES_INDEX
from rts.search.results.tables import BUDGET_COLUMNS, at_budget, empty_images
from rts.tasks.parsing import parse_fraction
from rts.tasks.registry import canonical_tasks
from rts.tasks.weights import format_weights, weights_key

TARGET_ATTACKS: tuple[str, ...] = ("pgd", "apgd", "wgd", "worst")
"""The strong attacks whose worst case is the target when a trial has no ``vuln`` (others are
used only if none of these ran). ``worst`` is the per-sample worst case over the ensemble."""


FINISHED = "completed"


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
    "skill": math.nan,
    "vuln": math.nan,
}


HISTORY_COLUMNS: tuple[str, ...] = (
    "time_s",
    "clean_error",
    "vuln",
    "grad_bound",
    "grad_bound_all",
)


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
        sweeps: attack rows at other budgets than the search's (:func:`split_budgets`).
        images: the main task's per-image errors of the stage-2 trials under every attack
            (``rts.search.results.tables.IMAGE_COLUMNS``; empty for runs without them): the
            intervals and paired tests are computed from them.
    """

    trials: pd.DataFrame
    attacks: pd.DataFrame
    history: pd.DataFrame
    config: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None
    notes: tuple[str, ...] = ()
    sweeps: pd.DataFrame = field(default_factory=pd.DataFrame)
    images: pd.DataFrame = field(default_factory=empty_images)

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
    sweeps: pd.DataFrame | None = None,
    images: pd.DataFrame | None = None,
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
    t["weights"] = [format_weights(w, k) for w, k in zip(w_raw, t["tasks"], strict=True)]
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
        pd.DataFrame() if sweeps is None else sweeps.reset_index(drop=True),
        empty_images() if images is None else images[images["trial_id"].astype(str).isin(known)],
    )


def _frame(df: pd.DataFrame | None, required: Sequence[str]) -> pd.DataFrame:
    """A copy of ``df`` (or an empty frame) checked to have ``required`` columns."""
    if df is None:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in required})
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"missing column {missing[0]!r}; need {', '.join(required)}")
    return df.copy()


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
    error), ``skill`` (their main-task skill against the training mean; NaN when the run did
    not record it), ``target_cost`` (mean seconds of its target trials), ``target_epochs``,
    ``n_target``, ``surrogate_trials`` (ids, ``;``-joined). Sorted by target (best first), then
    by combo.
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
        skill=("skill", "mean"),
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
    "skill",
    "target_cost",
    "target_epochs",
    "n_target",
    "surrogate_trials",
)


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
    history = attacks = sweeps = None
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
        attacks, sweeps = split_budgets(attacks, config)
    if history is not None and (
        "grad_bound" not in history.columns or history["grad_bound"].isna().all()
    ):
        notes.append("the search recorded no grad_bound: the first-order bound is unavailable")
    images_path = root / "images.parquet"
    images = pd.read_parquet(images_path) if images_path.is_file() else None
    if images is not None:  # the search's own budget: a sweep's rows are not the study's
        images = split_budgets(images, config)[0]
    return make_run_data(
        trials,
        attacks,
        history,
        config=config,
        path=root,
        notes=notes,
        sweeps=sweeps,
        images=images,
    )


def search_budget(config: Mapping[str, Any]) -> tuple[str, float, int] | None:
    """The run's own ``(norm, eps, steps)`` from its config; ``None`` when it does not say."""
    a = config.get("attack") if isinstance(config, Mapping) else None
    if not isinstance(a, Mapping) or not {"norm", "eps", "steps"} <= set(a):
        return None
    return str(a["norm"]), parse_fraction(a["eps"]), int(a["steps"])


def split_budgets(
    attacks: pd.DataFrame, config: Mapping[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``attacks.parquet`` as the search's own rows (what the paper tables read) and the rows a
    sweep added at other budgets; rows without a budget are the search's."""
    budget = search_budget(config)
    if budget is None or not set(BUDGET_COLUMNS) <= set(attacks.columns):
        return attacks, attacks.iloc[0:0]
    own = at_budget(attacks, *budget) | attacks["eps"].isna()
    return attacks[own], attacks[~own]


def load_studies(path: str | Path) -> dict[str, RunData] | None:
    """The studies of a run of several main tasks, by main task in the order run (each read
    with :func:`load_run`; a study not finished yet is left out); ``None`` for a run of one."""
    root = Path(path)
    index = root / STUDIES_INDEX
    if not index.is_file():
        return None
    studies = json.loads(index.read_text(encoding="utf-8"))["studies"]
    return {
        s["main"]: load_run(root / s["folder"])
        for s in studies
        if (root / s["folder"] / "trials.parquet").is_file()
    }


def load_location(location: str | Path) -> tuple[Path, RunData | dict[str, RunData]]:
    """A run folder or URI as the reading commands take it: the local folder (a URI is
    downloaded to its staging copy first) and the run, or for a run of several main tasks its
    studies by main task (:func:`load_studies`)."""
    from rts.search.engine.storage import fetch  # pyarrow.fs: only for a URI

    root = fetch(location)
    studies = load_studies(root)
    return root, studies if studies is not None else load_run(root)
