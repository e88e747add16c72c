"""The report of a run of several main tasks: the paper's Tables 1-2 and links to each study.

One table per weighting scheme and attack: rows are the main tasks, columns the auxiliary
tasks, the diagonal the single-task model. A cell is the main task's vulnerability with its
95 % interval over the attacked images and, off the diagonal, its difference from the
single-task model (paired over the same images), in bold when that interval excludes 0.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from rts.search.analysis.paper import main_aux_cells
from rts.search.analysis.rundata import RunData
from rts.search.report.html import CSS, attack_title, md_to_html
from rts.search.report.text import fmt, text_table
from rts.tasks.io import atomic_write_text
from rts.tasks.registry import TASK_KEYS

LEGEND = (
    "Rows: main task (attacked and evaluated); columns: auxiliary task; diagonal: the "
    "single-task model. A cell: the main task's relative vulnerability (lower is more robust) "
    "with its simultaneous 95 % interval over the attacked images, and Δ, the model minus the "
    "single-task model paired over the same images, **in bold** when its simultaneous 95 % "
    "interval (family-wise error 5 % over the main task's models) excludes 0: below 0 more "
    "robust than the single-task model, above 0 less robust; otherwise tied (within the "
    "noise). Empty: the study did not train that pair in stage 2."
)


def cell_text(row: Mapping[str, float]) -> str:
    """``0.45 [0.41, 0.50]``, plus ``Δ -0.07 [-0.1, -0.03]`` off the diagonal (bold when
    significant)."""
    text = f"{fmt(row['value'], 2)} [{fmt(row['low'], 2)}, {fmt(row['high'], 2)}]"
    if math.isnan(row["diff"]):
        return text
    delta = f"Δ {row['diff']:+.2g} [{row['diff_low']:+.2g}, {row['diff_high']:+.2g}]"
    return f"{text}, " + (f"**{delta}**" if row["significant"] else delta)


def paper_tables(cells: pd.DataFrame, mains: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """``(caption, table)`` per weighting scheme and attack: rows ``mains``, columns every
    task present (registry order), cells :func:`cell_text` (``""`` where nothing was trained)."""
    out = []
    schemes = sorted(set(cells["scheme"]) - {""}, key=lambda s: (s != "uniform", s)) or [""]
    tasks = set(cells["main"]) | set(cells["aux"])
    columns = [k for k in TASK_KEYS if k in tasks]
    for scheme in schemes:
        for attack in dict.fromkeys(cells["attack"]):
            part = cells[(cells["attack"] == attack) & cells["scheme"].isin([scheme, ""])]
            table = pd.DataFrame("", index=pd.Index(mains, name="main"), columns=columns)
            for row in part.to_dict("records"):
                table.loc[row["main"], row["aux"] or row["main"]] = cell_text(row)
            weights = f"{scheme} weights" if scheme else "single-task models only"
            out.append((f"{attack_title(attack)}, {weights}", table))
    return out


def render_studies_markdown(
    name: str, tables: list[tuple[str, pd.DataFrame]], folders: Mapping[str, str]
) -> str:
    """``report.md``: Tables 1-2, then each study's report."""
    out = [f"# Robust task search: {name} ({len(folders)} main tasks)", ""]
    out += ["## Tables 1-2: main task x auxiliary task", "", LEGEND, ""]
    if not tables:
        out += ["No study has finished stage 2 with per-image errors yet.", ""]
    for caption, table in tables:
        out += [f"### {caption}", "", text_table(table.reset_index()), ""]
    out += ["## Studies", ""]
    out += [
        f"- main task {m}: [{f}/report/summary.md]({f}/report/summary.md)"
        for m, f in folders.items()
    ]
    return "\n".join(out) + "\n"


def render_studies_html(
    name: str, tables: list[tuple[str, pd.DataFrame]], folders: Mapping[str, str]
) -> str:
    """``report.html``: the same as :func:`render_studies_markdown`, self-contained."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>rts report: {html.escape(name)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Robust task search: {html.escape(name)} ({len(folders)} main tasks)</h1>",
        "<h2>Tables 1-2: main task x auxiliary task</h2>",
        f"<p>{md_to_html(LEGEND)}</p>",
    ]
    for caption, table in tables:
        parts.append(f"<h3>{html.escape(caption)}</h3>")
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in ["main", *table.columns])
        body = "".join(
            f"<tr><th>{html.escape(str(main))}</th>"
            + "".join(f"<td>{md_to_html(v)}</td>" for v in row)
            + "</tr>"
            for main, row in zip(table.index, table.to_numpy(), strict=True)
        )
        parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    parts.append("<h2>Studies</h2><ul>")
    parts += [
        f'<li>main task {html.escape(m)}: <a href="{html.escape(f)}/report/report.html">'
        f"{html.escape(f)}</a></li>"
        for m, f in folders.items()
    ]
    parts.append("</ul></body></html>")
    return "\n".join(parts)


def write_studies_report(
    studies: Mapping[str, RunData], out: str | Path, *, name: str, seed: int = 0
) -> dict[str, Path]:
    """Write ``report.md`` and ``report.html`` of a run of several main tasks under ``out``.

    Returns the written paths: ``{"html", "markdown"}``.
    """
    out = Path(out)
    first = next(iter(studies.values()), None)
    attack_cfg = first.config.get("attack", {}) if first is not None else {}
    statistic = attack_cfg.get("statistic", "mean") if isinstance(attack_cfg, Mapping) else "mean"
    cells = main_aux_cells(studies, statistic=statistic, seed=seed)
    tables = paper_tables(cells, list(studies)) if len(cells) else []
    folders = {m: run.path.name if run.path else m for m, run in studies.items()}
    md = atomic_write_text(out / "report.md", render_studies_markdown(name, tables, folders))
    page = atomic_write_text(out / "report.html", render_studies_html(name, tables, folders))
    return {"html": page, "markdown": md}
