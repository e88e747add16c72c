"""Rows of the run's tables from Ray Tune's results (one row per trial, one per epoch)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from rts.search.engine.faults import result_failure
from rts.search.engine.paths import stage_trial_id, trial_config, trial_counter
from rts.search.engine.plan import trial_units
from rts.search.engine.rows import reported_rows
from rts.search.engine.space import Candidate, decode
from rts.search.engine.trainable import SEED_KEY
from rts.search.results.tables import (
    ATTACK_COLUMNS,
    HISTORY_KEYS,
    IMAGE_COLUMNS,
    StageTables,
    empty_images,
)
from rts.tasks.registry import TASK_KEYS


def collect_stage(
    results: Iterable[Any],
    stage: int,
    *,
    epochs: int,
    trained_encoder: str | None,
    seed: int = 0,
) -> StageTables:
    """Tables of one finished stage from Ray's ``ResultGrid`` (or any iterable of ``Result``).

    Args:
        results: the stage's results.
        stage: 1 or 2.
        epochs: the stage's epoch budget (a trial below it without error was pruned).
        trained_encoder: the encoder stage-1 trials train (``None``: the candidate's own).
        seed: the search's trial seed (a trial's ``seed`` column unless its config names one).
    """
    rows, histories, attack_rows, image_rows = [], [], [], []
    ordered = sorted(results, key=lambda r: trial_counter(r.path))
    for number, result in enumerate(ordered, start=1):
        config = trial_config(result)
        entry = config.get("candidate", config)
        cand = decode(entry)
        trial_id = stage_trial_id(stage, number)
        metrics = dict(result.metrics or {})
        hist = _history(reported_rows(result), trial_id, stage)
        reached = int(hist["epoch"].max()) if len(hist) else 0
        failure = result_failure(result)
        status = "failed" if failure else ("completed" if reached >= epochs else "pruned")
        encoder = trained_encoder or cand.encoder
        row: dict[str, Any] = {
            "trial_id": trial_id,
            "stage": stage,
            "role": entry.get("role", "search"),
            **candidate_columns(cand),
            "trained_encoder": encoder,
            "seed": int(entry.get(SEED_KEY, seed)),
            "max_epochs": epochs,
            "epochs": reached,
            "status": status,
            "failure": failure,
            **{
                m: _last(hist, m) if status != "failed" else math.nan
                for m in ("vuln", "clean_error", "skill", "spread", "grad_bound", "grad_bound_all")
            },
            "cost_units": trial_units(reached, encoder),
            "wall_s": float(metrics.get("time_total_s", math.nan)),
            "node_id": str(metrics.get("node_id", "")),
            "hostname": str(metrics.get("hostname", "")),
            "ray_trial_id": Path(str(result.path)).name.split("_")[-1],
            "params": json.dumps(config, sort_keys=True),
            "surrogate_trial_id": entry.get("surrogate_trial_id", ""),
            "checkpoint": "",
        }
        for key, value in metrics.items():
            wanted = key == "n_undefined" or key.startswith(("clean_", "skill_", "vuln_", "adv_"))
            if wanted and isinstance(value, int | float):
                row[key] = float(value) if status != "failed" else math.nan
        rows.append(row)
        histories.append(hist)
        done = status == "completed"
        for a in json.loads(metrics.get("attack_rows") or "[]") if done else []:
            attack_rows.append({"trial_id": trial_id, **a})
        for a in json.loads(metrics.get("image_rows") or "[]") if done else []:
            image_rows.append({"trial_id": trial_id, **a})
    trials = pd.DataFrame(rows)
    if len(trials):
        trials = trials.sort_values("trial_id", kind="stable").reset_index(drop=True)
    history = pd.concat(histories, ignore_index=True) if histories else _empty_history()
    attacks = pd.DataFrame(attack_rows) if attack_rows else pd.DataFrame(columns=ATTACK_COLUMNS)
    images = pd.DataFrame(image_rows, columns=IMAGE_COLUMNS) if image_rows else empty_images()
    return StageTables(trials, history, attacks, images)


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
    prefixes = ("clean_", "skill_", "vuln_")
    keep = [c for c in df.columns if c in HISTORY_KEYS or c.startswith(prefixes)]
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
