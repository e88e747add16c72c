"""The paper's tables from a run: task-pair heatmaps, task-enabling chains, task-set values."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rts.search.analysis.correlate import surrogate_values
from rts.search.analysis.rundata import FINISHED, TARGET_ATTACKS, RunData, combinations
from rts.search.analysis.surrogates import get_surrogate
from rts.tasks.registry import TASK_KEYS, canonical_tasks, parse_tasks

MODES: tuple[str, ...] = ("single", "multi")


WEIGHTINGS: tuple[str, ...] = ("baseline", "weighted")


def pair_cells(run: RunData, *, stage: int = 2) -> pd.DataFrame:
    """Long table of the Table 1/2 cells from rts.models with one or two tasks.

    For a model with tasks ``{m, a}`` and each of its tasks ``m`` as the evaluated main task:
    ``mode="single"`` is the attack on ``m`` alone, ``"multi"`` the attack on both; a single-task
    model ``{m}`` gives the diagonal cell ``(m, m)`` of both modes. Models with uniform weights
    are the baseline, others weighted. Columns: ``attack``, ``mode``, ``weighting``, ``main``,
    ``aux``, ``encoder``, ``value`` (mean over repeats of a combination, then the minimum over
    weightings of the same pair: the best weights found), ``combo``.
    """
    t = run.trials
    t = t[(t["stage"] == stage) & (t["status"] == FINISHED) & (t["tasks"].str.len() <= 2)]
    a = run.attacks.merge(t[["trial_id", "tasks", "combo", "encoder", "weights"]], on="trial_id")
    if a.empty:
        return pd.DataFrame(
            columns=["attack", "mode", "weighting", "main", "aux", "encoder", "value", "combo"]
        )
    a = a[[tk in ts for tk, ts in zip(a["task"], a["tasks"], strict=True)]]
    single = a["attacked"] == a["task"]
    multi = a["attacked"] == a["tasks"]
    rows = []
    for mode, mask in (("single", single), ("multi", multi)):
        m = a[mask].copy()
        if m.empty:
            continue
        m["mode"] = mode
        m["main"] = m["task"]
        m["aux"] = [ts.replace(k, "") or k for k, ts in zip(m["task"], m["tasks"], strict=True)]
        m["weighting"] = np.where(m["weights"] == "uniform", "baseline", "weighted")
        rows.append(m)
    cells = pd.concat(rows, ignore_index=True)
    per_combo = (
        cells.groupby(["attack", "mode", "weighting", "main", "aux", "encoder", "combo"])[
            "rel_vuln"
        ]
        .mean()
        .reset_index()
    )
    idx = per_combo.groupby(["attack", "mode", "weighting", "main", "aux", "encoder"])[
        "rel_vuln"
    ].idxmin()
    return per_combo.loc[idx].rename(columns={"rel_vuln": "value"}).reset_index(drop=True)


def heatmap_table(
    cells: pd.DataFrame,
    *,
    attack: str,
    mode: str,
    weighting: str = "baseline",
    encoder: str | None = None,
) -> pd.DataFrame:
    """A Table-1/2-style matrix: rows = main (attacked, evaluated) task, columns = auxiliary task.

    ``cells`` comes from :func:`pair_cells`; rows and columns are the tasks present, in registry
    order; missing cells are NaN. ``encoder=None`` needs the cells to come from one encoder.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got mode={mode!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(
            f"weighting must be one of {', '.join(WEIGHTINGS)}, got weighting={weighting!r}"
        )
    c = cells
    if encoder is not None:
        c = c[c["encoder"] == encoder]
    elif c["encoder"].nunique() > 1:
        raise ValueError(
            f"cells come from several encoders ({', '.join(sorted(c['encoder'].unique()))}); "
            "pass encoder="
        )
    keys = [k for k in TASK_KEYS if k in set(cells["main"]) | set(cells["aux"])]
    sel = c[(c["attack"] == attack) & (c["mode"] == mode) & (c["weighting"] == weighting)]
    table = pd.DataFrame(
        math.nan, index=pd.Index(keys, name="main"), columns=pd.Index(keys, name="aux")
    )
    for _, r in sel.iterrows():
        table.loc[r["main"], r["aux"]] = r["value"]
    return table


def heatmap_panels(cells: pd.DataFrame) -> list[dict[str, Any]]:
    """Every non-empty (encoder, attack, mode, weighting) heatmap, in a stable reading order.

    A panel is listed only when it has an off-diagonal cell (a model with an auxiliary task):
    the diagonal (single-task models) is the reference the pairs are read against, and there
    the multi-task attack is the single-task attack.
    """
    panels = []
    order = {a: i for i, a in enumerate(TARGET_ATTACKS)}
    attacks = sorted(set(cells["attack"]), key=lambda a: (order.get(a, len(order)), a))
    for enc in sorted(set(cells["encoder"])):
        for attack in attacks:
            for weighting in WEIGHTINGS:
                for mode in MODES:
                    table = heatmap_table(
                        cells, attack=attack, mode=mode, weighting=weighting, encoder=enc
                    )
                    values = table.to_numpy(dtype=float, copy=True)
                    np.fill_diagonal(values, np.nan)  # single-task models alone say nothing
                    if np.isfinite(values).any():
                        panels.append(
                            {
                                "encoder": enc,
                                "attack": attack,
                                "mode": mode,
                                "weighting": weighting,
                                "table": table,
                            }
                        )
    return panels


def trim_panels(panels: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The panels with the rows and columns that are empty in *every* panel dropped.

    A search has one main task, so most rows of a main × auxiliary matrix are empty; they are
    dropped together so the panels of one figure keep the same shape.
    """
    if not panels:
        return []
    first = panels[0]["table"]
    rows = [r for r in first.index if any(p["table"].loc[r].notna().any() for p in panels)]
    cols = [c for c in first.columns if any(p["table"][c].notna().any() for p in panels)]
    return [{**p, "table": p["table"].loc[rows, cols]} for p in panels]


def task_set_values(run: RunData, main: str, *, source: str = "target") -> dict[str, float]:
    """Best (lowest) value per task set containing ``main``, over weightings: ``{tasks: v}``.

    ``source="target"``: the stage-2 target; ``"surrogate"``: the surrogate stage's final
    main-task vulnerability (``surrogate_vuln``), which an exhaustive search has for every subset.
    """
    if source not in ("target", "surrogate"):
        raise ValueError(f"source must be 'target' or 'surrogate', got source={source!r}")
    combos = combinations(run)
    if combos.empty:
        return {}
    combos = combos[combos["main"] == main].set_index("combo")
    if source == "target":
        values = combos["target"]
    else:
        sv, _, _ = surrogate_values(run, [get_surrogate("surrogate_vuln")])
        values = sv["surrogate_vuln"].reindex(combos.index)
    c = pd.DataFrame({"tasks": combos["tasks"], "v": values}).dropna()
    return {k: float(v) for k, v in c.groupby("tasks")["v"].min().items()}


def enable_chain(
    values: Mapping[str, float], main: str, full: str, *, order: str = "least"
) -> pd.DataFrame:
    """A chain across separately trained models: the main task's value as tasks are added.

    Starts at ``main`` alone and adds one task of ``full`` (with or without the main task) per
    step, among those whose enlarged
    set has a value in ``values`` (keyed by canonical task sets): ``order="least"`` adds the task
    giving the lowest next value (the most robust path), ``"most"`` the highest, ``"given"`` the
    next task in the order written in ``full``. Stops when no next set has a value.

    This is *not* Definition 3 (the paper's marginal vulnerability attacks one model's growing
    task sets and measures the joint loss: :mod:`rts.attacks.chain`): each step here is another
    model, and the value is the main task's relative vulnerability (supplement Figures 12-13).

    Returns:
        Columns ``step`` (0 = main alone), ``tasks``, ``added`` (``""`` at step 0), ``value``,
        ``effect`` (the effect of adding the task on the main task's value: value minus the
        previous step's; NaN at step 0).
    """
    if order not in ("least", "most", "given"):
        raise ValueError(f"order must be 'least', 'most' or 'given', got order={order!r}")
    vals = {canonical_tasks(k): float(v) for k, v in values.items()}
    main = canonical_tasks(main)
    if len(main) != 1:
        raise ValueError(f"main must be one task key, got {main!r}")
    parse_tasks(full)  # validates the keys, keeps the written order
    current = main
    rows = [
        {
            "step": 0,
            "tasks": current,
            "added": "",
            "value": vals.get(current, math.nan),
            "effect": math.nan,
        }
    ]
    remaining = [k for k in full if k not in current]
    while remaining:
        options = [(k, canonical_tasks(current + k)) for k in remaining]
        options = [(k, s) for k, s in options if s in vals and not math.isnan(vals[s])]
        if not options:
            break
        if order == "given":
            k, nxt = options[0]
        else:
            pick = min if order == "least" else max
            k, nxt = pick(options, key=lambda o: (vals[o[1]], o[0]))
        prev = rows[-1]["value"]
        rows.append(
            {
                "step": len(rows),
                "tasks": nxt,
                "added": k,
                "value": vals[nxt],
                "effect": vals[nxt] - prev,
            }
        )
        current = nxt
        remaining.remove(k)
    return pd.DataFrame(rows)


def definition3_chains(run: RunData) -> list[tuple[str, pd.DataFrame]]:
    """The Definition-3 chains measured on this run's models: ``(label, table)`` pairs.

    Each is the table (:data:`rts.attacks.chain.CHAIN_COLUMNS`) that ``rts attack <checkpoint
    folder> --chain ...`` wrote beside a stage-2 checkpoint; the label names the folder.
    """
    if run.path is None:
        return []
    from rts.attacks.chain import CHAIN_FILE
    from rts.search.engine.paths import RunPaths

    found = sorted(RunPaths(Path(run.path)).checkpoints.glob(f"*/{CHAIN_FILE}"))
    return [(f.parent.name, pd.read_parquet(f)) for f in found]


def chain_candidate(run: RunData) -> tuple[str, str] | None:
    """``(checkpoint, tasks)`` of the finished stage-2 model with the most tasks (at least two),
    the model Definition 3 can be measured on; None without one."""
    t = run.trials
    if "checkpoint" not in t.columns:
        return None
    t = t[(t["stage"] == 2) & (t["status"] == FINISHED) & (t["tasks"].str.len() >= 2)]
    t = t[t["checkpoint"].fillna("").astype(str) != ""]
    if t.empty:
        return None
    row = t.loc[t["tasks"].str.len().idxmax()]
    return str(row["checkpoint"]), str(row["tasks"])


CELL_COLUMNS: tuple[str, ...] = (
    "main",
    "aux",
    "scheme",
    "attack",
    "value",
    "low",
    "high",
    "diff",
    "diff_low",
    "diff_high",
    "significant",
)


def main_aux_cells(
    studies: Mapping[str, RunData], *, statistic: str = "mean", seed: int = 0
) -> pd.DataFrame:
    """The cells of the paper's Tables 1-2 from a run of several main tasks (one study each).

    For every main task, its completed stage-2 models with at most one auxiliary task, under
    every attack their per-image errors were recorded for (``worst`` included): ``value`` is the
    main task's ``statistic`` with its 95 % bootstrap interval over the images (``low``,
    ``high``); ``diff`` the model minus the single-task model of the same main task, paired over
    the same images (``diff_low``, ``diff_high``; NaN for the single-task model itself or when
    the study has none), ``significant`` when that interval excludes 0. ``aux`` is ``""`` and
    ``scheme`` ``""`` for the single-task model (the diagonal of every scheme's table). Several
    models of one (main, aux, scheme) (searched weights): the lowest value, the best weights.
    Columns: :data:`CELL_COLUMNS`.
    """
    from rts.search.results.recommend import compare

    rows: list[pd.DataFrame] = []
    for main, run in studies.items():
        t = run.trials
        t = t[(t["stage"] == 2) & (t["status"] == FINISHED) & (t["main"] == main)]
        t = t[t["tasks"].str.len() <= 2]
        if t.empty or run.images.empty:
            continue
        aux = dict(zip(t["trial_id"], (k.replace(main, "") for k in t["tasks"]), strict=True))
        schemes = t["scheme"] if "scheme" in t.columns else t["weights"]
        scheme = dict(zip(t["trial_id"], schemes.astype(str), strict=True))
        base = next((tid for tid, a in aux.items() if not a), "")
        images = run.images[run.images["trial_id"].isin(list(aux))]
        for attack, group in images.groupby("attack", sort=False):
            frame = group.rename(columns={"trial_id": "key", "image": "unit"})
            comp = compare(frame, statistic, best=base, seed=seed)
            if comp is None:
                continue
            table = comp.table.assign(
                main=main,
                attack=str(attack),
                aux=[aux[k] for k in comp.table["key"]],
                scheme=[scheme[k] if aux[k] else "" for k in comp.table["key"]],
            )
            if comp.best != base or not base:
                table[["diff", "diff_low", "diff_high"]] = math.nan
            table.loc[table["aux"] == "", ["diff", "diff_low", "diff_high"]] = math.nan
            rows.append(table)
    if not rows:
        return pd.DataFrame(columns=list(CELL_COLUMNS))
    cells = pd.concat(rows, ignore_index=True)
    cells["significant"] = (cells["diff_low"] > 0) | (cells["diff_high"] < 0)
    cells = cells.sort_values("value", kind="stable")
    cells = cells.drop_duplicates(["main", "aux", "scheme", "attack"]).sort_index()
    return cells[list(CELL_COLUMNS)].reset_index(drop=True)
