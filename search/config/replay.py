"""Reading a replay's tables of measured results (``replay:``): task set → value per task.

A table is one row per trained network and one column per task; a cell holds that task's value
(lower is better) when the network learned the task and is empty otherwise, so a row's filled
cells are its task set (Standley et al.'s files as published; a user's CSV or Parquet of past
runs). Which task each column is comes from ``replay.columns``, never from the file.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rts.search.config.schema import ConfigError, ReplayConfig
from rts.tasks.registry import canonical_tasks


@dataclass(frozen=True)
class ReplayTables:
    """Measured values: ``values[fraction][task set][task]``; task sets in registry order."""

    values: Mapping[float, Mapping[str, Mapping[str, float]]]

    @property
    def fractions(self) -> tuple[float, ...]:
        """The fractions of training measured, ascending."""
        return tuple(sorted(self.values))

    def value(self, tasks: str, main: str, fraction: float) -> float:
        """``main``'s value in the network trained on ``tasks`` at ``fraction`` (NaN if the
        table has no such network)."""
        row = self.values.get(fraction, {}).get(canonical_tasks(tasks))
        return math.nan if row is None else float(row.get(main, math.nan))

    def frame(self, main: str) -> pd.DataFrame:
        """One row per task set holding ``main``: ``tasks``, ``aux`` and one column per fraction."""
        sets = sorted(
            {t for rows in self.values.values() for t in rows if main in t},
            key=lambda t: (len(t), t),
        )
        out = pd.DataFrame({"tasks": sets, "aux": [t.replace(main, "") for t in sets]})
        for f in self.fractions:
            out[f] = [self.value(t, main, f) for t in sets]
        return out


def read_replay(cfg: ReplayConfig) -> ReplayTables:
    """The replay's tables (cached per process: every trial of a worker reads them once).

    Raises:
        ConfigError: a file is missing, has another number of columns than ``replay.columns``,
            a non-numeric cell, or two rows of the same task set.
    """
    key = (tuple(sorted(cfg.tables.items())), tuple(cfg.columns), cfg.skip_rows)
    return _read(key)


@functools.lru_cache(maxsize=8)
def _read(key: tuple) -> ReplayTables:
    tables, columns, skip = key
    return ReplayTables({float(f): read_table(path, columns, skip) for f, path in tables})


def read_table(
    path: str, columns: tuple[str, ...], skip_rows: int = 0
) -> dict[str, dict[str, float]]:
    """One table: task set (registry order) → task → value (see the module docstring)."""
    where = f"replay.tables: {path}"
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix == ".csv":
            frame = pd.read_csv(path)
        else:  # Standley et al.'s .txt: tab-separated, no header
            frame = pd.read_csv(path, sep="\t", header=None, skip_blank_lines=False)
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{where}: cannot read ({exc})") from None
    frame = frame.iloc[skip_rows:]
    if frame.shape[1] != len(columns):
        raise ConfigError(
            f"{where}: has {frame.shape[1]} columns, replay.columns names {len(columns)} "
            f"({list(columns)}); give one letter per column, '_' to skip one"
        )
    out: dict[str, dict[str, float]] = {}
    for i, row in enumerate(frame.itertuples(index=False), start=skip_rows + 1):
        cells = {}
        for letter, cell in zip(columns, row, strict=True):
            if letter == "_" or cell is None or (isinstance(cell, str) and not cell.strip()):
                continue
            try:
                value = float(cell)
            except ValueError:
                raise ConfigError(f"{where}: row {i}: not a number: {cell!r}") from None
            if not math.isnan(value):
                cells[letter] = value
        if not cells:
            continue  # an empty line (a network not measured)
        tasks = canonical_tasks("".join(cells))
        if tasks in out:
            raise ConfigError(f"{where}: row {i}: task set {tasks!r} appears twice")
        out[tasks] = cells
    return out
