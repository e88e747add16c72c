"""A trial's reported epochs, kept in its checkpoints so that a hard kill cannot lose them.

Ray writes a trial's results (``result.json``, ``progress.csv``) from the driver through
buffered files: after ``kill -9`` of the driver, lines it had not flushed are gone or cut in half,
and the restored experiment reads those files back as an empty or partial table, although the
trial's checkpoints (persisted before each report returned) and the experiment snapshot are
intact. Seen on a deterministic search killed in stage 2: two finished stage-2 trials came back
"pruned after 0 epochs". So every checkpoint a trial writes also holds every row it has reported
(:data:`ROWS_FILE`, carried over from the checkpoint it resumed from), and the result tables
complete Ray's table from the last checkpoint when it lacks epochs (:func:`reported_rows`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from rts.search.engine.faults import drop_failure_rows

log = logging.getLogger(__name__)

ROWS_FILE = "rts_rows.json"
"""File in every trial checkpoint: the rows (metrics dicts) the trial reported up to it."""


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and anything else a metric may be."""
    return value.item() if hasattr(value, "item") else str(value)


def write_rows(folder: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write ``rows`` into a checkpoint folder being built."""
    (folder / ROWS_FILE).write_text(json.dumps(list(rows), default=_plain), encoding="utf-8")


def read_rows(folder: Path | None) -> list[dict[str, Any]]:
    """The rows of the checkpoint unpacked in ``folder`` (none if it holds no rows file)."""
    if folder is None or not (folder / ROWS_FILE).is_file():
        return []
    return list(json.loads((folder / ROWS_FILE).read_text(encoding="utf-8")))


def _checkpoint_rows(checkpoint: Any) -> list[dict[str, Any]]:
    """The rows file of a Ray checkpoint (local or URI storage), read alone."""
    try:
        with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{ROWS_FILE}") as fh:
            return list(json.loads(fh.read().decode("utf-8")))
    except (OSError, ValueError, AttributeError) as exc:  # an older run or another layout
        log.debug("no rows in checkpoint %s: %s", getattr(checkpoint, "path", checkpoint), exc)
        return []


def reported_rows(result: Any, first_epoch: int = 1) -> pd.DataFrame | None:
    """A Ray ``Result``'s table of reported epochs (failure rows dropped), completed from the
    rows of its last checkpoint when Ray's table lacks an epoch from ``first_epoch`` (a
    deterministic rung's first) up to its last result's."""
    df = drop_failure_rows(result.metrics_dataframe)
    last = (result.metrics or {}).get("epoch")
    have = set()
    if df is not None and not df.empty and "epoch" in df.columns:
        have = {int(e) for e in pd.to_numeric(df["epoch"], errors="coerce").dropna()}
    if not isinstance(last, int | float):
        return df
    wanted = set(range(first_epoch, int(last) + 1)) - have
    if not wanted:
        return df
    saved = _checkpoint_rows(result.checkpoint) if result.checkpoint is not None else []
    by_epoch = {int(r["epoch"]): r for r in saved if "epoch" in r and int(r["epoch"]) in wanted}
    if int(last) in wanted:
        by_epoch.setdefault(int(last), dict(result.metrics))  # the snapshot's last result
    rows = [by_epoch[e] for e in sorted(by_epoch)]
    if not rows:
        return df
    log.warning(
        "%s: Ray's result files lack epoch(s) %s; taken from the trial's checkpoint",
        getattr(result, "path", "a trial"),
        sorted({int(r["epoch"]) for r in rows}),
    )
    recovered = drop_failure_rows(pd.DataFrame(rows))
    frames = [f for f in (recovered, df) if f is not None and not f.empty]
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values("epoch", kind="stable").reset_index(drop=True)
