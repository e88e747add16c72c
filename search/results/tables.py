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
