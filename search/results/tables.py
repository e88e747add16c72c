"""The one schema of a run's tables, and their Parquet I/O (atomic writes)."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class StageTables:
    """The tables of one stage: trials, per-epoch history and attack rows."""

    trials: pd.DataFrame
    history: pd.DataFrame
    attacks: pd.DataFrame


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` to ``path`` as Parquet, atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def read_parquet(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`write_parquet`."""
    return pd.read_parquet(path)
