"""The one schema of a run's tables, and their Parquet I/O (atomic writes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from rts.tasks.io import atomic_path

HISTORY_KEYS = (
    "epoch",
    "train_loss",
    "clean_error",
    "skill",
    "spread",
    "vuln",
    "grad_bound",
    "grad_bound_all",
)
"""History columns always present (NaN when a trial did not report them)."""


ATTACK_COLUMNS = ("trial_id", "attack", "attacked", "task", "relative_vulnerability")
"""Columns an ``attacks`` table has even when empty (the rest: ``attacks.evaluate_robustness``)."""


IMAGE_COLUMNS = ("trial_id", "attack", "image", "clean_error", "adv_error")
"""Columns of the ``images`` table: the main task's per-image errors of every stage-2 trial
under every attack (``worst`` included), for intervals and paired comparisons."""


BUDGET_COLUMNS = ("norm", "eps", "steps")
"""The budget of a measurement: a run's ``attacks`` and ``images`` tables hold the search's own
budget and those ``rts attack RUN --eps ... --norm ...`` added (:mod:`rts.search.results.sweep`)."""

ATTACK_KEY = ("trial_id", "attack", "attacked", "task", *BUDGET_COLUMNS)
"""What identifies a row of ``attacks.parquet``."""

IMAGE_KEY = ("trial_id", "attack", *BUDGET_COLUMNS, "image")
"""What identifies a row of ``images.parquet`` (the main task's, under the run's attacked set)."""

SWEEP_COLUMNS = ("skill", "vuln", "vuln_low", "vuln_high")
"""Columns of a sweep's attack rows: the evaluated task's skill on the attacked images, its
vulnerability (the run's ``attack.statistic``) and that value's 95 % bootstrap interval."""


def with_budget(df: pd.DataFrame, norm: str, eps: float, steps: int) -> pd.DataFrame:
    """``df`` whose rows without a budget (the search's own per-image rows) get the search's."""
    out = df.copy()
    for column, value in zip(BUDGET_COLUMNS, (norm, float(eps), int(steps)), strict=True):
        out[column] = out[column].fillna(value) if column in out.columns else value
    return out


def at_budget(df: pd.DataFrame, norm: str, eps: float, steps: int | None = None) -> pd.Series:
    """Which rows of ``df`` were measured at ``(norm, eps[, steps])`` (float-tolerant eps)."""
    mask = (df["norm"] == norm) & ((df["eps"] - float(eps)).abs() < 1e-9)
    return mask & (df["steps"] == steps) if steps is not None else mask


def _keys(df: pd.DataFrame, key: tuple[str, ...]) -> pd.Series:
    """Each row's key as a tuple of strings (numbers as rounded floats: ``25`` = ``25.0``)."""
    numeric = pd.api.types.is_numeric_dtype
    parts = [
        df[c].astype(float).round(9).astype(str) if numeric(df[c]) else df[c].astype(str)
        for c in key
    ]
    return pd.Series(list(zip(*parts, strict=True)), index=df.index, dtype=object)


def append_missing(
    old: pd.DataFrame, new: pd.DataFrame, key: tuple[str, ...]
) -> tuple[pd.DataFrame, int]:
    """``old`` plus the rows of ``new`` whose ``key`` ``old`` lacks; and how many were added."""
    if len(old) == 0:
        return new.reset_index(drop=True), len(new)
    fresh = new[~_keys(new, key).isin(set(_keys(old, key)))]
    if len(fresh) == 0:
        return old, 0
    return pd.concat([old, fresh], ignore_index=True), len(fresh)


def keep_added_rows(
    table: pd.DataFrame, path: Path, key: tuple[str, ...], budget: tuple[str, float, int]
) -> pd.DataFrame:
    """The search's ``table`` plus the rows a sweep appended to its file at ``path`` earlier,
    so that rewriting a run's tables (a rerun of ``rts search``) loses no sweep."""
    table = with_budget(table, *budget)
    if not path.exists():
        return table
    merged, _ = append_missing(table, with_budget(read_parquet(path), *budget), key)
    return merged


def empty_images() -> pd.DataFrame:
    """An ``images`` table without rows (older runs, stage 1)."""
    return pd.DataFrame({c: pd.Series(dtype="float64") for c in IMAGE_COLUMNS})


@dataclass(frozen=True)
class StageTables:
    """The tables of one stage: trials, per-epoch history, attack rows and per-image errors."""

    trials: pd.DataFrame
    history: pd.DataFrame
    attacks: pd.DataFrame
    images: pd.DataFrame = field(default_factory=empty_images)


STAGE_TABLES = ("history", "attacks", "images", "trials")
"""A stage's tables in writing order: ``trials`` last, its presence marks the stage finished."""


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` to ``path`` as Parquet, atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def read_parquet(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`write_parquet`."""
    return pd.read_parquet(path)
